"""SWAP-Score (Peng et al., "SWAP-NAS: Sample-Wise Activation Patterns for Ultra-fast NAS",
ICLR 2024): how many distinct on/off patterns the network's units show across a batch.

Recipe (pym1024/SWAP, ``src/metrics/swap.py`` and ``correlation.py``): a batch of 16 real
images; every ReLU whose input is a feature map is hooked; the outputs are flattened per sample
and concatenated into an (N samples x D units) matrix of signs (1 where the unit is active);
SWAP is the number of *distinct unit patterns*, i.e. distinct columns (each unit's N-bit
pattern across the samples).  The network runs in train mode (as built, never switched;
``train=False`` for eval mode, running statistics), and
the score is the mean over 32 repeats, each after re-drawing conv/linear weights from N(0, 1)
with zero biases and norm scales 1, shifts 0 (``network_weight_gaussian_init``).

Regularised form (``swap_reg``, same file, ``cal_regular_factor`` and ``count_parameters`` in
``src/utils/utilities.py``): SWAP x exp(-(P - mu)^2 / sigma), P the number of parameters *in
thousands* (the official count divides by 1e3 and skips parameters whose name contains
"auxiliary", DARTS's auxiliary head); the factor is computed once per network and multiplies
every repeat, so swap_reg = factor x mean SWAP.  sigma divides the squared difference (it is
not a standard deviation: its unit is thousands of parameters squared).  zcproxy follows that
unit by default (``unit=1e3``); ``unit=1e6`` reads mu and sigma in millions.

mu and sigma: the official repository has no NAS-Bench-201 script and no values (its only
script, ``correlation.py`` on DARTS, never turns regularisation on), and the paper's text
available to us does not state them either.  zcproxy's defaults mu = 1500 (thousand) and
sigma = 1.5e6 (thousand^2) are the mu = sigma = 1.5 (millions) of a third-party NAS-Bench-201
re-implementation, written in the official unit (zcproxy versions before swap_reg version 2
took them in millions: the same factor).  The peak sits at the largest NAS-Bench-201 networks
(1.53 M), so over that space the factor is a size prior growing with P (0.26 at 0.07 M);
set mu, sigma for your search space (a ResNet-18, 11 M, gets e^-60 from these).

Choices: "ReLU on a feature map" becomes every activation module (zcproxy's
``capture_activations``) whose output has at least 3 dimensions (feature maps or token
sequences; a classifier head's vector activations are left out, as the 4-D test leaves them
out in the official code), and "active" means > 0 (the sign of a ReLU output).  The batch
is the first ``batch_size`` images of the caller's real batch (all of them if it has fewer).
Re-initialisation ``r`` uses a generator seeded with ``seed + r``; ``reinit=False`` scores
the weights as given (one pass).  Each unit's pattern is packed into one integer code (up to
64 samples) and the codes are counted, instead of comparing rows of the unit x sample matrix.

The count is >= 1 on every network with such units (a network whose units are all off has
one pattern), so SWAP is defined on NAS-Bench-201 cells whose output does not depend on the
input.  A network with none (an MLP: every activation a vector) has no pattern to count:
undefined, NaN with the reason (the official code returns None and its mean fails).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..context import ProxyContext
from ..registry import ProxyOptionError, ProxyUndefined, register_proxy
from ..surgery import Recipe, capture_activations, gaussian_init_


NO_UNITS = ("no activation acts on a feature map or token sequence (an output of 3 or more "
            "dimensions), and SWAP counts the patterns of those units only")


def distinct_rows(bits: np.ndarray) -> int:
    """Number of distinct rows of a boolean matrix (packed 64 bits per word)."""
    if bits.shape[0] == 0:
        return 0
    packed = np.packbits(bits, axis=1)
    packed = np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8)))
    words = np.ascontiguousarray(packed).view(np.uint64)
    if words.shape[1] == 1:
        return int(np.unique(words[:, 0]).size)
    return int(np.unique(words, axis=0).shape[0])


def unit_patterns(ctx: ProxyContext, net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """(D units x N samples) booleans: which units are active (> 0) for which sample."""
    n = x.shape[0]
    codes: list[np.ndarray] = []

    def collect(_name: str, out: torch.Tensor) -> None:
        if out.dim() >= 3:
            codes.append((out.detach().reshape(n, -1) > 0).cpu().numpy())

    with torch.inference_mode(), capture_activations(net, collect):
        ctx.forward(net, x)
    if not codes:
        return np.zeros((0, n), dtype=bool)
    return np.concatenate(codes, axis=1).T


def pattern_codes(bits: np.ndarray) -> np.ndarray:
    """One uint64 code per column of an (N <= 64 samples x D units) boolean matrix."""
    packed = np.packbits(bits, axis=0)  # (ceil(N/8), D)
    codes = np.zeros((bits.shape[1], 8), dtype=np.uint8)
    codes[:, :packed.shape[0]] = packed.T
    return codes.view(np.uint64)[:, 0]


def distinct_unit_patterns(ctx: ProxyContext, net: torch.nn.Module, x: torch.Tensor) -> int:
    """Number of distinct unit patterns (as ``distinct_rows(unit_patterns(...))``, faster)."""
    n = x.shape[0]
    if n > 64:
        return distinct_rows(unit_patterns(ctx, net, x))
    codes: list[np.ndarray] = []

    def collect(_name: str, out: torch.Tensor) -> None:
        if out.dim() >= 3:
            codes.append(pattern_codes((out.detach().reshape(n, -1) > 0).cpu().numpy()))

    with torch.inference_mode(), capture_activations(net, collect):
        ctx.forward(net, x)
    if not codes:
        return 0
    every = np.concatenate(codes)
    width = 8 * -(-n // 8)
    if width <= 24:  # codes < 2^width: mark them in a table instead of sorting
        seen = np.zeros(1 << width, dtype=bool)
        seen[every] = True
        return int(seen.sum())
    return int(np.unique(every).size)


def swap_count(ctx: ProxyContext, *, batch_size: int = 16, repeats: int = 32,
               reinit: bool = True, train: bool = True) -> float:
    """Mean number of distinct unit patterns over the re-initialisations (memoised)."""
    def compute() -> float:
        x, _ = ctx.data(min_batch=2)
        x = x[:batch_size]
        net = ctx.prepared(Recipe(train=train), shared=not reinit)
        counts = []
        for r in range(repeats if reinit else 1):
            if reinit:
                gaussian_init_(net, torch.Generator().manual_seed(ctx.seed + r))
            counts.append(distinct_unit_patterns(ctx, net, x))
            if counts[-1] == 0:
                raise ProxyUndefined(NO_UNITS)
        return sum(counts) / len(counts)
    return ctx.memo(("swap", batch_size, repeats, reinit, train), compute)


@register_proxy("swap", needs_data=True, higher_is_better=True,
                description="SWAP-Score: distinct activation patterns of the units across a batch "
                            "(Peng et al. 2024)")
def swap(ctx: ProxyContext, *, batch_size: int = 16, repeats: int = 32,
         reinit: bool = True, train: bool = True) -> float:
    return swap_count(ctx, batch_size=batch_size, repeats=repeats, reinit=reinit, train=train)


def official_size(model: torch.nn.Module, unit: float = 1e3) -> float:
    """Parameters in units of ``unit`` (official: thousands), leaving out every parameter whose
    qualified name contains "auxiliary" as the official ``count_parameters`` does."""
    return sum(p.numel() for name, p in model.named_parameters()
               if "auxiliary" not in name) / unit


def size_factor(size: float, mu: float, sigma: float) -> float:
    """exp(-(size - mu)^2 / sigma), ``size`` in the unit mu is given in."""
    return math.exp(-((size - mu) ** 2) / sigma)


@register_proxy("swap_reg", needs_data=True, higher_is_better=True, version="2",
                description="regularised SWAP-Score: SWAP x exp(-(#params[K] - mu)^2 / sigma)")
def swap_reg(ctx: ProxyContext, *, mu: float = 1500.0, sigma: float = 1.5e6,
             unit: float = 1e3, batch_size: int = 16, repeats: int = 32,
             reinit: bool = True, train: bool = True) -> float:
    if sigma <= 0:
        raise ProxyOptionError(f"sigma must be positive, got {sigma}")
    if unit <= 0:
        raise ProxyOptionError(f"unit must be positive, got {unit}")
    factor = size_factor(official_size(ctx.model, unit), mu, sigma)
    return swap_count(ctx, batch_size=batch_size, repeats=repeats, reinit=reinit,
                      train=train) * factor
