"""Synflow (Tanaka et al., 2020) and LogSynflow (Cavagnero et al., FreeREA, 2022).

Both linearise the network (normalisation suppressed, |weights|, float64) and back-propagate
R = Σ f(1) from an all-ones input of batch 1.  Synflow = Σ|θ ⊙ ∂R/∂θ| over conv and linear
weights; LogSynflow = Σ|θ ⊙ log(1 + ∂R/∂θ)| tames the gradients, which grow exponentially with
depth and otherwise let the deepest/widest layers dominate.  The two share one backward pass.
"""
from __future__ import annotations

import torch

from ..context import ProxyContext
from ..registry import register_proxy
from ..surgery import Recipe, weight_modules


def _weights_and_grads(ctx: ProxyContext) -> list[tuple[torch.Tensor, torch.Tensor]]:
    def compute():
        net = ctx.prepared(Recipe(suppress_norm=True, absolute=True, dtype=torch.float64,
                                  train=False), shared=False)
        x = ctx.ones_input(torch.float64)
        ctx.forward(net, x).sum().backward()
        return [(m.weight.detach(), m.weight.grad.detach())
                for m in weight_modules(net) if m.weight.grad is not None]
    return ctx.memo("synflow-grads", compute)


@register_proxy("synflow", description="Synflow: Σ|θ·∂R/∂θ| of the linearised network "
                                       "(Tanaka et al. 2020)")
def synflow(ctx: ProxyContext) -> float:
    return float(sum((w * g).abs().sum() for w, g in _weights_and_grads(ctx)))


@register_proxy("logsynflow", description="LogSynflow: Σ|θ·log(1+∂R/∂θ)| of the linearised "
                                          "network (FreeREA, Cavagnero et al. 2022)")
def logsynflow(ctx: ProxyContext) -> float:
    return float(sum((w * torch.log1p(g)).abs().sum() for w, g in _weights_and_grads(ctx)))
