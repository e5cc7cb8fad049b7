"""jacob_cov (Mellor et al., 2020 preprint of NASWOT): how decorrelated the input Jacobians of
different images are.  J_i = ∂(Σ f(x_i))/∂x_i; with C the correlation matrix of the J_i and
λ its eigenvalues, score = −Σ [log(λ + k) + 1/(λ + k)], k = 1e-5.  Source followed:
SamsungLabs/zero-cost-nas ``foresight/pruners/measures/jacob_cov.py`` (``eval_score``; BatchNorm
in train mode, ``bn=True``), the version NASLib's ``jacob_cov.py`` and VKDNW's table use.

Undefined (ProxyUndefined, NaN with the reason) when an image's Jacobian is constant: its
correlation with the others is 0/0.  That happens when the output does not depend on the input
(a NAS-Bench-201 cell with no path from input to output, e.g. NATS-tss 1234) or on the image
(torchvision's ViT, whose classifier head is initialised to zero).  Before, these raised
``torch.linalg.LinAlgError`` from the eigendecomposition of a NaN matrix.

The Jacobians are memoised per context (:func:`input_jacobians`), so EPE-NAS, which reads the
same ones, costs no second backward when both are scored."""
from __future__ import annotations

import torch

from ..context import ProxyContext
from ..registry import ProxyUndefined, register_proxy
from ..surgery import Recipe


def input_jacobians(ctx: ProxyContext, *, train: bool = True) -> tuple[torch.Tensor, int]:
    """(J as an (N, D) float64 matrix, number of network outputs), memoised per context."""
    def compute():
        x, _ = ctx.data(min_batch=2)
        net = ctx.prepared(Recipe(train=train), shared=False)
        x = x.detach().clone().requires_grad_(True)
        out = ctx.forward(net, x)
        out.sum().backward()
        jac = x.grad if x.grad is not None else torch.zeros_like(x)
        return jac.reshape(x.shape[0], -1).to(torch.float64), int(out.shape[-1])
    return ctx.memo(("input-jacobians", train), compute)


@register_proxy("jacob_cov", needs_data=True,
                description="jacob_cov: eigen-spectrum of the correlation of input Jacobians "
                            "(Mellor et al. 2020)")
def jacob_cov(ctx: ProxyContext, *, k: float = 1e-5) -> float:
    jac, _ = input_jacobians(ctx)
    constant = int((jac == jac[:, :1]).all(dim=1).sum())
    if constant:
        raise ProxyUndefined(
            f"the input Jacobian of {constant} of {jac.shape[0]} images is constant (zero when "
            "the output does not depend on the input), so its correlation with the others is 0/0")
    corr = torch.corrcoef(jac)
    eig = torch.linalg.eigvalsh(corr)
    return float(-(torch.log(eig + k) + 1.0 / (eig + k)).sum())
