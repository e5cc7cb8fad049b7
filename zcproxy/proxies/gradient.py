"""Gradient-of-loss proxies from the zero-cost-NAS literature (Abdelfattah et al., ICLR 2021).

Both take one cross-entropy backward pass on a real labelled batch, in train mode as the
reference code does: grad_norm = Σ over layers of ‖∂L/∂W‖₂; SNIP (Lee et al., 2019) =
Σ|W ⊙ ∂L/∂W| over conv and linear weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..context import ProxyContext
from ..registry import register_proxy
from ..surgery import Recipe, weight_modules


def _loss_grads(ctx: ProxyContext) -> list[tuple[torch.Tensor, torch.Tensor]]:
    def compute():
        x, y = ctx.data(need_targets=True)
        net = ctx.prepared(Recipe(train=True), shared=False)
        F.cross_entropy(ctx.forward(net, x), y).backward()
        return [(m.weight.detach(), m.weight.grad.detach())
                for m in weight_modules(net) if m.weight.grad is not None]
    return ctx.memo("loss-grads", compute)


@register_proxy("grad_norm", needs_data=True,
                description="grad_norm: Σ per-layer L2 norm of the loss gradient "
                            "(Abdelfattah et al. 2021)")
def grad_norm(ctx: ProxyContext) -> float:
    return float(sum(g.norm() for _, g in _loss_grads(ctx)))


@register_proxy("snip", needs_data=True,
                description="SNIP: Σ|θ·∂L/∂θ| on a labelled batch (Lee et al. 2019)")
def snip(ctx: ProxyContext) -> float:
    return float(sum((w * g).abs().sum() for w, g in _loss_grads(ctx)))
