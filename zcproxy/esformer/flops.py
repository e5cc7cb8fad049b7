"""Parameter and MAC counts: the budgets the search constrains (3.5 / 6 / 12.5 M parameters).

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2), which counts
convolutions (grouped ones correctly), linear layers and the attention matmuls, and ignores
element-wise work (BN, activations, softmax, additions), as MAC tables in papers do.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .model import build_model
from .space import Architecture


def count_params(model: nn.Module) -> int:
    """Exact number of parameters (shared parameters once; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, img_size: int, device: torch.device | str | None = None) -> int:
    """Multiply-accumulates of one forward of a single ``img_size`` x ``img_size`` RGB image.

    Runs in eval mode without gradients (the model's mode is restored afterwards).  ``device``
    defaults to the device of the model's parameters; a model on ``"meta"`` is counted without
    any arithmetic.
    """
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else "cpu"
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, img_size, img_size, device=device)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


class Cost(NamedTuple):
    params: int
    macs: int


def arch_cost(arch: Architecture, img_size: int = 224, num_classes: int = 1000) -> Cost:
    """Parameters and MACs of an architecture, built on the meta device (no memory, no compute)
    so that a search can afford it for every candidate."""
    model = build_model(arch, num_classes=num_classes, img_size=img_size, device="meta")
    return Cost(count_params(model), count_macs(model, img_size))
