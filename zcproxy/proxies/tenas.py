"""TE-NAS's two indicators (Chen et al., "Neural Architecture Search on ImageNet in Four GPU
Hours: A Theoretically Inspired Perspective", ICLR 2021), each a proxy of its own.

TE-NAS ranks candidates by rank(NTK condition number) + rank(#linear regions): that
combination needs the population and belongs to ``zcproxy.ensemble``.

``tenas_ntk`` (VITA-Group/TENAS, ``lib/procedures/ntk.py`` ``get_ntk_n``, called from
``prune_tenas.py`` with ``train_mode=True, num_batch=1`` and, for NAS-Bench-201,
``prune_launch.py``'s batch of 72 real images): in train mode, for each sample i the gradient
of Σ_k logits[i, k] with respect to every parameter whose name contains "weight" (conv, linear
and BatchNorm scales), stacked into J (N x P); the NTK is Θ = J Jᵀ and the score its condition
number λ_max / λ_min.  Lower is better (``higher_is_better=False``).  Choices: the batch is the
caller's real batch (the runner's 64; ``batch_size`` takes the first n), the weights are the
model's own (the launch script asks for ``--init kaiming_normal``, but ``init_model`` only knows
"kaiming_norm_fanin/fanout", so the official networks keep PyTorch's default initialisation),
the per-sample gradients come from one backward per sample (as in TE-NAS; a batched
backward with ``is_grads_batched`` measured 3.5x slower on CPU) and Θ is computed in
float64.  Undefined: if λ_min <= N·eps32²·λ_max (a condition number above ~1.1e12 for
N = 64), e.g. when the output does not depend on the input; zcproxy raises ProxyUndefined with
+inf, the worst value of a lower-is-better score.  The limit is where float32 gradients stop
resolving λ_min at all: λ_min = σ_min(J)², and rounding J to float32 moves σ_min by at most
‖δJ‖₂ <= eps32·‖J‖_F <= √N·eps32·σ_max.  Measured on two NATS-tss cells (indices 5334 and 6226)
with a near-duplicate pair in the batch, Θ from the float32 network against the same network
in float64: condition numbers up to 1.7e11 agree to 7e-5, while 1.7e13 is off by 11 % and 1.5e15
by 81 % (the official float32 ``einsum`` is noisier).  Version 1 used Weyl's worst-case bound on
Θ, λ_min <= 2·√N·eps32·λ_max (~5.2e5 at N = 64), which called resolved values undefined; no
committed score lay between the two limits (the NATS-tss zoo's largest defined value is 4.9e5,
its 15 undefined cells have λ_max = 0), so version 2 carries version 1's rows over: every finite
one, and every undefined one whose recorded λ_max or λ_min was <= 0.

``tenas_lr`` (``lib/procedures/linear_region_counter.py``, with ``prune_tenas.py``'s
``Linear_Region_Collector(input_size=(1000, 1, 3, 3), sample_batch=3)``, repeated
``--repeat 3`` times): the number of distinct activation patterns over 3 batches of 1000
inputs, each a random 3x3 crop of one random channel of a real training image (``RandomCrop(3)``,
``RandChannel(1)``), forwarded in train mode through a *thin* copy of the network (1 channel
per layer, in TE-NAS a separate supernet with C=1, N=1 and no stem); the pattern of a sample is
the signs of every ReLU on a feature map.  Higher is better.  Choices: the crops come from the
caller's real batch (seeded by the context's seed); the thin copy is
``zcproxy.surgery.narrow_copy(model, width=1)`` of the given network, so unlike TE-NAS it keeps
the network's depth (N=5 cells per stage on NATS) and its stem, freshly initialised with the
default initialisers (as TE-NAS's are); "ReLU on a feature map" becomes every activation
module whose output has at least 3 dimensions, "active" means > 0; the score is the mean over
``repeats`` draws of crops (the thin weights stay the same, as in TE-NAS where the
re-initialisation is the same no-op).  At full width (``width=None``) the count saturates at the
number of distinct inputs (2924-2928 of 3000 crops on the four NAS-Bench-201 networks tried),
which is why TE-NAS counts on a thin network.  The count is >= 1, so it is defined on every network.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch

from ..context import ProxyContext
from ..registry import ProxyOptionError, ProxyUndefined, register_proxy
from ..surgery import Recipe, capture_activations, narrow_copy
from .swap import distinct_rows


def ntk_gram(ctx: ProxyContext, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Θ = J Jᵀ in float64, J the per-sample gradients of the summed logits (weights only).

    Each gradient is written straight into its row of a float64 J (a float32 value converts
    exactly), so J is held once: 8·N·P bytes, where stacking float32 rows and converting the
    stack held 16·N·P at its peak (12.6 GB for a 49 M-parameter NB101 cell at N = 16).  The
    product is the same matrix multiplication on the same matrix, so Θ is bit-identical.
    Weights no output reaches (``allow_unused``: the same for every sample, as all come from
    one forward) get no column, as before.
    """
    params = [p for name, p in net.named_parameters() if "weight" in name and p.requires_grad]
    if not params:
        raise ValueError("tenas_ntk: the model has no trainable weights")
    s = ctx.forward(net, x).sum(dim=1)
    n = s.shape[0]
    j = sizes = None
    for i in range(n):  # one backward per sample, as TE-NAS does (batch norm couples samples)
        grads = torch.autograd.grad(s[i], params, retain_graph=i < n - 1, allow_unused=True)
        if j is None:  # the first sample shows which weights the output reaches
            params = [p for p, g in zip(params, grads) if g is not None]
            grads = [g for g in grads if g is not None]
            sizes = [p.numel() for p in params]
            if not sizes:
                raise ValueError("tenas_ntk: no weight reaches the output")
            j = torch.empty((n, sum(sizes)), dtype=torch.float64, device=s.device)
        for block, g in zip(j[i].split(sizes), grads):
            block.copy_(g.reshape(-1))
        del grads
    return j @ j.T


