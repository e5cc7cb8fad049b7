"""Zen-score (Lin et al., "Zen-NAS", ICCV 2021): how strongly the pre-pooling features react
to a small perturbation of a Gaussian input, corrected for BatchNorm's rescaling.

Follows idstcv/ZenNAS ``ZeroShotProxy/compute_zen_score.py`` (``compute_nas_score``), which
AZ-NAS (cvlab-yonsei/AZ-NAS ``NB201/ZeroShotProxy/compute_zen_score.py``) and VKDNW
(ondratybl/VKDNW, same path) run unchanged on NAS-Bench-201:

    re-initialise: conv/linear weights ~ N(0, 1), biases 0, BN/GN scales 1 / shifts 0
    x ~ N(0, 1), ε ~ N(0, 1) of shape (batch_size, *input shape), BN in train mode
    Δ = mean over the batch of Σ |F(x) − F(x + γ·ε)|,     γ = mixup_gamma = 1e-2
    score = log Δ + Σ over BatchNorm layers of log √(mean of running_var)

averaged over ``repeats`` draws.  The running variances are the ones the two forward passes
left on a fresh network (momentum 0.1 from 1: 0.81 + 0.09·v(x) + 0.1·v(x + γε), v the
unbiased batch variance), not the batch variances; ZenNAS never resets them between repeats,
and neither does this.  Defaults are the ones ZenNAS's own search uses (``evolution_search.py``:
``repeat=1``, ``--batch_size 64`` in its CIFAR scripts) and AZ-NAS's and VKDNW's NAS-Bench-201
runs use (batch 64, one repeat); ZenNAS's stand-alone command line uses ``--repeat_times 32
--batch_size 16``.  The network is scored as given, residual links included (as AZ-NAS and
VKDNW do); ZenNAS's search scores its candidates built with ``no_reslink=True``, which only
its own search space can do.

F is "the network before global average pooling" (ZenNAS's ``forward_pre_GAP``; on a
NAS-Bench-201 network AZ-NAS's and VKDNW's ``forward_pre_GAP`` return ``lastact`` = BN + ReLU
after the last cell, i.e. the input of ``global_pooling``; NASLib hooks the same tensor).
For a generic model, ``features``:

* ``"auto"`` (default): ``"pool_input"`` if the model has an adaptive pooling module, else
  ``"linear_input"`` if it has a linear layer, else ``"output"``;
* ``"pool_input"``: the input of the last adaptive pooling module applied in the forward pass
  (the global pool comes after any squeeze-excitation pools);
* ``"linear_input"``: the input of the last ``nn.Linear`` applied (already pooled if the model
  pools functionally);
* ``"output"``: the selected model output;
* any other string: the output of the submodule of that qualified name.

The BN term sums over the BatchNorm layers that ran before F was taken: ZenNAS runs only
``forward_pre_GAP``, so a layer after the features (a BatchNorm1d in a head) keeps running
variance 1 there and adds nothing, although zcproxy's full forward updates it.  Layers on
branches that do not reach the output (a conv edge into a NAS-Bench-201 node whose every exit
is ``none``) do run, and count, as in ZenNAS.

Choices: BatchNorm of any dimensionality with running statistics counts (the official code,
written for 2-D networks, tests ``nn.BatchNorm2d``); the re-initialisation covers every conv
dimensionality and every affine norm (zcproxy's ``gaussian_init_``).  A fresh copy's
BatchNorm running statistics are reset before the first repeat, since ZenNAS scores freshly
built networks (``gaussian_init=False`` keeps weights and statistics as given).  Draws come
from one CPU generator seeded with the context seed (weights, then x, then ε, per repeat).
Δ = 0 (the features do not depend on the input, e.g. a NAS-Bench-201 cell with no path from
input to output) gives −inf with the reason; ZenNAS returns log 0 = −inf there as well.

Published NAS-Bench-201 numbers depend on the population scored, not on this recipe: VKDNW's
Table 1 (CIFAR-10 Kendall τ 0.102, Spearman ρ 0.103) is, by its FLOPs row (τ 0.623, against
0.578 over all 15,625 cells and 0.620 over one cell per graph left after pruning dead edges,
8,765 graphs), computed on de-duplicated architectures; their ``paper_preparation.ipynb``
also holds a zen run over all 15,625 cells at τ 0.244 / ρ 0.321.  This implementation gives
τ 0.30 on 100 uniformly drawn cells and τ 0.14 on 100 drawn from the de-duplicated ones.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..context import ProxyContext
from ..registry import ProxyOptionError, ProxyUndefined, register_proxy
from ..surgery import Recipe, gaussian_init_

ADAPTIVE_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                  nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


def resolve_features(net: nn.Module, features: str) -> str:
    if features != "auto":
        return features
    if any(isinstance(m, ADAPTIVE_POOLS) for m in net.modules()):
        return "pool_input"
    if any(isinstance(m, nn.Linear) for m in net.modules()):
        return "linear_input"
    return "output"


def feature_map(ctx: ProxyContext, net: nn.Module, x: torch.Tensor, features: str
                ) -> torch.Tensor:
    """The tensor ``features`` names (see the module docstring) for input ``x``."""
    return features_after(ctx, net, x, features)[0]


def features_after(ctx: ProxyContext, net: nn.Module, x: torch.Tensor, features: str,
                   watch: Sequence[nn.Module] = ()) -> tuple[torch.Tensor, list[nn.Module]]:
    """The tensor ``features`` names for input ``x``, and the modules of ``watch`` whose forward
    ran before that tensor was taken (in ``watch`` order)."""
    ran: list[int] = []  # ids of watched modules, in call order
    watch_hooks = [m.register_forward_hook(lambda m, _i, _o: ran.append(id(m))) for m in watch]
    try:
        if features == "output":
            out = ctx.forward(net, x)
            return out, [m for m in watch if id(m) in set(ran)]
        if features == "pool_input":
            modules, take_input = [m for m in net.modules() if isinstance(m, ADAPTIVE_POOLS)], True
        elif features == "linear_input":
            modules, take_input = [m for m in net.modules() if isinstance(m, nn.Linear)], True
        else:
            named = dict(net.named_modules())
            if features not in named:
                # a submodule name may exist in one network and not another: this network's failure
                raise ValueError(f"features must be 'auto', 'pool_input', 'linear_input', "
                                 f"'output' or a submodule name; {type(net).__name__} has no "
                                 f"{features!r}")
            modules, take_input = [named[features]], False
        if not modules:
            raise ValueError(f"features={features!r}: {type(net).__name__} has no such module")
        seen: list[tuple[torch.Tensor, int]] = []

        def hook(_module, inputs, output):
            seen.append((inputs[0] if take_input else output, len(ran)))

        handles = [m.register_forward_hook(hook) for m in modules]
        try:
            ctx.forward(net, x)
        finally:
            for h in handles:
                h.remove()
        if not seen:
            raise ValueError(f"features={features!r}: no such module ran in the forward pass")
        tensor, calls = seen[-1]
        before = set(ran[:calls])
        return tensor, [m for m in watch if id(m) in before]
    finally:
        for h in watch_hooks:
            h.remove()


@register_proxy("zen", higher_is_better=True,
                description="Zen-score: log of the pre-GAP feature change under a small input "
                            "perturbation + Σ log BN scale (Lin et al. 2021)")
def zen(ctx: ProxyContext, *, batch_size: int = 64, repeats: int = 1, mixup_gamma: float = 1e-2,
        train: bool = True, features: str = "auto", gaussian_init: bool = True) -> float:
    if batch_size < 1 or repeats < 1:
        raise ProxyOptionError("batch_size and repeats must be positive")
    net = ctx.prepared(Recipe(train=train), shared=False)
    features = resolve_features(net, features)
    gen = torch.Generator().manual_seed(ctx.seed)
    shape = (batch_size, *ctx.shape())
    norms = [m for m in net.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None]
    scores = []
    for r in range(repeats):
        if gaussian_init:
            gaussian_init_(net, gen, reset_running_stats=(r == 0))
        x = torch.randn(shape, generator=gen)
        noise = torch.randn(shape, generator=gen)
        mixed = (x + mixup_gamma * noise).to(ctx.device, ctx.model_dtype)
        with torch.no_grad():
            f, counted = features_after(ctx, net, x.to(ctx.device, ctx.model_dtype), features,
                                        norms)
            f_mixed, counted_mixed = features_after(ctx, net, mixed, features, norms)
            delta = float((f - f_mixed).abs().reshape(batch_size, -1).sum(1).mean())
        if delta == 0.0:
            raise ProxyUndefined("the features do not change when the input does (they do not "
                                 "depend on the input): log 0", value=-math.inf)
        if not math.isfinite(delta):
            raise ProxyUndefined(f"the feature difference is {delta} (overflow)")
        ids = {id(m) for m in counted + counted_mixed}
        bn = sum(math.log(math.sqrt(float(m.running_var.mean()))) for m in norms if id(m) in ids)
        scores.append(math.log(delta) + bn)
    return sum(scores) / len(scores)
