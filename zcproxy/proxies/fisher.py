"""Fisher (Turner et al., 2020; as a zero-cost proxy: Abdelfattah et al., 2021).

Follows automl/NASLib ``naslib/predictors/utils/pruners/measures/fisher.py`` as NASLib's
``find_measures`` scores it: BN kept and in train mode, one cross-entropy backward on the whole
real batch (``split_data=1``).  For every conv/linear layer with output z (bias included):

    g_nk = Σ over positions of z_nk · ∂L/∂z_nk        (sample n, output channel k)
    F_k  = ½ · mean_n g_nk²

NASLib prunes channels, so it broadcasts F_k to every weight of channel k before ``sum_arr``
adds everything up: the score is Σ_layers Σ_k F_k · |W[k]| with |W[k]| = the number of weights
of one output channel (c_in/groups · kernel area; in_features for a linear layer), counted as
the layer's weights divided by its output channels, so that a transposed convolution, whose
weight is laid out (c_in, c_out/groups, kernel), counts the same c_in/groups · kernel area
(NASLib counts only ``nn.Conv2d`` and ``nn.Linear``; zcproxy every convolution, see
:func:`zcproxy.surgery.weight_modules`).
``per_weight=False`` sums the F_k themselves instead.

Choices: the forward pass and the backward are the ones grad_norm/snip/plain already take
(:func:`zcproxy.proxies.gradient.loss_pass`), so scoring them together costs one backward.  A
layer applied several times adds F_k per application (NASLib's hook keeps only the last
application's activation and fails on the second).  For a linear layer on (N, ..., C) inputs
the channel is the last dimension and positions are the middle ones (NASLib sums over dims ≥ 2,
the same for the 2-D outputs it sees).  A network whose output does not depend on its input
is undefined (NaN, with the reason).
"""
from __future__ import annotations

from ..context import ProxyContext
from ..registry import register_proxy
from .gradient import defined_loss_pass


@register_proxy("fisher", needs_data=True, higher_is_better=True,
                description="fisher: Σ per-channel ½·mean_n(Σ z·∂L/∂z)², broadcast to the "
                            "channel's weights (NASLib / Abdelfattah et al. 2021)")
def fisher(ctx: ProxyContext, *, per_weight: bool = True, train: bool = True) -> float:
    p = defined_loss_pass(ctx, train=train)
    total = 0.0
    for w, f in zip(p.weights, p.fisher):
        if f is None:
            continue
        scale = w.numel() // f.numel() if per_weight else 1
        total += scale * float(f.abs().sum())
    return total