def _unchanged_since_version_1(score: float, error: str) -> bool:
    """Whether a version-1 journal row is what version 2 gives: version 2 only calls fewer
    kernels singular, so a finite score stands, and so does an undefined one whose recorded
    eigenvalues are singular under any limit (λ_max or λ_min <= 0)."""
    if math.isfinite(score):
        return True
    found = re.search(r"eigenvalues (\S+) \.\. (\S+)\)", error)
    if not found:
        return False
    lo, hi = (float(v) for v in found.groups())
    return not hi > 0 or not lo > 0


@register_proxy("tenas_ntk", needs_data=True, higher_is_better=False, version="2",
                carries_over={"1": _unchanged_since_version_1},
                description="TE-NAS: condition number of the NTK on a real batch, lower is better "
                            "(Chen et al. 2021)")
def tenas_ntk(ctx: ProxyContext, *, batch_size: int | None = None, train: bool = True) -> float:
    x, _ = ctx.data(min_batch=2)
    if batch_size is not None:
        if batch_size < 2 or batch_size > x.shape[0]:
            raise ProxyOptionError(f"batch_size must be in 2..{x.shape[0]}, got {batch_size}")
        x = x[:batch_size]
    net = ctx.prepared(Recipe(train=train), shared=False)
    eig = torch.linalg.eigvalsh(ntk_gram(ctx, net, x))
    lo, hi = float(eig[0]), float(eig[-1])
    # float32 gradients resolve σ_min(J) only above ‖δJ‖₂ <= √N·eps32·σ_max (module docstring)
    tol = x.shape[0] * torch.finfo(torch.float32).eps ** 2 * hi
    if not hi > 0 or not lo > tol:
        raise ProxyUndefined(f"the NTK is singular (eigenvalues {lo:.3g} .. {hi:.3g}): the "
                             "per-sample gradients are linearly dependent", float("inf"))
    return hi / lo


