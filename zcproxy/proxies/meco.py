"""MeCo (Jiang et al., "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum
Eigenvalue of Correlation", NeurIPS 2023): channels whose feature maps are decorrelated.

Recipe (HamsterMimi/MeCo, ``correlation/NAS_Bench_201.py`` ``get_score``, run with its default
``--batch_size 1``: one real CIFAR image, the network as built, in train mode): a forward hook
on *every* module (``named_modules()``, containers and the model itself included, so a tensor
that is the output of nested modules counts once per module) takes the first sample's output
of shape (C, ...), flattens it to C rows, and computes the C x C Pearson correlation matrix of
the rows; NaN and inf entries (constant channels) are set to 0; the module contributes the
smallest eigenvalue.  The score is the sum over modules, skipping NaN/inf contributions.

Choices: the input is the first ``batch_size`` (default 1, the official setting) images of the
caller's real batch.  Outputs that are not tensors (a NATS network's (features, logits)) or have
fewer than 2 dimensions are skipped (the official code would fail on them; for networks that
return logits it counts the logits, whose correlation is all NaN and contributes 0).  The
eigenvalues are computed in float64 with ``eigvalsh`` (the matrix is symmetric; the official
code uses float32 ``eig``), so the near-zero eigenvalues of rank-deficient matrices (C larger
than the number of positions) are 0 to 1e-15 instead of 1e-7.

``train=False`` runs the network in eval mode (running statistics) instead of the official
train mode; with one image, train-mode BatchNorm normalises each map over its own positions.

MeCo_opt (``--measure meco_opt`` in the same file): ``channels=8`` picks 8 random channels per
module (seeded by the context's seed) and scales the minimum eigenvalue by C/8; modules with
fewer than ``channels`` channels use all of them, unscaled (the official code would fail).

On a NAS-Bench-201 cell whose output does not depend on the input, the maps after it are 0:
their correlation is all NaN -> 0 and they contribute 0, so MeCo stays finite (the official
code's value), it does not become undefined.
"""
from __future__ import annotations

import math

import torch

from ..context import ProxyContext
from ..registry import register_proxy
from ..surgery import Recipe


def min_correlation_eigenvalue(rows: torch.Tensor) -> float:
    """Smallest eigenvalue of the Pearson correlation of ``rows`` (NaN/inf entries -> 0)."""
    if rows.shape[1] < 2:  # one value per row: every correlation is NaN -> 0
        return 0.0
    corr = torch.corrcoef(rows.to(torch.float64))
    if corr.dim() == 0:  # one row: a 1 x 1 matrix
        corr = corr.reshape(1, 1)
    corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
    return float(torch.linalg.eigvalsh(corr)[0])


def meco_layers(ctx: ProxyContext, *, batch_size: int = 1, channels: int | None = None,
                train: bool = True) -> list[tuple[str, float]]:
    """(module name, its contribution) for every module call, in call order."""
    x, _ = ctx.data(min_batch=batch_size)
    x = x[:batch_size]
    net = ctx.prepared(Recipe(train=train))
    gen = torch.Generator().manual_seed(ctx.seed)
    out: list[tuple[str, float]] = []

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() < 2:
                return
            rows = output[0].detach().reshape(output.shape[1], -1)
            n = rows.shape[0]
            scale = 1.0
            if channels is not None and n > channels:
                pick = torch.randperm(n, generator=gen)[:channels].sort().values
                rows, scale = rows[pick.to(rows.device)], n / channels
            out.append((name, scale * min_correlation_eigenvalue(rows)))
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in net.named_modules()]
    try:
        with torch.no_grad():
            ctx.forward(net, x)
    finally:
        for h in handles:
            h.remove()
    return out


@register_proxy("meco", needs_data=True, higher_is_better=True,
                description="MeCo: Σ over modules of the minimum eigenvalue of the channel "
                            "correlation of one image's feature maps (Jiang et al. 2023)")
def meco(ctx: ProxyContext, *, batch_size: int = 1, channels: int | None = None,
         train: bool = True) -> float:
    layers = meco_layers(ctx, batch_size=batch_size, channels=channels, train=train)
    return sum(v for _, v in layers if math.isfinite(v))

