"""Structural baselines: what a proxy must beat to mean something (no forward pass)."""
from __future__ import annotations

from ..context import ProxyContext
from ..registry import register_proxy


@register_proxy("params", needs_forward=False,
                description="#params: number of trainable parameters (a size baseline)")
def num_params(ctx: ProxyContext) -> float:
    return float(sum(p.numel() for p in ctx.model.parameters() if p.requires_grad))
