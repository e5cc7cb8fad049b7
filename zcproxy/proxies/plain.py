"""plain (Mozer & Smolensky, 1989; as a zero-cost proxy: Abdelfattah et al., 2021).

Follows automl/NASLib ``naslib/predictors/utils/pruners/measures/plain.py`` as NASLib's
``find_measures`` scores it: BN kept and in train mode, one cross-entropy backward on the whole
real batch, score = Σ over conv/linear weights of W ⊙ ∂L/∂W (signed: SNIP is its absolute
value).  It reuses the backward of grad_norm and snip
(:func:`zcproxy.proxies.gradient.loss_pass`).  A network whose output does not depend on its
input is undefined (NaN, with the reason).
"""
from __future__ import annotations

from ..context import ProxyContext
from ..registry import register_proxy
from .gradient import defined_loss_pass


@register_proxy("plain", needs_data=True, higher_is_better=True,
                description="plain: Σ W·∂L/∂W on a labelled batch (NASLib / Abdelfattah et al. "
                            "2021)")
def plain(ctx: ProxyContext, *, train: bool = True) -> float:
    p = defined_loss_pass(ctx, train=train)
    return float(sum(float((w * g).sum()) for w, g in zip(p.weights, p.grads) if g is not None))
