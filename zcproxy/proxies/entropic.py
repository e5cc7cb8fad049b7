"""Entropic Score (the paper's section 3.2): how much information the activations carry.

Source followed: the text of the paper that introduced it (the Entropic Score and ESFormers,
with LogSynflow for size; it cites no public code), with its Table 4 as the check; every
reading the text leaves open is an option below.

Recipe: suppress normalisation, turn every activation into ReLU, re-initialise, feed uniform
noise in [-0.5, 0.5], normalise each activation tensor into (0, 1], average the element-wise
entropy ``-a·log(a + eps)`` per activation layer, sum over layers, average over ``repeats``
re-initialisations (network and input seeds ``seed + r``).

**Signed weights (the default since zcproxy 0.2, proxy version 2).**  The paper lists "take
|weights|" among its steps, and zcproxy 0.1 took |weights| after every re-initialisation.
Scored on the same architectures with the same seeds, the two readings give (Kendall τ /
Spearman ρ vs CIFAR-10 accuracy, 1,000-arch samples, 95 % bootstrap interval of τ):

=====================  ==============================  =============================
reading                NAS-Bench-101 (paper .50/.68)   NATS-sss (paper .03/.04)
=====================  ==============================  =============================
|weights| (0.1)        .437 [.406, .465] / .617        −.017 [−.053, .032] / −.026
signed (default)       .499 [.468, .527] / .684        .033 [−.010, .063] / .050
=====================  ==============================  =============================

Only the signed reading reproduces all four of the paper's cells, so it is the default
(results/README.md has the NATS-tss figures and how much of each reading is depth).  A
plausible cause in the authors' code: |weights| taken once, then overwritten by each of the
three re-initialisations.  With |weights| and ReLU the network is positively homogeneous and
the score is close to a count of ReLU layers with ties broken at random (Spearman ρ 0.90 with
``n_act`` on NB101, 0.05 within groups of equal ``n_act``; signed: 0.94 and 0.21).
``entropic_abs`` keeps the 0.1 reading; ``entropic_signed`` names the default explicitly.

The paper normalises "by [the activations'] maximum value across the channel dimension".  Two
readings exist, both available as ``normalization``:

* ``"channel"`` (default): each channel is divided by its own maximum over the spatial
  positions (tokens for ``(N, L, C)`` tensors).  This reading reproduces the paper's Table 4.
* ``"across_channels"``: at each position, divide by the maximum over the channels.  Measured
  here (with |weights|) it gives NATS-sss τ ≈ -0.57, far from the paper's 0.03.
* ``"tensor"``: one maximum for the whole tensor of a sample, for comparison.

Zeros (ReLU's dead units, or a channel whose maximum is 0) contribute 0 entropy.

The default dtype is float64: with |weights| and no normalisation, activations grow
geometrically with depth and overflow float32 in deep cells (NAS-Bench-201 networks reach
inf, and inf/inf is NaN); float64 keeps every benchmark network finite in both readings.  On
the fast path (``exact=False``, issue 16) the signed readings run in float32 channels-last,
whose ranks the fidelity gate checks (benchmarks/FIDELITY.md); |weights| stays float64.
"""
from __future__ import annotations

from typing import Literal

import torch

from ..context import ProxyContext
from ..registry import ProxyOptionError, register_proxy
from ..surgery import Recipe, absolute_, capture_activations, drawn_in, reinitialise

Normalization = Literal["channel", "across_channels", "tensor"]


def _layout(t: torch.Tensor) -> tuple[tuple[int, ...], int]:
    """(spatial dims, channel dim) of an activation tensor."""
    if t.dim() == 4:            # (N, C, H, W)
        return (2, 3), 1
    if t.dim() == 3:            # (N, L, C): tokens
        return (1,), 2
    if t.dim() == 2:            # (N, C)
        return (), 1
    raise ValueError(f"cannot normalise an activation of shape {tuple(t.shape)}")


def normalise(t: torch.Tensor, normalization: Normalization = "channel") -> torch.Tensor:
    """Non-negative activations divided into [0, 1] by the chosen maximum (0/0 -> 0)."""
    spatial, channel = _layout(t)
    if normalization == "channel":
        dims = spatial
    elif normalization == "across_channels":
        dims = (channel,)
    elif normalization == "tensor":
        dims = tuple(range(1, t.dim()))
    else:
        raise ProxyOptionError(f"normalization must be 'channel', 'across_channels' or 'tensor', "
                         f"not {normalization!r}")
    if not dims:  # every element is its own maximum
        return (t > 0).to(t.dtype)
    peak = t.amax(dim=dims, keepdim=True)
    return torch.where(peak > 0, t / peak.clamp_min(torch.finfo(t.dtype).tiny), 0.0)


def layer_entropy(t: torch.Tensor, normalization: Normalization = "channel",
                  eps: float = 1e-8) -> torch.Tensor:
    """Mean element-wise entropy ``-a·log(a + eps)`` of one normalised activation tensor."""
    a = normalise(t, normalization)
    return -(a * torch.log(a + eps)).mean()


def default_dtype(ctx: ProxyContext, abs_weights: bool) -> torch.dtype:
    """float64, or float32 on the fast path for signed weights (whose activations do not grow
    geometrically; the |weights| readings overflow float32 and stay float64)."""
    return torch.float64 if abs_weights else ctx.pick_dtype(torch.float64, torch.float32)


