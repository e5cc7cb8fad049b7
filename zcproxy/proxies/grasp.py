"""GraSP (Wang et al., ICLR 2020; as a zero-cost proxy: Abdelfattah et al., 2021).

Follows automl/NASLib ``naslib/predictors/utils/pruners/measures/grasp.py`` as NASLib's
``find_measures`` scores it (``T=1``, ``num_iters=1``, ``split_data=1``, BN kept, the network's
train mode, the whole real batch, cross-entropy):

    g  = ∂L/∂W                      (first pass, no graph)
    Hg = ∂(Σ g · ∂L/∂W)/∂W          (second pass with the graph: Hessian-gradient product)
    score = Σ over conv/linear weights of −W ⊙ Hg

W is every conv/linear weight (that requires grad); H is their Hessian block, other
parameters (BN) are constants, as in the reference.  The sign is NASLib's (it negated GraSP's
original saliency because accuracy correlated negatively with it), so higher is better.

Choices: the first pass is the backward grad_norm/snip/plain/fisher share
(:func:`zcproxy.proxies.gradient.loss_pass`), identical to GraSP's first pass; only the
double-backward pass is GraSP's own.  A network whose output does not depend on its input is
undefined (NaN, with the reason).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..context import ProxyContext
from ..registry import ProxyUndefined, register_proxy
from ..surgery import Recipe, weight_modules
from .gradient import defined_loss_pass


@register_proxy("grasp", needs_data=True, higher_is_better=True,
                description="GraSP: Σ −W·(H ∂L/∂W), the Hessian-gradient product "
                            "(Wang et al. 2020, NASLib's sign)")
def grasp(ctx: ProxyContext, *, train: bool = True) -> float:
    first = defined_loss_pass(ctx, train=train)
    x, y = ctx.data(need_targets=True)
    net = ctx.prepared(Recipe(train=train), shared=False)
    pairs = [(m.weight, g) for m, g in zip(weight_modules(net), first.grads)
             if g is not None and m.weight.requires_grad]
    if not pairs:
        raise ProxyUndefined("no conv/linear weight gets a loss gradient")
    weights = [w for w, _ in pairs]
    loss = F.cross_entropy(ctx.forward(net, x), y)
    grad_f = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    z = sum((g * gf).sum() for (_, g), gf in zip(pairs, grad_f) if gf is not None)
    if not isinstance(z, torch.Tensor) or not z.requires_grad:
        return 0.0  # the gradient does not depend on the weights: H·g = 0
    hg = torch.autograd.grad(z, weights, allow_unused=True)
    return float(sum(float((-w.detach() * h).sum()) for w, h in zip(weights, hg)
                     if h is not None))
