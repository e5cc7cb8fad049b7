"""Which network to train: an ESFormer architecture from a JSON file or a named baseline, built
with stochastic depth.

``zcproxy.esformer.build_model`` has no drop-path argument, so stochastic depth is added here by
forward hooks on each residual branch's layer-scale module (``ls``): a hook's return value
replaces the module's output, so ``x + ls(branch(x))`` becomes ``x + drop_path(ls(branch(x)))``,
exactly where EfficientFormerV2 puts it.  Hooks leave the state dict untouched, so checkpoints
of a model trained with drop path load into a plain ``build_model`` network.  The rate grows
linearly with block depth, from 0 at the first block to ``rate`` at the last (EfficientFormerV2's
schedule); both residual branches of an attention block share their block's rate.  ResNet
bottleneck blocks (extended space) have no layer scale and are left without drop path.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn
from timm.layers import drop_path as _drop_path

from ..esformer import Architecture, build_model, efficientformer_v2
from ..esformer.model import ESFormer

_BASELINE = re.compile(r"^efficientformer_?v2_?(s[012])$", re.IGNORECASE)
BASELINES: tuple[str, ...] = ("efficientformerv2_s0", "efficientformerv2_s1", "efficientformerv2_s2")


def resolve_arch(spec: str) -> tuple[Architecture, str]:
    """(architecture, short name) from a baseline name or a JSON file.

    The file may hold the architecture record itself (``Architecture.to_json``) or an object with
    it under ``"arch"`` or ``"architecture"`` (e.g. a search result with its score beside it).
    """
    match = _BASELINE.match(spec.strip())
    if match:
        return efficientformer_v2(match.group(1).lower()), f"efficientformerv2_{match.group(1).lower()}"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"--arch {spec!r} is neither a baseline name {BASELINES} nor an existing JSON file "
            f"(looked for {path.resolve()})")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON file: {err}") from err
    if isinstance(record, dict):
        for key in ("arch", "architecture"):
            if isinstance(record.get(key), dict):
                record = record[key]
                break
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object holding an ESFormer architecture")
    try:
        arch = Architecture.from_dict(record)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return arch, path.stem if path.stem not in ("best", "arch") else f"{path.parent.name}_{path.stem}"


def arch_difference(a: dict, b: dict) -> str:
    """A short human description of the first difference between two architecture records."""
    if a.get("skeleton") != b.get("skeleton") or a.get("extended") != b.get("extended"):
        return (f"skeleton {a.get('skeleton')} (extended={a.get('extended')}) vs "
                f"{b.get('skeleton')} (extended={b.get('extended')})")
    for s, (sa, sb) in enumerate(zip(a.get("stages", []), b.get("stages", []))):
        for k, (ga, gb) in enumerate(zip(sa, sb)):
            for gene in sorted(set(ga) | set(gb)):
                if ga.get(gene) != gb.get(gene):
                    return f"stage {s + 1} block {k + 1} {gene}: {ga.get(gene)!r} vs {gb.get(gene)!r}"
    return "different number of blocks" if a != b else "identical"


def drop_path_rates(n_blocks: int, rate: float) -> list[float]:
    """EfficientFormerV2's linear stochastic-depth schedule over the blocks."""
    if n_blocks <= 0:
        return []
    return torch.linspace(0.0, rate, n_blocks).tolist()


def add_drop_path(model: ESFormer, rate: float) -> list[torch.utils.hooks.RemovableHandle]:
    """Attach stochastic depth to every residual branch of ``model`` (see the module docstring).

    Returns the hook handles (``handle.remove()`` takes drop path off again).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop path rate {rate!r} must be in [0, 1)")
    if rate == 0.0:
        return []
    blocks = [block for stage in model.stages for block in stage.blocks]
    handles = []
    for block, p in zip(blocks, drop_path_rates(len(blocks), rate)):
        if p == 0.0:
            continue
        for module in block.modules():
            if hasattr(module, "ls") and isinstance(module.ls, nn.Module):
                handles.append(module.ls.register_forward_hook(_make_hook(p)))
    return handles


def _make_hook(p: float):
    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
        return _drop_path(output, p, module.training)
    return hook


def build_training_model(arch: Architecture, num_classes: int, img_size: int, drop_path: float,
                         device: torch.device | str = "cpu") -> ESFormer:
    """The ESFormer network of ``arch`` with EfficientFormerV2's layer scale and drop path."""
    model = build_model(arch, num_classes=num_classes, img_size=img_size, device=device)
    add_drop_path(model, drop_path)
    return model
