"""AZ-NAS's four components (Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network
Architecture Search", CVPR 2024), each a proxy of its own.

AZ-NAS ranks a population by Σ_components log(rank / N): that aggregate needs the population
and lives in ``zcproxy.ensemble``, not here.  Every component is higher-is-better (the
aggregate ranks each one ascending).

Recipe (cvlab-yonsei/AZ-NAS, ``NB201/ZeroShotProxy/compute_az_nas_score.py``, driven by
``NB201/tss_general.ipynb``): re-initialise conv/linear weights He-normal (fan-in, ReLU gain,
zero biases, norm scales 1 and shifts 0), train mode (batch statistics), one batch of 64
Gaussian N(0, 1) inputs at the data resolution; collect the feature maps F_0..F_L "at block
outputs": on NAS-Bench-201 (``custom/tss_model.py`` ``extract_cell_features``) F_0 is the stem
output and F_1..F_17 the outputs of the 15 cells and 2 residual reduction blocks.

* ``az_expressivity``: for each F_l (B, C, H, W), the covariance of its B·H·W C-dim vectors;
  with p = eigenvalues / their sum, the entropy Σ -p log(p + 1e-8); summed over l.
* ``az_progressivity``: min over l of (entropy of F_l - entropy of F_{l-1}).
* ``az_trainability``: for each consecutive pair, back-propagate a Rademacher (±1) gradient
  g_out from F_l to F_{l-1} (g_in); if the resolution halves, g_in is pixel-unshuffled to
  F_l's; with M = g_inᵀ g_out / (B·H·W) and σ its largest singular value, the pair scores
  -σ - 1/(σ + 1e-6) + 2 (0 at σ = 1, spectral-norm preservation); the mean over pairs.  A
  block that passes the gradient on unchanged (g_in == g_out: an identity cell) scores -inf,
  deliberately, in the official code.
* ``az_complexity``: FLOPs (the official notebook takes the benchmark's FLOPs); here torch's
  FLOP counter on one input, the same number as the ``n_flops`` baseline.

Blocks in a generic network: zcproxy follows the main path ("trunk") from the input: starting
from the input tensor, the outermost module called on the current tensor (after the previous
trunk module returned) is the next trunk module and its output the next current tensor; an
``nn.Sequential`` whose children are all composite (a stage of blocks, as in ResNet's
``layer1``) is entered instead of taken whole.  Trunk modules made only of normalisation,
activation, pooling, dropout, flatten or identity layers (NATS's ``lastact``, the global
pooling) are not blocks; the walk ends at the first module output that is not a tensor or
when a functional step (``flatten``) breaks the chain.  Feature maps are the block outputs
with 3 (tokens: B, L, C) or 4 (B, C, H, W) dimensions.  On a NATS network this gives exactly
the official 18 maps (stem, 17 cells/blocks); ``blocks=("stem", "cells.0", ...)`` names them
explicitly for networks where the walk finds something else.

Options: ``init="none"`` keeps the model's weights, ``use_inputs=True`` feeds the caller's
batch instead of Gaussian noise (both for checking values by hand); ``batch_size`` (64) is the
noise batch.

Undefined: a feature map that is constant over the batch (after a NAS-Bench-201 cell whose
output does not depend on its input, every later map is 0) has a zero covariance and p = 0/0;
the official code turns the resulting NaN into -inf.  zcproxy raises ProxyUndefined(-inf) for
expressivity and progressivity naming the block, and also for trainability when some block
is an identity.  Small negative eigenvalues from rounding are clipped to 0 (float64).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..context import ProxyContext, ProxyInputError
from ..registry import ProxyUndefined, register_proxy
from ..surgery import Recipe, is_activation, is_norm, kaiming_normal_init_
from .structural import trace_structure

_PASSIVE = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
            nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
            nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten)


def _is_passive(module: nn.Module) -> bool:
    """Made only of normalisation, activation, pooling, dropout, flatten or identity layers."""
    leaves = [m for m in module.modules() if not list(m.children())]
    return bool(leaves) and all(is_norm(m) or is_activation(m) or isinstance(m, _PASSIVE)
                                for m in leaves) and all(
        type(m) is nn.Sequential or not list(m.children()) for m in module.modules())


def _is_stage(module: nn.Module) -> bool:
    children = list(module.children())
    return type(module) is nn.Sequential and bool(children) and all(
        list(c.children()) for c in children)


@dataclass
class _Call:
    name: str
    module: nn.Module
    start: int
    end: int = -1
    input: object = None
    output: object = None


def trunk_blocks(net: nn.Module, run) -> list[tuple[str, int]]:
    """(module name, occurrence) of the blocks on the main path; ``run()`` does one forward."""
    calls: list[_Call] = []
    open_calls: dict[int, list[_Call]] = {}
    counter = [0]

    def pre(name):
        def hook(module, args):
            counter[0] += 1
            call = _Call(name, module, counter[0], input=args[0] if args else None)
            calls.append(call)
            open_calls.setdefault(id(module), []).append(call)
        return hook

    def post(_name):
        def hook(module, _args, output):
            counter[0] += 1
            call = open_calls[id(module)].pop()
            call.end, call.output = counter[0], output
        return hook

    handles = []
    for name, m in net.named_modules():
        handles.append(m.register_forward_pre_hook(pre(name)))
        handles.append(m.register_forward_hook(post(name)))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    root = calls[0]
    occurrence: dict[str, int] = {}
    index = {}
    for c in calls:
        index[id(c)] = occurrence.get(c.name, 0)
        occurrence[c.name] = index[id(c)] + 1
    trunk: list[_Call] = []
    current, after = root.input, root.start
    while isinstance(current, torch.Tensor):
        candidates = [c for c in calls if c is not root and c.start > after
                      and c.input is current and c.end > 0]
        if not candidates:
            break
        depth = lambda c: (c.name.count(".") + 1, c.start)  # noqa: E731
        pick = min(candidates, key=depth)
        while _is_stage(pick.module):
            inner = [c for c in candidates if c.name.startswith(pick.name + ".")]
            if not inner:
                break
            pick = min(inner, key=depth)
        trunk.append(pick)
        current, after = pick.output, pick.end
    return [(c.name, index[id(c)]) for c in trunk
            if not _is_passive(c.module) and isinstance(c.output, torch.Tensor)
            and c.output.dim() in (3, 4)]


def block_features(ctx: ProxyContext, net: nn.Module, x: torch.Tensor,
                   blocks: tuple[str, ...] | None = None) -> list[tuple[str, torch.Tensor]]:
    """The block outputs of one forward pass of ``x``, in the autograd graph."""
    if blocks is None:
        with torch.no_grad():
            wanted = trunk_blocks(net, lambda: ctx.forward(net, x))
    else:
        wanted = [(b, 0) for b in blocks]
    modules = dict(net.named_modules())
    missing = [b for b, _ in wanted if b not in modules]
    if missing:
        raise ProxyInputError(f"no module named {missing[0]!r} in {type(net).__name__}")
    seen: dict[str, int] = {}
    found: list[tuple[str, int, torch.Tensor]] = []

    def hook_for(name):
        def hook(_module, _args, output):
            k = seen.get(name, 0)
            seen[name] = k + 1
            if (name, k) in wanted_set and isinstance(output, torch.Tensor):
                found.append((name, k, output))
                return output.clone()  # later in-place ops must not change the kept map
        return hook

    wanted_set = set(wanted)
    handles = [modules[name].register_forward_hook(hook_for(name))
               for name in {b for b, _ in wanted}]
    try:
        ctx.forward(net, x)
    finally:
        for h in handles:
            h.remove()
    order = {key: i for i, key in enumerate(wanted)}
    found.sort(key=lambda f: order[(f[0], f[1])])
    feats = [(name if k == 0 else f"{name}#{k}", t) for name, k, t in found]
    if len(feats) < 2:
        raise ProxyInputError(
            f"AZ-NAS needs at least 2 block feature maps, found {len(feats)} on "
            f"{type(net).__name__}; name them with blocks=(...)")
    return feats


def _vectors(t: torch.Tensor) -> torch.Tensor:
    """(B·H·W, C) for (B, C, H, W) maps, (B·L, C) for (B, L, C) tokens."""
    if t.dim() == 4:
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    return t.reshape(-1, t.shape[-1])


def spectral_entropy(t: torch.Tensor) -> float:
    """Entropy of the normalised eigenvalues of the covariance of the map's channel vectors."""
    v = _vectors(t.detach()).to(torch.float64)
    v = v - v.mean(dim=0, keepdim=True)
    cov = v.T @ v / v.shape[0]
    s = torch.linalg.eigvalsh(cov).clamp_min(0.0)
    p = s / s.sum()
    return float((-p * torch.log(p + 1e-8)).sum())


