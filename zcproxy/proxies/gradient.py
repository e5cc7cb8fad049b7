"""Gradient-of-loss proxies from the zero-cost-NAS literature (Abdelfattah et al., ICLR 2021).

Both take one cross-entropy backward pass on a real labelled batch, in train mode as the
reference code does: grad_norm = Σ over layers of ‖∂L/∂W‖₂; SNIP (Lee et al., 2019) =
Σ|W ⊙ ∂L/∂W| over conv and linear weights.  The pass (:func:`loss_pass`) is shared with plain,
fisher and GraSP (their own modules), so it also records Fisher's per-channel taps.

Which weights: every convolution (1-, 2- and 3-d, transposed too) and linear layer
(:func:`zcproxy.surgery.weight_modules`), where NASLib counts ``nn.Conv2d`` and ``nn.Linear``
only (the same on the benchmarks' networks).  A frozen weight (``requires_grad=False``) has no
gradient and is left out of grad_norm's, SNIP's and plain's sums (NASLib's grad_norm and plain
too; its SNIP differentiates a mask instead, so it counts frozen weights); Fisher reads each
layer's output gradient, so it counts a frozen layer, here as in NASLib.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..context import ProxyContext
from ..registry import ProxyOptionError, ProxyUndefined, register_proxy
from ..surgery import Recipe, kaiming_normal_init_, weight_modules


NO_TRAINABLE_PARAMETER = ("no parameter that requires grad reaches the differentiated value (the "
                          "model is frozen), so there is no gradient to measure")
CONSTANT_OUTPUT = ("the network's output is the same for every input of the batch (it does not "
                   "depend on the input), so its loss gradients say nothing about the data")


def trainable_value(value: torch.Tensor) -> torch.Tensor:
    """``value``, to differentiate; undefined with the reason when no parameter that requires
    grad reaches it (a frozen model), where autograd's own error names no cause."""
    if not value.requires_grad:
        raise ProxyUndefined(NO_TRAINABLE_PARAMETER)
    return value


def outputs_identical(out: torch.Tensor) -> bool:
    """True if every row of a batched output equals the first (exactly), for a batch of ≥ 2."""
    return out.shape[0] >= 2 and bool((out.detach() == out.detach()[:1]).all())


class LossPass(NamedTuple):
    """One cross-entropy backward on the real batch, shared by grad_norm, snip, plain, fisher
    and GraSP's first pass.  Lists follow ``weight_modules`` order (None: no gradient)."""

    weights: list[torch.Tensor]
    grads: list[torch.Tensor | None]
    # Per output channel, summed over the module's applications: 0.5 · mean over samples of
    # (Σ over positions of z·∂L/∂z)², z the module's output (NASLib's fisher.py).
    fisher: list[torch.Tensor | None]
    constant_output: bool


def defined_loss_pass(ctx: ProxyContext, *, train: bool = True) -> LossPass:
    """:func:`loss_pass` for the proxies that are undefined (NaN with the reason) when the
    network's output does not depend on its input (fisher, plain, GraSP)."""
    p = loss_pass(ctx, train=train)
    if p.constant_output:
        raise ProxyUndefined(CONSTANT_OUTPUT)
    return p