def entropic_layers(ctx: ProxyContext, *, repeats: int = 3, batch_size: int = 1,
                    normalization: Normalization = "channel", eps: float = 1e-8,
                    low: float = -0.5, high: float = 0.5, reinit: bool = True,
                    use_inputs: bool = False, dtype: torch.dtype | None = None,
                    abs_weights: bool = False) -> list[list[tuple[str, float]]]:
    """Per repeat, the (activation-module name, layer entropy) of every activation call.

    ``abs_weights=True`` takes |weights| after each re-initialisation (zcproxy 0.1's reading,
    ``entropic_abs``); the default keeps the signed re-initialised weights.

    ``reinit=False`` keeps the model's own weights (then repeats differ only by input);
    ``use_inputs=True`` feeds the caller's ``inputs`` instead of noise (same in every repeat).
    """
    if repeats < 1:
        raise ProxyOptionError(f"repeats must be at least 1, got {repeats}")
    dtype = dtype or default_dtype(ctx, abs_weights)
    # One surgical copy, re-drawn in place for each repeat: the same values as a fresh copy per
    # repeat (every weight is overwritten), without deep-copying the network three times.
    # Weights are drawn in float64 whatever the compute dtype (drawn_in): torch's initialisers
    # draw other values in float32, and ES of another draw is another score, not a rounding of
    # this one.  The fast path computes in a float32 channels-last copy.
    net = ctx.prepared(Recipe(suppress_norm=True, relu=True, dtype=dtype, train=False),
                       shared=False, fast=True)
    runs = []
    for r in range(repeats):
        seed = ctx.seed + r
        with drawn_in(net, torch.float64):
            if reinit:
                reinitialise(net, seed)
            if abs_weights and (reinit or r == 0):
                absolute_(net)
        if use_inputs:
            x = ctx.data()[0].to(dtype)
        else:
            x = ctx.random_input(batch=batch_size, seed=seed, low=low, high=high, dtype=dtype)
        layers: list[tuple[str, torch.Tensor]] = []
        with torch.inference_mode(), capture_activations(
                net, lambda name, out: layers.append(
                    (name, layer_entropy(out, normalization, eps)))):
            ctx.forward(net, x)
        runs.append([(name, float(v)) for name, v in layers])
    return runs


@register_proxy("entropic", higher_is_better=True, version="2",
                description="Entropic Score: summed mean entropy of normalised ReLU activations "
                            "for noise input, signed re-initialised weights (this paper)")
def entropic_score(ctx: ProxyContext, *, repeats: int = 3, batch_size: int = 1,
                   normalization: Normalization = "channel", eps: float = 1e-8,
                   reduce: Literal["sum", "mean"] = "sum", low: float = -0.5,
                   high: float = 0.5, reinit: bool = True, use_inputs: bool = False,
                   dtype: torch.dtype | None = None, abs_weights: bool = False) -> float:
    """``reduce="mean"`` averages over layers instead of summing (how much of ES is depth?);
    ``abs_weights=True`` takes |weights| after each re-initialisation (``entropic_abs``)."""
    if reduce not in ("sum", "mean"):
        raise ProxyOptionError(f"reduce must be 'sum' or 'mean', not {reduce!r}")
    settings = dict(repeats=repeats, batch_size=batch_size, normalization=normalization,
                    eps=eps, low=low, high=high, reinit=reinit, use_inputs=use_inputs,
                    dtype=dtype or default_dtype(ctx, abs_weights), abs_weights=abs_weights)
    # The sum and the layer mean read the same layers: computed once per context.
    runs = ctx.memo(("entropic-layers", tuple(sorted(settings.items()))),
                    lambda: entropic_layers(ctx, **settings))
    totals = [sum(v for _, v in run) / (len(run) if reduce == "mean" else 1) for run in runs]
    return sum(totals) / len(totals)


# Named presets of the Entropic Score, so tables can show readings side by side; ``explain``
# uses the same presets.
VARIANTS: dict[str, dict[str, object]] = {"entropic": {}}


def _register_variant(name: str, description: str, version: str = "1", **fixed) -> None:
    VARIANTS[name] = dict(fixed)

    def variant(ctx: ProxyContext, **options) -> float:
        return entropic_score(ctx, **{**options, **fixed})
    register_proxy(name, higher_is_better=True, description=description,
                   version=version)(variant)


_register_variant("entropic_signed", "Entropic Score, signed weights named explicitly (the "
                  "default reading; same value as entropic)", version="2", abs_weights=False)
_register_variant("entropic_abs", "Entropic Score with |weights| after each re-initialisation "
                  "(zcproxy 0.1's default reading)", abs_weights=True)
_register_variant("entropic_across", "Entropic Score, the other normalisation: each position "
                  "divided by its maximum across channels", version="2",
                  normalization="across_channels")
_register_variant("entropic_mean", "Entropic Score averaged over layers instead of summed "
                  "(the depth-free part of ES)", version="2", reduce="mean")
_register_variant("entropic_abs_across", "entropic_across with |weights| (zcproxy 0.1's "
                  "entropic_across)", normalization="across_channels", abs_weights=True)
_register_variant("entropic_abs_mean", "entropic_mean with |weights| (zcproxy 0.1's "
                  "entropic_mean)", reduce="mean", abs_weights=True)
