"""ZiCo (Li et al., "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients",
ICLR 2023): layers whose loss gradients are large and consistent across batches train well.

Recipe (SLDGroup/ZiCo, ``ZeroShotProxy/compute_zico.py``; the NAS-Bench-201 setting is that of
cvlab-yonsei/AZ-NAS, ``NB201/ZeroShotProxy/compute_zico_score.py``, which scores each network
on two real batches of 64): in train mode (batch statistics), for each of ``batches`` batches
take the cross-entropy gradient g_b of every conv and linear weight.  Per weight θ, with the
population statistics over batches, r(θ) = mean_b |g_b(θ)| / std_b(g_b(θ)), summed over the
weights of the layer whose std is not 0; the score is Σ_layers log Σ_θ r(θ).  A layer whose sum
is 0 (no weight with varying gradient) is skipped, as in the official code.

Per-batch or accumulated gradients: the paper's formula uses per-batch gradients, and so does
the official code since its commit d7076d5 ("Update compute_zico.py", Feb 2023, which added
``network.zero_grad()`` inside the batch loop); the first release accumulated gradients over
the batches without zeroing, so its second "batch" was g_1 + g_2.  Default: per-batch
(``accumulate=False``); ``accumulate=True`` gives the first release's numbers.
``train=False`` scores in eval mode (running statistics) instead of the official train mode.

Batches: the real batch the caller passes is split into ``batches`` equal parts (the runner's
64 images give 2 x 32; pass 128 images for the official 2 x 64).  Weights are the model's own
(no re-initialisation), as in the official code, and the network is scored as given: ZiCo's
and ZenNAS's own searches build it with ``no_reslink=True`` (residual links removed), which
only their search spaces can do.  The statistics are computed in float64 (the official
``np.std`` in float32 gives a weight whose two gradients differ by one ulp a std of ulp/√2
instead of ulp/2, and its ratio ~1e7 can dominate its layer): on 66 full-size NATS-tss cells
the two differ by at most 0.049 and rank the cells identically (τ 1.0).

Undefined: if no layer contributes (every gradient is 0 or identical across batches, e.g. a
NAS-Bench-201 cell whose output does not depend on its input, so the loss depends on no
weight) the sum of logs is empty; the official code returns 0 there, zcproxy raises
ProxyUndefined with -inf (no signal at all is the worst ZiCo can be).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..context import ProxyContext
from ..registry import ProxyOptionError, ProxyUndefined, register_proxy
from ..surgery import Recipe, weight_modules
from .gradient import trainable_value


def zico_layer_terms(ctx: ProxyContext, *, batches: int = 2, accumulate: bool = False,
                     train: bool = True) -> list[tuple[str, float]]:
    """(layer name, Σ_θ mean|g|/std(g)) for each conv/linear layer with a non-zero sum."""
    if batches < 2:
        raise ProxyOptionError(f"ZiCo needs at least 2 batches (a std over batches), got {batches}")
    x, y = ctx.data(min_batch=batches, need_targets=True)
    net = ctx.prepared(Recipe(train=train), shared=False)
    weighted = set(weight_modules(net))
    layers = [(name, m) for name, m in net.named_modules() if m in weighted]
    grads: dict[str, list[torch.Tensor]] = {name: [] for name, _ in layers}
    for xb, yb in zip(torch.tensor_split(x, batches), torch.tensor_split(y, batches)):
        if not accumulate:
            net.zero_grad(set_to_none=True)
        trainable_value(F.cross_entropy(ctx.forward(net, xb), yb)).backward()
        for name, m in layers:
            if m.weight.grad is not None:
                grads[name].append(m.weight.grad.detach().reshape(-1).to(torch.float64).clone())
    terms = []
    for name, gs in grads.items():
        if len(gs) != batches:  # a layer the loss never reaches
            continue
        g = torch.stack(gs)
        std = g.std(dim=0, unbiased=False)
        keep = std > 0
        total = float((g.abs().mean(dim=0)[keep] / std[keep]).sum())
        if total > 0:
            terms.append((name, total))
    return terms


@register_proxy("zico", needs_data=True, higher_is_better=True,
                description="ZiCo: Σ_layers log Σ mean|g|/std(g) of loss gradients over batches "
                            "(Li et al. 2023)")
def zico(ctx: ProxyContext, *, batches: int = 2, accumulate: bool = False,
         train: bool = True) -> float:
    terms = zico_layer_terms(ctx, batches=batches, accumulate=accumulate, train=train)
    if not terms:
        raise ProxyUndefined("no conv/linear weight has a loss gradient that varies between "
                             "batches (the loss does not depend on the weights)", float("-inf"))
    return sum(math.log(t) for _, t in terms)
