"""Zen-score (Lin et al., "Zen-NAS", ICCV 2021): how strongly the pre-pooling features react
to a small perturbation of a Gaussian input, corrected for BatchNorm's rescaling.

Follows idstcv/ZenNAS ``ZeroShotProxy/compute_zen_score.py`` (``compute_nas_score``):

    re-initialise: conv/linear weights ~ N(0, 1), biases 0, norm scales 1 / shifts 0
    x ~ N(0, 1), ε ~ N(0, 1) of shape (batch_size, *input shape), BN in train mode
    Δ = mean over the batch of Σ |F(x) − F(x + γ·ε)|,     γ = mixup_gamma = 1e-2
    score = log Δ + Σ over BatchNorm layers of log √(mean of running_var)

averaged over ``repeats`` draws; the running variances are the ones the forward passes left
(both passes of every repeat update them; ZenNAS never resets them between repeats, and
neither does this).  Defaults are the ones ZenNAS's own search uses (``evolution_search.py``:
``repeat=1``, ``--batch_size 64`` in its CIFAR scripts; NASLib's ``zen.py`` also repeats once);
its stand-alone command line uses ``--repeat_times 32 --batch_size 16``.

F is "the network before global average pooling" (ZenNAS's ``forward_pre_GAP``; NASLib's
NB201 graph hooks the input of ``AdaptiveAvgPool2d``).  For a generic model, ``features``:

* ``"auto"`` (default): ``"pool_input"`` if the model has an adaptive pooling module, else
  ``"linear_input"`` if it has a linear layer, else ``"output"``;
* ``"pool_input"``: the input of the last adaptive pooling module applied in the forward pass
  (the global pool comes after any squeeze-excitation pools);
* ``"linear_input"``: the input of the last ``nn.Linear`` applied (already pooled if the model
  pools functionally);
* ``"output"``: the selected model output;
* any other string: the output of the submodule of that qualified name.

Choices: a fresh copy's BatchNorm running statistics are reset before the first repeat, since
ZenNAS scores freshly built networks (``gaussian_init=False`` keeps weights and statistics as
given).  Draws come from one CPU generator seeded with the context seed (weights, then x, then
ε, per repeat).  Δ = 0 (the features do not depend on the input) gives −inf with the reason.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..context import ProxyContext
from ..registry import ProxyUndefined, register_proxy
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
    if features == "output":
        return ctx.forward(net, x)
    if features == "pool_input":
        modules, take_input = [m for m in net.modules() if isinstance(m, ADAPTIVE_POOLS)], True
    elif features == "linear_input":
        modules, take_input = [m for m in net.modules() if isinstance(m, nn.Linear)], True
    else:
        named = dict(net.named_modules())
        if features not in named:
            raise ValueError(f"features must be 'auto', 'pool_input', 'linear_input', 'output' "
                             f"or a submodule name; {type(net).__name__} has no {features!r}")
        modules, take_input = [named[features]], False
    if not modules:
        raise ValueError(f"features={features!r}: {type(net).__name__} has no such module")
    seen: list[torch.Tensor] = []

    def hook(_module, inputs, output):
        seen.append(inputs[0] if take_input else output)

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        ctx.forward(net, x)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError(f"features={features!r}: no such module ran in the forward pass")
    return seen[-1]


@register_proxy("zen", higher_is_better=True,
                description="Zen-score: log of the pre-GAP feature change under a small input "
                            "perturbation + Σ log BN scale (Lin et al. 2021)")
def zen(ctx: ProxyContext, *, batch_size: int = 64, repeats: int = 1, mixup_gamma: float = 1e-2,
        train: bool = True, features: str = "auto", gaussian_init: bool = True) -> float:
    if batch_size < 1 or repeats < 1:
        raise ValueError("batch_size and repeats must be positive")
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
        mixed = (x + mixup_gamma * noise).to(ctx.device)
        with torch.no_grad():
            f = feature_map(ctx, net, x.to(ctx.device), features)
            f_mixed = feature_map(ctx, net, mixed, features)
            delta = float((f - f_mixed).abs().reshape(batch_size, -1).sum(1).mean())
        if delta == 0.0:
            raise ProxyUndefined("the features do not change when the input does (they do not "
                                 "depend on the input): log 0", value=-math.inf)
        if not math.isfinite(delta):
            raise ProxyUndefined(f"the feature difference is {delta} (overflow)")
        bn = sum(math.log(math.sqrt(float(m.running_var.mean()))) for m in norms)
        scores.append(math.log(delta) + bn)
    return sum(scores) / len(scores)
