"""jacob_cov (Mellor et al., 2020 preprint of NASWOT): how decorrelated the input Jacobians of
different images are.  J_i = ∂(Σ f(x_i))/∂x_i; with C the correlation matrix of the J_i and
λ its eigenvalues, score = −Σ [log(λ + k) + 1/(λ + k)], k = 1e-5.

Undefined (ProxyUndefined, NaN with the reason) when an image's Jacobian is constant: its
correlation with the others is 0/0.  That happens when the output does not depend on the input
(a NAS-Bench-201 cell with no path from input to output, e.g. NATS-tss 1234) or on the image
(torchvision's ViT, whose classifier head is initialised to zero).  Before, these raised
``torch.linalg.LinAlgError`` from the eigendecomposition of a NaN matrix."""
from __future__ import annotations

import torch

from ..context import ProxyContext
from ..registry import ProxyUndefined, register_proxy
from ..surgery import Recipe


@register_proxy("jacob_cov", needs_data=True,
                description="jacob_cov: eigen-spectrum of the correlation of input Jacobians "
                            "(Mellor et al. 2020)")
def jacob_cov(ctx: ProxyContext, *, k: float = 1e-5) -> float:
    x, _ = ctx.data(min_batch=2)
    net = ctx.prepared(Recipe(train=True), shared=False)
    x = x.detach().clone().requires_grad_(True)
    ctx.forward(net, x).sum().backward()
    jac = x.grad.reshape(x.shape[0], -1).to(torch.float64)
    constant = int((jac == jac[:, :1]).all(dim=1).sum())
    if constant:
        raise ProxyUndefined(
            f"the input Jacobian of {constant} of {jac.shape[0]} images is constant (zero when "
            "the output does not depend on the input), so its correlation with the others is 0/0")
    corr = torch.corrcoef(jac)
    eig = torch.linalg.eigvalsh(corr)
    return float(-(torch.log(eig + k) + 1.0 / (eig + k)).sum())
