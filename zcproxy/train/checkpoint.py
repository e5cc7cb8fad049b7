"""Checkpoints: atomic writes, safe loading, and refusal to resume a different experiment.

A checkpoint is written to a temporary file in the same folder, flushed to disk and renamed over
the old one, so a crash at any moment leaves either the previous or the new checkpoint, never a
torn file.  Loading uses ``torch.load(weights_only=True)`` (no arbitrary code from a pickle), so
everything saved is tensors and plain Python values; numpy's RNG state is stored as a tensor.

Resuming checks that the checkpoint belongs to the same experiment (architecture, preset, every
recipe value, seed, number of classes) and names the file and each mismatch otherwise.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..atomic import atomic_write
from .arch import arch_difference

FORMAT = "zcproxy.train/1"
REQUIRED = ("format", "arch", "preset", "recipe", "seed", "num_classes", "epoch", "model")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that belongs to another experiment."""


# ---- RNG state ----------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """This process's Python, numpy, torch (and CUDA) generator states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    """random.setstate needs tuples all the way down; a round trip may give lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


# ---- files --------------------------------------------------------------------------------------
def save_atomic(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` via a temporary file and a rename (see module docstring)."""
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        torch.save(dict(state), fh)
    return path


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint onto the CPU; any unreadable or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a truncated/corrupt zip or pickle
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch checkpoint: "
                              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                              ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a training checkpoint")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a zcproxy training checkpoint "
                              f"(missing {missing})")
    if state["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']!r}; this version "
                              f"reads {FORMAT!r}")
    return state


def mismatches(state: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Every difference between a checkpoint's experiment and ``expected`` (same keys as saved:
    any of ``arch``, ``preset``, ``recipe``, ``seed``, ``num_classes``)."""
    out = []
    for key, want in expected.items():
        have = state.get(key)
        if key == "arch":
            if have != want:
                out.append(f"architecture: {arch_difference(have or {}, want)} "
                           "(checkpoint vs this run)")
        elif key == "recipe":
            for field in sorted(set(have or {}) | set(want)):
                a, b = (have or {}).get(field), want.get(field)
                if a != b:
                    out.append(f"recipe {field}: checkpoint {a!r}, this run {b!r}")
        elif have != want:
            out.append(f"{key}: checkpoint {have!r}, this run {want!r}")
    return out


def check_compatible(state: Mapping[str, Any], path: str | os.PathLike,
                     expected: Mapping[str, Any]) -> None:
    problems = mismatches(state, expected)
    if problems:
        raise CheckpointError(f"checkpoint {path} belongs to another experiment:\n  "
                              + "\n  ".join(problems)
                              + "\nresume with the same --arch/--preset/flags, or start a new --output")