def pair_trainability(f_in: torch.Tensor, f_out: torch.Tensor, gen: torch.Generator) -> float:
    g_out = (torch.randint(0, 2, f_out.shape, generator=gen) * 2 - 1).to(f_out)
    g_in, = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True, allow_unused=True)
    if g_in is None:
        g_in = torch.zeros_like(f_in)
    if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
        return float("-inf")
    if f_out.dim() == 4 and g_in.shape[2:] != g_out.shape[2:]:
        stride = g_in.shape[2] // g_out.shape[2]
        if stride < 1 or g_in.shape[2] != stride * g_out.shape[2] \
                or g_in.shape[3] != stride * g_out.shape[3]:
            raise ProxyInputError(f"AZ-NAS trainability: cannot match a {tuple(g_in.shape)} map "
                                  f"to a {tuple(g_out.shape)} one")
        g_in = nn.functional.pixel_unshuffle(g_in, stride)
    elif g_in.shape[:-1] != g_out.shape[:-1]:
        raise ProxyInputError(f"AZ-NAS trainability: cannot match a {tuple(g_in.shape)} map "
                              f"to a {tuple(g_out.shape)} one")
    a, b = _vectors(g_in).to(torch.float64), _vectors(g_out).to(torch.float64)
    sigma = float(torch.linalg.svdvals(a.T @ b / a.shape[0]).max())
    return -sigma - 1.0 / (sigma + 1e-6) + 2.0


