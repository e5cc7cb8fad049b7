"""l2_norm (NAS-Bench-Suite-Zero's weight-norm baseline).

Follows automl/NASLib ``naslib/predictors/utils/pruners/measures/l2_norm.py`` with NASLib's
``sum_arr``: Σ over conv and linear layers of ‖W‖ (the Frobenius norm of each weight tensor),
read from the network as given (NASLib does not copy it: ``copy_net=False``).  It runs no
forward pass and looks at no data, so it stays defined (and finite) on networks whose output
does not depend on the input.
"""
from __future__ import annotations

from ..context import ProxyContext
from ..registry import register_proxy
from ..surgery import weight_modules


@register_proxy("l2_norm", needs_forward=False, higher_is_better=True,
                description="l2_norm: Σ per-layer Frobenius norm of conv/linear weights "
                            "(NAS-Bench-Suite-Zero)")
def l2_norm(ctx: ProxyContext) -> float:
    return float(sum(float(m.weight.detach().norm()) for m in weight_modules(ctx.model)))
