"""Scoring ESFormer candidates with the zero-cost proxies, each (architecture, proxy) once.

Decisions:

* Layer scale: EfficientFormerV2 starts every residual branch's layer scale at 1e-5.  Proxies
  look at the network at initialisation, where 1e-5 makes every branch nearly invisible (the
  Entropic Score's re-initialisation calls ``reset_parameters``, which puts the scale back at
  1e-5; LogSynflow's gradients into a branch are scaled by 1e-5 too).  Measured on 8 random
  S0 networks at 64 px, LogSynflow's Kendall tau with the parameter count is 0.43 with layer
  scale and 0.79 without.  So candidates are scored with ``layer_scale_init=None`` by default,
  while the trained network (and the budget) keep layer scale.
* Resolution: the paper's 224 by default; 128 trades fidelity for 1.3x (ES) to 1.5x
  (LogSynflow) more candidates per minute on a CPU, where much of a candidate's cost is
  per-layer overhead (building, copying, re-initialising) rather than arithmetic.  Parameter
  budgets are always counted at 224 (see ``cost.py``).
* One model per candidate: when a candidate needs both proxies, it is built once (on the
  scoring device) and both share :func:`zcproxy.score_many`'s prepared copies.
* A seed derived from the candidate itself (a hash of its JSON and the run seed), for the
  network's initial weights (LogSynflow scores the weights it is built with) as for the
  proxies' noise input and re-initialisations: a score is a function of the architecture
  alone, whatever was scored before it.  Not one seed shared by every candidate: with common
  random numbers, networks of different widths share a prefix of the same weights, an
  artefact that on NATS-sss moved the Entropic Score's τ from ≈0 to -0.41.
* Which Entropic Score: the search asks for the *role* ``"entropic"`` (the topology guide)
  and ``es_proxy`` names the registered reading that fills it: ``entropic`` (signed weights,
  the default since issue 17) or e.g. ``entropic_abs`` (|weights|, the reading of every
  search committed before that).  Logs keep the role's name, so every tool that reads a log
  works for either reading; the reading itself is in the log's configuration (a log written
  before that setting existed used |weights| and resumes only with ``entropic_abs``).
"""
from __future__ import annotations

import hashlib
import math
import time
from typing import Callable, Mapping, Protocol, Sequence

import torch

from ..api import score_many
from ..esformer.model import build_model
from ..esformer.space import Architecture

ENTROPIC = "entropic"
LOGSYNFLOW = "logsynflow"
PROXIES = (ENTROPIC, LOGSYNFLOW)


def check_es_proxy(name: str) -> str:
    """``name`` if it is a registered reading of the Entropic Score, else a ValueError."""
    from ..proxies.entropic import VARIANTS
    if name not in VARIANTS:
        raise ValueError(f"es_proxy={name!r} is not a reading of the Entropic Score; choose one "
                         f"of {sorted(VARIANTS)}")
    return name


class ScoreFn(Protocol):
    """Anything that scores an architecture with some proxies: the real :class:`ProxyScorer`,
    or a cheap stand-in in tests.  Must be deterministic for resumed runs to match."""

    def __call__(self, arch: Architecture, proxies: Sequence[str]) -> Mapping[str, float]: ...


class ProxyScorer:
    """Builds the candidate's network at ``resolution`` and scores it with ``score_many``."""

    def __init__(self, resolution: int = 224, device: torch.device | str = "cpu",
                 layer_scale_init: float | None = None, seed: int = 0, num_classes: int = 1000,
                 es_proxy: str = ENTROPIC):
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0 \
                or resolution % 32:
            raise ValueError(f"resolution={resolution!r} must be a positive multiple of 32 "
                             "(e.g. 64, 96, 128, 224)")
        self.resolution, self.device = resolution, torch.device(device)
        self.layer_scale_init, self.seed, self.num_classes = layer_scale_init, seed, num_classes
        self.es_proxy = check_es_proxy(es_proxy)

    def __call__(self, arch: Architecture, proxies: Sequence[str]) -> dict[str, float]:
        unknown = set(proxies) - set(PROXIES)
        if unknown:
            raise ValueError(f"the search scores with {PROXIES}, not {sorted(unknown)}")
        # LogSynflow reads the weights the model is built with: they must be a function of
        # (architecture, seed) alone, not of the global RNG's history, or the same candidate
        # would score differently depending on what was scored before it (and a resumed run,
        # which rescores nothing, would drift from an uninterrupted one).
        model, seed = self.network(arch)
        r = self.resolution
        registered = {p: self.es_proxy if p == ENTROPIC else p for p in proxies}
        scores = score_many(model, list(registered.values()), input_shape=(3, r, r),
                            device=self.device, seed=seed, nonfinite="nan")
        return {role: scores[name] for role, name in registered.items()}

    def network(self, arch: Architecture) -> tuple[torch.nn.Module, int]:
        """The candidate's network as the proxies see it, and its seed."""
        seed = self.candidate_seed(arch)
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            model = build_model(arch, num_classes=self.num_classes, img_size=self.resolution,
                                device=self.device, layer_scale_init=self.layer_scale_init)
        return model, seed

    def candidate_seed(self, arch: Architecture) -> int:
        """A seed that is a function of (architecture, run seed) only."""
        digest = hashlib.sha256(f"{self.seed}:{arch.to_json()}".encode()).digest()
        return int.from_bytes(digest[:7], "little")


class CachedScorer:
    """Never scores an (architecture, proxy) pair twice.  The cache can be pre-filled from a
    log, so a resumed run does not recompute what an earlier run already measured."""

    def __init__(self, score_fn: ScoreFn | Callable[[Architecture, Sequence[str]], Mapping[str, float]]):
        self.score_fn = score_fn
        self.cache: dict[tuple[str, str], float] = {}

    def remember(self, key: str, scores: Mapping[str, float | None]) -> None:
        for proxy, value in scores.items():
            self.cache[(key, proxy)] = math.nan if value is None else float(value)

    def score(self, arch: Architecture, key: str, proxies: Sequence[str]
              ) -> tuple[dict[str, float], float, bool]:
        """(scores, seconds spent, whether everything came from the cache)."""
        missing = [p for p in proxies if (key, p) not in self.cache]
        seconds = 0.0
        if missing:
            start = time.perf_counter()
            fresh = self.score_fn(arch, missing)
            seconds = time.perf_counter() - start
            absent = set(missing) - set(fresh)
            if absent:
                raise ValueError(f"the scorer returned no score for {sorted(absent)}")
            self.remember(key, {p: fresh[p] for p in missing})
        return {p: self.cache[(key, p)] for p in proxies}, seconds, not missing