def az_components(ctx: ProxyContext, *, batch_size: int = 64, init: str = "kaiming_fan_in",
                  blocks: tuple[str, ...] | None = None, use_inputs: bool = False
                  ) -> dict[str, object]:
    """Per-block entropies and per-pair trainabilities, memoised per context and settings."""
    blocks = None if blocks is None else tuple(blocks)

    def compute():
        net = ctx.prepared(Recipe(train=True), shared=False)
        gen = torch.Generator().manual_seed(ctx.seed)
        if init == "kaiming_fan_in":
            kaiming_normal_init_(net, gen, mode="fan_in")
        elif init != "none":
            raise ValueError(f"init must be 'kaiming_fan_in' or 'none', not {init!r}")
        if use_inputs:
            x = ctx.data(min_batch=1)[0].detach().clone()
        else:
            x = torch.randn((batch_size, *ctx.shape()), generator=gen).to(ctx.device)
        x.requires_grad_(True)  # keeps every map in the graph even with frozen weights
        feats = block_features(ctx, net, x, blocks)
        entropies = [(name, spectral_entropy(t)) for name, t in feats]
        pairs = []
        for (_, f_in), (name, f_out) in reversed(list(zip(feats, feats[1:]))):
            pairs.append((name, pair_trainability(f_in, f_out, gen)))
        return {"entropies": entropies, "trainability": pairs}
    return ctx.memo(("az-nas", batch_size, init, blocks, use_inputs), compute)


def _entropies(ctx, **options) -> list[tuple[str, float]]:
    entropies = az_components(ctx, **options)["entropies"]
    for name, h in entropies:
        if not math.isfinite(h):
            raise ProxyUndefined(f"the feature map of {name!r} is constant over the batch "
                                 "(zero covariance: its spectrum is 0/0)", float("-inf"))
    return entropies


@register_proxy("az_expressivity", higher_is_better=True,
                description="AZ-NAS expressivity: Σ over blocks of the spectral entropy of the "
                            "feature covariance (Lee & Ham 2024)")
def az_expressivity(ctx: ProxyContext, *, batch_size: int = 64, init: str = "kaiming_fan_in",
                    blocks: tuple[str, ...] | None = None, use_inputs: bool = False) -> float:
    return sum(h for _, h in _entropies(ctx, batch_size=batch_size, init=init, blocks=blocks,
                                        use_inputs=use_inputs))


@register_proxy("az_progressivity", higher_is_better=True,
                description="AZ-NAS progressivity: smallest increase of the spectral entropy "
                            "from one block to the next (Lee & Ham 2024)")
def az_progressivity(ctx: ProxyContext, *, batch_size: int = 64, init: str = "kaiming_fan_in",
                     blocks: tuple[str, ...] | None = None, use_inputs: bool = False) -> float:
    h = [v for _, v in _entropies(ctx, batch_size=batch_size, init=init, blocks=blocks,
                                  use_inputs=use_inputs)]
    return min(b - a for a, b in zip(h, h[1:]))


@register_proxy("az_trainability", higher_is_better=True,
                description="AZ-NAS trainability: mean over blocks of -σ - 1/σ + 2, σ the "
                            "spectral norm of the block's gradient map (Lee & Ham 2024)")
def az_trainability(ctx: ProxyContext, *, batch_size: int = 64, init: str = "kaiming_fan_in",
                    blocks: tuple[str, ...] | None = None, use_inputs: bool = False) -> float:
    pairs = az_components(ctx, batch_size=batch_size, init=init, blocks=blocks,
                          use_inputs=use_inputs)["trainability"]
    for name, v in pairs:
        if v == float("-inf"):
            raise ProxyUndefined(f"block {name!r} passes gradients on unchanged (an identity "
                                 "block; AZ-NAS scores it -inf)", float("-inf"))
    values = [v for _, v in pairs]
    if not all(math.isfinite(v) for v in values):
        raise ProxyUndefined("a block's gradient map is not finite", float("-inf"))
    return sum(values) / len(values)


@register_proxy("az_complexity", higher_is_better=True,
                description="AZ-NAS complexity: FLOPs of one input (Lee & Ham 2024)")
def az_complexity(ctx: ProxyContext) -> float:
    return float(trace_structure(ctx).flops)
