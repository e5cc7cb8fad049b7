"""NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021).

For a batch of N real images, each ReLU unit gives a binary code per image (active or not).
K[i, j] counts the units on which images i and j agree, i.e. K = C·Cᵀ + (1−C)(1−C)ᵀ summed over
layers; the score is log|det K|.  Two identical images give two identical rows: det K = 0 and
the score is -inf, which the caller sees as a non-finite score.

The reference code runs the network in train mode (batch statistics) and hooks nn.ReLU
modules; so does this one (``train=False`` for eval mode, running statistics).  Activations of
other kinds are turned into ReLU first, so that "active" means positive for every network.  Two differences from BayesWatch/
nas-without-training ``score_networks.py``, both choices: (1) it selects modules by
``'ReLU' in str(type(module))``, which on NAS-Bench-201 also matches the ``ReLUConvBN``
operation around each ReLU, so every convolution's codes enter K twice (log|det K| moves by
about N·ln 2 and the order of cells barely: Kendall τ 0.987 between the two on 18 NATS-tss
cells, 1.0 on 26 more); zcproxy counts each activation once, as the paper defines K (NB101's
``ConvBnRelu`` is not matched there, so NB101 is unaffected); (2) it keeps a layer only if the
backward pass from the output reached it, and zcproxy counts every activation that ran, which
differs only on a network with a computed but unused branch (NATS's ``none`` operation
multiplies by 0 and stays connected).

Speed: K is integer-valued, so on the CPU the codes are bit-packed and K = D − Hamming
distance is computed with XOR + popcount (64 units per machine word), about 3× faster than the
float matmul the reference uses and exactly equal to it.  On accelerators the matmul stays.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..context import ProxyContext
from ..registry import register_proxy
from ..surgery import Recipe, capture_activations


def agreement_kernel(codes: torch.Tensor) -> torch.Tensor:
    """K for one layer's binary codes ``(N, D)``: agreements between every pair of rows.

    With s = 2c − 1 ∈ {−1, 1}, s·sᵀ = agreements − disagreements, so K = (s·sᵀ + D) / 2.
    Entries are integers ≤ D, exact in float32 up to D = 2²⁴ per layer.
    """
    s = codes.to(torch.float32) * 2 - 1
    d = s.shape[1]
    return ((s @ s.T + d) / 2).to(torch.float64)


def packed_agreement_kernel(packed: list[np.ndarray], units: int) -> np.ndarray:
    """K from bit-packed codes (``np.packbits`` rows, one array per layer): D − Hamming."""
    rows = packed[0].shape[0]
    words = [np.pad(p, ((0, 0), (0, -p.shape[1] % 8))).view(np.uint64) for p in packed]
    bits = np.ascontiguousarray(np.concatenate(words, axis=1))
    hamming = np.zeros((rows, rows), dtype=np.int64)
    for i in range(rows - 1):
        d = np.bitwise_count(bits[i] ^ bits[i + 1:]).sum(axis=1, dtype=np.uint32)  # D < 2³²
        hamming[i, i + 1:] = d
        hamming[i + 1:, i] = d
    return (units - hamming).astype(np.float64)


def units_last(out: torch.Tensor) -> torch.Tensor:
    """``out`` with its units in memory order: K sums over units, so their order is free, and
    a channels-last activation (the fast path) flattens without a copy."""
    if out.dim() == 4 and not out.is_contiguous() and out.is_contiguous(
            memory_format=torch.channels_last):
        return out.permute(0, 2, 3, 1)
    return out


def positive(flat: torch.Tensor) -> np.ndarray:
    """``flat > 0`` as a numpy bool array.  numpy has no bfloat16: a bfloat16 is positive
    exactly when its bits, read as int16, are (sign bit clear, not +0; ReLU outputs hold no
    NaN)."""
    if flat.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy() > 0
    return flat.numpy() > 0


def log_abs_det(k: torch.Tensor) -> float:
    sign, logabs = torch.linalg.slogdet(k)
    return float("-inf") if sign == 0 else float(logabs)


def coded_forward(ctx: ProxyContext, layer: Callable[[torch.Tensor], None], *,
                  any_order: bool = True, train: bool = True) -> int:
    """Run NASWOT's forward (train mode unless ``train=False``, every activation a ReLU) on
    the real batch, calling ``layer(flat)`` with each ReLU output as ``(N, units)``; returns N.  ``any_order``: units in
    memory order (K does not depend on it; no copy); else in the logical (C, H, W) order, the
    same on both paths, for comparing codes unit by unit.

    Fast path: bfloat16 (2x the float32 convolution rate with AVX-512 BF16), codes of the same
    units; the fidelity gate (benchmarks/FIDELITY.md) measures how many codes that flips."""
    x, _ = ctx.data(min_batch=2)
    low = ctx.pick_dtype(None, torch.bfloat16) if x.dtype == torch.float32 else None
    net = ctx.prepared(Recipe(relu=True, train=train, dtype=low), fast=True)
    if low is not None:
        x = x.to(low)
    n = x.shape[0]
    with torch.inference_mode(), capture_activations(
            net, lambda _name, out: layer((units_last(out.detach()) if any_order
                                           else out.detach()).reshape(n, -1))):
        ctx.forward(net, x)
    return n


def relu_codes(ctx: ProxyContext) -> np.ndarray:
    """Every ReLU unit's binary code per image, ``(N, units)`` bool, in the order NASWOT reads
    them (for comparing the exact and the fast path's codes)."""
    codes: list[np.ndarray] = []
    coded_forward(ctx, lambda flat: codes.append(positive(flat.cpu())), any_order=False)
    return np.concatenate(codes, axis=1)


@register_proxy("naswot", needs_data=True, higher_is_better=True,
                description="NASWOT: log|det| of the ReLU-code agreement kernel on a real batch "
                            "(Mellor et al. 2021)")
def naswot(ctx: ProxyContext, *, train: bool = True) -> float:
    on_cpu = ctx.device.type == "cpu"
    kernel: torch.Tensor | None = None
    packed: list[np.ndarray] = []
    units = 0

    def accumulate(flat: torch.Tensor) -> None:
        nonlocal units, kernel
        units += flat.shape[1]
        if on_cpu:  # numpy's comparison is ~8x faster than torch's bool-output one here
            packed.append(np.packbits(positive(flat), axis=1))
        else:
            layer = agreement_kernel(flat > 0)
            kernel = layer if kernel is None else kernel + layer

    n = coded_forward(ctx, accumulate, train=train)
    if packed:
        kernel = torch.from_numpy(packed_agreement_kernel(packed, units))
    if kernel is None:
        kernel = torch.zeros((n, n), dtype=torch.float64)
    return log_abs_det(kernel)
