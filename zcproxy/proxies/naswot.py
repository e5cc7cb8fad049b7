"""NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021).

For a batch of N real images, each ReLU unit gives a binary code per image (active or not).
K[i, j] counts the units on which images i and j agree, i.e. K = C·Cᵀ + (1−C)(1−C)ᵀ summed over
layers; the score is log|det K|.  Two identical images give two identical rows: det K = 0 and
the score is -inf, which the caller sees as a non-finite score.

The reference code runs the network in train mode (batch statistics) and hooks nn.ReLU
modules; so does this one.  Activations of other kinds are turned into ReLU first, so that
"active" means positive for every network.

Speed: K is integer-valued, so on the CPU the codes are bit-packed and K = D − Hamming
distance is computed with XOR + popcount (64 units per machine word), about 3× faster than the
float matmul the reference uses and exactly equal to it.  On accelerators the matmul stays.
"""
from __future__ import annotations

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


def log_abs_det(k: torch.Tensor) -> float:
    sign, logabs = torch.linalg.slogdet(k)
    return float("-inf") if sign == 0 else float(logabs)


@register_proxy("naswot", needs_data=True, higher_is_better=True,
                description="NASWOT: log|det| of the ReLU-code agreement kernel on a real batch "
                            "(Mellor et al. 2021)")
def naswot(ctx: ProxyContext) -> float:
    x, _ = ctx.data(min_batch=2)
    net = ctx.prepared(Recipe(relu=True, train=True))
    n = x.shape[0]
    on_cpu = ctx.device.type == "cpu"
    kernel = torch.zeros((n, n), dtype=torch.float64, device=ctx.device)
    packed: list[np.ndarray] = []
    units = 0

    def accumulate(_name: str, out: torch.Tensor) -> None:
        nonlocal units
        flat = out.detach().reshape(n, -1)
        units += flat.shape[1]
        if on_cpu:  # numpy's comparison is ~8x faster than torch's bool-output one here
            packed.append(np.packbits(flat.numpy() > 0, axis=1))
        else:
            kernel.add_(agreement_kernel(flat > 0))

    with torch.inference_mode(), capture_activations(net, accumulate):
        ctx.forward(net, x)
    if packed:
        kernel = torch.from_numpy(packed_agreement_kernel(packed, units))
    return log_abs_det(kernel)
