"""Synflow (Tanaka et al., 2020) and LogSynflow (Cavagnero et al., FreeREA, 2022).

Sources followed: Synflow as in SamsungLabs/zero-cost-nas
``foresight/pruners/measures/synflow.py`` (NASLib's ``synflow.py`` is the same), LogSynflow
as in NiccoloCavagnero/FreeREA ``metrics/synflow.py`` (its ``log`` variant).

Both linearise the network (normalisation suppressed, |weights|, float64; float32 on the fast
path where it holds the numbers, see _weights_and_grads) and back-propagate
R = Σ f(1) from an all-ones input of batch 1.  Synflow = Σ|θ ⊙ ∂R/∂θ| over conv and linear
weights; LogSynflow = Σ|θ ⊙ log(1 + ∂R/∂θ)| tames the gradients, which grow exponentially with
depth and otherwise let the deepest/widest layers dominate.  The two share one backward pass.
Norms are suppressed as in FreeREA's code (which disables BatchNorm; here every norm, so that
the network is linear up to its activations), including fused norm + activation modules, whose
activation is kept (zcproxy.surgery.without_norm).  The pass runs in eval mode, so dropout and
drop-path are off and the score is deterministic; FreeREA calls ``net.train()`` and NASLib
keeps the caller's mode (train in its predictor), which differs only on a network with
dropout or drop-path, where their scores are random (288.7 here against 514, 188 and 193 in
three train-mode runs of NASLib's code on a small CNN with Dropout(0.5)).

Where they are undefined (raised as ProxyUndefined, so the score is NaN with the reason):

* Synflow's argument holds for networks that are positively homogeneous piecewise-linear
  maps (ReLU, conv, linear, pooling): with |weights| and a positive input every ∂R/∂θ ≥ 0.
  Softmax attention breaks it.  On a ViT (timm's ``vit_tiny_patch16_224``) with LayerNorm
  suppressed the residual stream grows ~400x per block (1e33 after 12 blocks), the attention
  logits q·k grow as its square, and the all-ones input makes every patch token the same up to
  the position embedding, so each softmax sits near a tie whose derivative is multiplied by the
  logit scale: |∂R/∂θ| reaches 2e253 on vit_tiny and overflows float64 on vit_small, LeViT-128S
  and MobileViT-XXS (inf, then inf - inf = NaN).  A non-finite gradient makes both undefined.
* The softmax also makes ∂R/∂θ negative (raising one token's logit lowers the others' weights),
  and the sign reaches every layer before the last attention through the residual stream:
  2.5M of vit_tiny's 5.5M weights have ∂R/∂θ ≤ -1, where log(1 + ∂R/∂θ) is undefined (that, not
  an overflow, is why LogSynflow was NaN on vit_tiny; Synflow stays finite there).  FreeREA's
  reference code computes ``torch.log(grad + 1)`` too, so it is NaN on the same networks;
  keeping LayerNorm (as it does) does not help, its centring also makes gradients negative.
  Negative gradients above -1 (EfficientFormerV2, ESFormer hybrids) leave LogSynflow defined.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ..context import ProxyContext
from ..registry import ProxyUndefined, register_proxy
from ..surgery import Recipe, chain_links, weight_modules
from .gradient import trainable_value


def _weights_and_grads(ctx: ProxyContext
                       ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float | None]:
    """(θ, ∂R/∂θ) per conv/linear weight of the linearised network and the power of two the
    gradients were scaled by (None: unscaled float64), memoised for both proxies.

    The exact path computes in float64.  The fast path (issue 16) computes in float32
    channels-last, where oneDNN's kernels run the forward and backward ~1.6x as fast as
    float64's.  R and ∂R/∂θ grow exponentially with depth (R reached 1e80 on NAS-Bench-101
    cells, beyond float32's 3.4e38 on 735 of the 1,000 sampled), so where the network declares
    the links of its chain (:func:`zcproxy.surgery.mark_chain_links`: the benchmark adapters
    mark their stem and cells) each link's output is divided by the power of two that brings
    its peak into [0.5, 1).  The linearised network is positively homogeneous (|weights|, no
    norms, ReLU on non-negative values, pooling), so everything downstream and every gradient
    is scaled by the same power of two, which is exact in floating point: the float32 pass
    rounds like an unscaled one but never leaves float32's range, and the proxies undo the
    scale in float64.  Where float32 still overflows (no links declared, or a link's output
    already beyond it), the pass is repeated in float64.  The float32 gradients are checked
    finite here, once.
    """
    def gradients(dtype: torch.dtype):
        net = ctx.prepared(Recipe(suppress_norm=True, absolute=True, dtype=dtype, train=False),
                           shared=False, fast=dtype != torch.float64)
        exponents: list[int] = []
        if dtype != torch.float64:
            for link in chain_links(net):
                link.register_forward_hook(functools.partial(_rescale_to_unit, exponents))
        total = ctx.forward(net, ctx.ones_input(dtype)).sum()
        if dtype != torch.float64 and not torch.isfinite(total):
            return None  # float32 overflowed in the forward already: no backward to waste
        exponent = sum(exponents)
        if exponent > 1000:
            return None  # 2**sum is beyond float64: the float64 pass says what becomes of it
        trainable_value(total).backward()
        pairs = [(m.weight.detach(), m.weight.grad.detach())
                 for m in weight_modules(net) if m.weight.grad is not None]
        if dtype == torch.float64:
            return pairs, None
        if not all(bool(torch.isfinite(g).all()) for _, g in pairs):
            return None
        return pairs, 2.0 ** exponent

    def compute():
        fast = ctx.pick_dtype(torch.float64, torch.float32)
        return (fast != torch.float64 and gradients(fast)) or gradients(torch.float64)
    return ctx.memo("synflow-grads", compute)


def _rescale_to_unit(exponents: list[int], module: nn.Module, args, out):
    """Forward hook: ``out`` divided by 2**e, e the binary exponent of its peak (so its peak
    lands in [0.5, 1)); e is appended to ``exponents``."""
    if not isinstance(out, torch.Tensor) or not out.numel():
        return None
    peak = float(out.detach().abs().amax())
    if not (peak > 0 and math.isfinite(peak)):
        return None
    exponent = math.frexp(peak)[1]
    exponents.append(exponent)
    return out * 2.0 ** -exponent


def _finite_grads(ctx: ProxyContext
                  ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float | None]:
    pairs, scale = _weights_and_grads(ctx)
    bad = 0 if scale is not None else sum(int((~torch.isfinite(g)).sum()) for _, g in pairs)
    if bad:
        raise ProxyUndefined(
            f"∂R/∂θ of the linearised network overflows float64 for {bad} weights (softmax "
            "attention with norms suppressed and an all-ones input scales gradients by the "
            "square of the activations per attention layer; see zcproxy/proxies/synflow.py)")
    return pairs, scale


@register_proxy("synflow", description="Synflow: Σ|θ·∂R/∂θ| of the linearised network "
                                       "(Tanaka et al. 2020)")
def synflow(ctx: ProxyContext) -> float:
    pairs, scale = _finite_grads(ctx)
    if scale is None:
        return float(sum((w * g).abs().sum() for w, g in pairs))
    # float32 products (no overflow: |θ| ≤ 1 here), summed in float64, then unscaled
    return float(sum(torch.sum((w * g).abs_(), dtype=torch.float64) for w, g in pairs)) * scale


@register_proxy("logsynflow", description="LogSynflow: Σ|θ·log(1+∂R/∂θ)| of the linearised "
                                          "network (FreeREA, Cavagnero et al. 2022)")
def logsynflow(ctx: ProxyContext) -> float:
    pairs, scale = _finite_grads(ctx)
    limit = -1.0 if scale is None else -1.0 / scale  # g * scale <= -1, exactly (a power of 2)
    if any(g.numel() and float(g.min()) <= limit for _, g in pairs):
        below = sum(int((g <= limit).sum()) for _, g in pairs)
        total = sum(g.numel() for _, g in pairs)
        raise ProxyUndefined(
            f"log(1 + ∂R/∂θ) is undefined for {below} of {total} weights with ∂R/∂θ ≤ -1: "
            "the network is not monotone in its weights (softmax attention or another "
            "non-homogeneous op makes gradients negative; see zcproxy/proxies/synflow.py)")
    if scale is None:
        return float(sum((w * torch.log1p(g)).abs().sum() for w, g in pairs))
    # unscaled in float64, in place: one float64 copy per tensor instead of one per operation
    return float(sum(g.to(torch.float64).mul_(scale).log1p_().mul_(w).abs_().sum()
                     for w, g in pairs))
