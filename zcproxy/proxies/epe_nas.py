"""EPE-NAS (Lopes et al., 2021): how differently a network's input Jacobians correlate within
each class.

Follows automl/NASLib ``naslib/predictors/utils/pruners/measures/epe_nas.py`` (taken there from
VascoLopes/EPE-NAS ``search.py``), BN kept, train mode, the whole real batch:

    J_i  = ∂(Σ_outputs f(x_i))/∂x_i, flattened                    (as jacob_cov's)
    s_c  = Σ over the correlation matrix C_c of class c's J_i of log(|C_c| + k),  k = 1e-5
    score = Σ_c |s_c|                                      if the network has ≤ 100 outputs
    score = Σ_c Σ_c' |s_c − s_c'| / #classes, s_c /= n_c   otherwise (n_c: images of class c)

A class with one image has C_c = [1] (s_c = log(1 + k)); with > 100 outputs the reference skips
such classes (``len`` of NumPy's 0-d correlation raises inside its ``try``), and so does this.

Choices: the Jacobians come from :func:`zcproxy.proxies.jacob_cov.input_jacobians`, memoised
per context: jacob_cov's pass (train mode, ``Σ f`` backward), run once for both.  A constant Jacobian row (e.g. all
zero: the output does not depend on the input) makes a correlation 0/0; the reference returns
NaN there (NASLib's predictor then records −1e8), this raises ``ProxyUndefined`` (NaN) with the
reason.
"""
from __future__ import annotations

import torch

from ..context import ProxyContext
from ..registry import ProxyUndefined, register_proxy
from .jacob_cov import input_jacobians


def class_scores(jac: torch.Tensor, labels: torch.Tensor, n_outputs: int, k: float
                 ) -> dict[int, float]:
    """s_c for every class present (see the module docstring)."""
    scores = {}
    for c in torch.unique(labels).tolist():
        rows = jac[labels == c]
        if rows.shape[0] == 1 and n_outputs > 100:
            continue
        corr = torch.corrcoef(rows)  # one row: 1, or NaN if it is constant (as NumPy's)
        s = float(torch.log(corr.abs() + k).sum())
        scores[c] = s / rows.shape[0] if n_outputs > 100 else s
    return scores


@register_proxy("epe_nas", needs_data=True, higher_is_better=True,
                description="EPE-NAS: per-class correlation of input Jacobians (Lopes et al. "
                            "2021, NASLib)")
def epe_nas(ctx: ProxyContext, *, k: float = 1e-5, train: bool = True) -> float:
    _, y = ctx.data(min_batch=2, need_targets=True)
    jac, n_outputs = input_jacobians(ctx, train=train)
    labels = (y.argmax(1) if y.dim() == 2 else y).cpu()
    if not bool(jac.any()):
        raise ProxyUndefined("every input gradient is zero (the output does not depend on the "
                             "input): the Jacobian correlations are 0/0")
    scores = class_scores(jac.cpu(), labels, n_outputs, k)
    if any(s != s for s in scores.values()):
        raise ProxyUndefined("an image's input gradient is constant, so its correlation with the "
                             "others is 0/0")
    if n_outputs <= 100:
        return float(sum(abs(s) for s in scores.values()))
    if not scores:
        return 0.0
    values = list(scores.values())
    return sum(abs(a - b) for a in values for b in values) / len(values)