def _channel_fisher(module: nn.Module, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    # Conv outputs are (N, C, *positions); linear outputs (N, *positions, C).
    if isinstance(module, nn.Linear):
        z, g = z.movedim(-1, 1), g.movedim(-1, 1)
    per_sample = (z * g).reshape(z.shape[0], z.shape[1], -1).sum(-1)
    return per_sample.pow(2).mean(0).mul(0.5)


def loss_pass(ctx: ProxyContext, *, train: bool = True) -> LossPass:
    """The shared backward (memoised per context and BN mode)."""
    def compute() -> LossPass:
        x, y = ctx.data(need_targets=True)
        net = ctx.prepared(Recipe(train=train), shared=False)
        modules = list(weight_modules(net))
        fisher: list[torch.Tensor | None] = [None] * len(modules)

        def tap(index: int):
            def forward_hook(module, _inputs, out):
                if not (isinstance(out, torch.Tensor) and out.requires_grad):
                    return None
                z = out.detach()

                def on_grad(g):
                    f = _channel_fisher(module, z, g.detach())
                    fisher[index] = f if fisher[index] is None else fisher[index] + f
                out.register_hook(on_grad)
                # Later layers see a copy, so an in-place op after the layer (a ReLU(inplace))
                # cannot overwrite z; the copy's backward passes gradients through unchanged.
                return out.clone()
            return forward_hook

        handles = [m.register_forward_hook(tap(i)) for i, m in enumerate(modules)]
        try:
            out = ctx.forward(net, x)
            trainable_value(F.cross_entropy(out, y)).backward()
        finally:
            for h in handles:
                h.remove()
        return LossPass([m.weight.detach() for m in modules],
                        [None if m.weight.grad is None else m.weight.grad.detach()
                         for m in modules], fisher, outputs_identical(out))
    return ctx.memo(("loss-pass", train), compute)


def _loss_grads(ctx: ProxyContext, train: bool = True
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    p = loss_pass(ctx, train=train)
    return [(w, g) for w, g in zip(p.weights, p.grads) if g is not None]


GRAD_NORM_RECIPES = ("abdelfattah", "zennas")


@register_proxy("grad_norm", needs_data=True,
                reads_images_with=lambda options: options.get("recipe") != "zennas",
                description="grad_norm: Σ per-layer L2 norm of the loss gradient "
                            "(Abdelfattah et al. 2021)")
def grad_norm(ctx: ProxyContext, *, recipe: str = "abdelfattah", batch_size: int = 64,
              train: bool = True) -> float:
    """``recipe="abdelfattah"`` (default): Σ over conv and linear layers of ‖∂L/∂W‖₂ on the
    real labelled batch (SamsungLabs/zero-cost-nas ``foresight/pruners/measures/grad_norm.py``,
    NASLib's ``grad_norm.py``).

    ``recipe="zennas"``: the GradNorm that AZ-NAS and VKDNW rank (cvlab-yonsei/AZ-NAS and
    ondratybl/VKDNW ``NB201/ZeroShotProxy/compute_gradnorm_score.py``, from ZenNAS): the copy
    re-initialised He-normal (fan-in, biases 0, norms 1/0), ``batch_size`` standard-normal
    inputs with uniformly random labels, cross-entropy, and one global norm
    √(Σ over *every* parameter of ‖∂L/∂θ‖²), BatchNorm's and biases included.  It reads no
    image, which is why its published figures sit far below the authors' recipe.

    Both recipes run BatchNorm in train mode, as their code does; ``train=False`` for eval mode.
    """
    if recipe == "abdelfattah":
        return float(sum(g.norm() for _, g in _loss_grads(ctx, train)))
    if recipe != "zennas":
        raise ProxyOptionError(f"recipe must be one of {', '.join(GRAD_NORM_RECIPES)}, "
                               f"not {recipe!r}")
    net = ctx.prepared(Recipe(train=train), shared=False)
    gen = torch.Generator().manual_seed(ctx.seed)
    kaiming_normal_init_(net, gen, mode="fan_in")
    x = torch.randn((batch_size, *ctx.shape()), generator=gen).to(ctx.device)
    out = ctx.forward(net, x)
    y = torch.randint(0, out.shape[-1], (batch_size,), generator=gen).to(ctx.device)
    trainable_value(F.cross_entropy(out, y)).backward()
    squares = [p.grad.detach().double().pow(2).sum() for p in net.parameters()
               if p.grad is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0


@register_proxy("snip", needs_data=True,
                description="SNIP: Σ|θ·∂L/∂θ| on a labelled batch (Lee et al. 2019)")
def snip(ctx: ProxyContext, *, train: bool = True) -> float:
    """Σ over conv and linear weights of |W ⊙ ∂L/∂W|, from the pass grad_norm shares
    (SamsungLabs/zero-cost-nas ``foresight/pruners/measures/snip.py``, which differentiates a
    weight mask at 1: the same number; NASLib's ``snip.py``), in train mode unless
    ``train=False``."""
    return float(sum((w * g).abs().sum() for w, g in _loss_grads(ctx, train)))
