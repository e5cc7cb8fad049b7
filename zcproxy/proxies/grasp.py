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

``split`` (NASLib's ``split_data``, default 1) is a memory option: the double backward keeps
the graph of a whole backward pass, which peaks at about 10 GB on a large NAS-Bench-101 cell
with the batch of 64, so ``split=k`` runs both passes on k consecutive chunks of the batch
(NASLib's boundaries ``i·N//k``) and holds one chunk's graph at a time.  The chunks' results
are averaged, weighted by their share of the batch:  g = Σ_k (n_k/N) ∂L_k/∂W and
Hg = Σ_k (n_k/N) ∂(g · ∂L_k/∂W)/∂W, so that on a network whose samples do not interact the
score equals ``split=1``'s up to rounding; with BatchNorm in train mode each chunk is
normalised with its own statistics, so the score changes (a journal records the option).  The
original code (alecwangcq/GraSP ``pruner/GraSP.py``, two halves of its batch) also
accumulates the first-pass gradient over the chunks; NASLib's loop resets it at every chunk
and keeps the last chunk's alone, which we do not follow.  NASLib
sums where we average, a constant factor k² that changes no ranking.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..context import ProxyContext
from ..registry import ProxyOptionError, ProxyUndefined, register_proxy
from ..surgery import Recipe, weight_modules
from .gradient import CONSTANT_OUTPUT, defined_loss_pass, outputs_identical, trainable_value


@register_proxy("grasp", needs_data=True, higher_is_better=True,
                description="GraSP: Σ −W·(H ∂L/∂W), the Hessian-gradient product "
                            "(Wang et al. 2020, NASLib's sign)")
def grasp(ctx: ProxyContext, *, train: bool = True, split: int = 1) -> float:
    x, y = ctx.data(need_targets=True)
    if isinstance(split, bool) or not isinstance(split, int) or not 1 <= split <= x.shape[0]:
        raise ProxyOptionError(f"grasp: split must be a whole number of chunks in "
                               f"1..{x.shape[0]} (the batch size), got {split!r}")
    net = ctx.prepared(Recipe(train=train), shared=False)
    if split == 1:
        first = defined_loss_pass(ctx, train=train).grads
        chunks = [(x, y, 1.0)]
    else:
        n = x.shape[0]
        chunks = [(x[a:b], y[a:b], (b - a) / n) for a, b in
                  ((i * n // split, (i + 1) * n // split) for i in range(split))]
        first = _chunked_gradients(ctx, net, chunks)
    pairs = [(m.weight, g) for m, g in zip(weight_modules(net), first)
             if g is not None and m.weight.requires_grad]
    if not pairs:
        raise ProxyUndefined("no conv/linear weight gets a loss gradient")
    weights = [w for w, _ in pairs]
    hg: list[torch.Tensor | None] = [None] * len(weights)
    for xc, yc, share in chunks:
        loss = F.cross_entropy(ctx.forward(net, xc), yc)
        grad_f = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
        z = sum((g * gf).sum() for (_, g), gf in zip(pairs, grad_f) if gf is not None)
        if not isinstance(z, torch.Tensor) or not z.requires_grad:
            continue  # this chunk's gradient does not depend on the weights: H·g = 0
        for i, h in enumerate(torch.autograd.grad(z, weights, allow_unused=True)):
            if h is not None:  # × 1.0 for the whole batch is exact
                hg[i] = h * share if hg[i] is None else hg[i] + h * share
    return float(sum(float((-w.detach() * h).sum()) for w, h in zip(weights, hg)
                     if h is not None))


def _chunked_gradients(ctx: ProxyContext, net: torch.nn.Module,
                       chunks: list[tuple[torch.Tensor, torch.Tensor, float]]
                       ) -> list[torch.Tensor | None]:
    """GraSP's first pass over chunks: Σ_k (n_k/N) ∂L_k/∂W per conv/linear weight (None where
    no chunk's loss reaches it); undefined if the network's output ignores its input."""
    modules = list(weight_modules(net))
    trainable = [i for i, m in enumerate(modules) if m.weight.requires_grad]
    total: list[torch.Tensor | None] = [None] * len(modules)
    outputs = []
    for xc, yc, share in chunks:
        out = ctx.forward(net, xc)
        outputs.append(out.detach())
        loss = trainable_value(F.cross_entropy(out, yc))
        grads = torch.autograd.grad(loss, [modules[i].weight for i in trainable],
                                    allow_unused=True) if trainable else ()
        for i, g in zip(trainable, grads):
            if g is not None:
                total[i] = g * share if total[i] is None else total[i] + g * share
    if outputs_identical(torch.cat(outputs)):
        raise ProxyUndefined(CONSTANT_OUTPUT)
    return total