def random_crops(x: torch.Tensor, count: int, crop: int, channels: int | None,
                 gen: torch.Generator) -> torch.Tensor:
    """``count`` random crop x crop patches of random images (and random channels) of x."""
    n, c, h, w = x.shape
    if crop > h or crop > w:
        raise ProxyOptionError(f"crop {crop} is larger than the images ({h}x{w})")
    img = torch.randint(0, n, (count,), generator=gen)
    top = torch.randint(0, h - crop + 1, (count,), generator=gen)
    left = torch.randint(0, w - crop + 1, (count,), generator=gen)
    rows = (top[:, None] + torch.arange(crop))[:, :, None]
    cols = (left[:, None] + torch.arange(crop))[:, None, :]
    patches = x.cpu()[img[:, None, None, None], torch.arange(c)[None, :, None, None],
                      rows[:, None], cols[:, None]]  # (count, c, crop, crop)
    if channels is not None and channels < c:
        pick = torch.rand((count, c), generator=gen).argsort(dim=1)[:, :channels].sort(1).values
        patches = torch.gather(patches, 1, pick[:, :, None, None].expand(-1, -1, crop, crop))
    return patches.to(x.device)


def _check_takes_crops(ctx: ProxyContext, net: torch.nn.Module, crops: torch.Tensor) -> None:
    """ValueError naming the crop size if the full-width network cannot take crops with all
    their channels either: then the crops are too small for it (unpadded convolutions, a
    fixed-size head), which is not what a failed narrowing says."""
    try:
        with torch.inference_mode():
            ctx.forward(net, crops)
    except (RuntimeError, ValueError) as err:
        size = "x".join(map(str, crops.shape[2:]))
        raise ValueError(f"tenas_lr feeds {size} crops (TE-NAS's input for counting regions) "
                         f"and {type(ctx.model).__name__} cannot take them at any width "
                         f"({err}); pass a larger crop (tenas_lr: crop=...)") from err


@register_proxy("tenas_lr", needs_data=True, higher_is_better=True,
                description="TE-NAS: number of linear regions (distinct ReLU patterns) of 3000 "
                            "3x3 crops on a 1-channel copy of the network (Chen et al. 2021)")
def tenas_lr(ctx: ProxyContext, *, samples: int = 1000, batches: int = 3, crop: int = 3,
             channels: int | None = 1, width: int | None = 1, repeats: int = 3,
             train: bool = True) -> float:
    x, _ = ctx.data(min_batch=1)
    if x.dim() != 4:
        raise ValueError(f"tenas_lr crops images: inputs must be (N, C, H, W), "
                         f"got {tuple(x.shape)}")
    gen = torch.Generator().manual_seed(ctx.seed)
    draws = [[random_crops(x, samples, crop, channels, gen) for _ in range(batches)]
             for _ in range(repeats)]
    net = ctx.prepared(Recipe(train=train))
    if width is not None:
        try:
            net = narrow_copy(net, width, draws[0][0][:2], ctx.seed).train(train)
        except ValueError:
            _check_takes_crops(ctx, net, random_crops(x, 2, crop, None, gen))
            raise
    counts = []
    for batch_list in draws:
        codes: list[np.ndarray] = []
        for xb in batch_list:
            layers: list[np.ndarray] = []

            def collect(_name: str, out: torch.Tensor) -> None:
                if out.dim() >= 3:
                    layers.append((out.detach().reshape(out.shape[0], -1) > 0).cpu().numpy())

            with torch.inference_mode(), capture_activations(net, collect):
                ctx.forward(net, xb)
            codes.append(np.concatenate(layers, axis=1) if layers
                         else np.zeros((xb.shape[0], 0), dtype=bool))
        counts.append(distinct_rows(np.concatenate(codes, axis=0)))
    return sum(counts) / len(counts)
