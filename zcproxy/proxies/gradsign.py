"""GradSign (Zhang & Jia, ICLR 2022): how much the per-sample loss gradients agree in sign.

Follows cmu-catalyst/GradSign ``zero-cost-nas-code/foresight/pruners/measures/grad_conflict.py``
(``get_grad_conflict``; the same function is in ``naswot-code/gradsign.py``):

    g_i = ∂ℓ(f(x_i), y_i)/∂W, one forward/backward per image (batch of 1), cross-entropy
    score = Σ over every conv/linear weight of |Σ_i sign(g_i)|

with sign(0) = 0 (weights without a gradient contribute 0) and weights whose gradient is NaN
for some image left out (the reference's ``np.nansum``).  The reference scores networks in
their default train mode, so BatchNorm normalises each image by its own statistics (``train``
is the option); its NAS-Bench-201 runs use batches of 128 (``201_results_batch_128``); this
uses the whole batch it is given (the runner's default is 64), and the score grows with it.

Choices: only weights that require grad are scored.  A network whose output is the same for
every image (it does not depend on the input) is undefined (NaN, with the reason).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..context import ProxyContext
from ..registry import ProxyUndefined, register_proxy
from ..surgery import Recipe, weight_modules
from .gradient import CONSTANT_OUTPUT


@register_proxy("gradsign", needs_data=True, higher_is_better=True,
                description="GradSign: Σ over weights of |Σ_i sign(∂ℓ_i/∂W)|, per-sample "
                            "gradients (Zhang & Jia 2022)")
def gradsign(ctx: ProxyContext, *, train: bool = True) -> float:
    x, y = ctx.data(min_batch=2, need_targets=True)
    net = ctx.prepared(Recipe(train=train), shared=False)
    weights = [m.weight for m in weight_modules(net) if m.weight.requires_grad]
    if not weights:
        raise ProxyUndefined("no conv/linear weight requires grad")
    votes = [torch.zeros(w.shape, dtype=torch.int32, device=w.device) for w in weights]
    bad = [torch.zeros(w.shape, dtype=torch.bool, device=w.device) for w in weights]
    first, constant = None, True
    for i in range(x.shape[0]):
        out = ctx.forward(net, x[i:i + 1])
        if first is None:
            first = out.detach()
        elif constant and not torch.equal(out.detach(), first):
            constant = False
        grads = torch.autograd.grad(F.cross_entropy(out, y[i:i + 1]), weights,
                                    allow_unused=True)
        for vote, nan, g in zip(votes, bad, grads):
            if g is not None:
                vote += torch.sign(g).to(torch.int32)  # sign(NaN) is NaN: cast, then masked
                nan |= torch.isnan(g)
    if constant:
        raise ProxyUndefined(CONSTANT_OUTPUT)
    return float(sum(int(v.abs().masked_fill(nan, 0).sum()) for v, nan in zip(votes, bad)))
