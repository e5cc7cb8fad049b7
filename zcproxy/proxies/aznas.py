"""AZ-NAS's four components (Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network
Architecture Search", CVPR 2024), each a proxy of its own.

AZ-NAS ranks a population by Σ_components log(rank / N): that aggregate needs the population
and lives in ``zcproxy.ensemble``, not here.  Every component is higher-is-better (the
aggregate ranks each one ascending).

Recipe (cvlab-yonsei/AZ-NAS, ``NB201/ZeroShotProxy/compute_az_nas_score.py``, driven by
``NB201/tss_general.ipynb``): re-initialise conv/linear weights He-normal (fan-in, ReLU gain,
zero biases, norm scales 1 and shifts 0, BatchNorm running statistics reset), train mode
(batch statistics; ``train=False`` for eval mode, running statistics), one batch of 64
Gaussian N(0, 1) inputs at the data resolution; collect the feature maps F_0..F_L "at block
outputs": on NAS-Bench-201 (``custom/tss_model.py`` ``extract_cell_features``) F_0 is the stem
output and F_1..F_17 the outputs of the 15 cells and 2 residual reduction blocks.

* ``az_expressivity``: for each F_l (B, C, H, W), the covariance of its B·H·W C-dim vectors;
  with p = eigenvalues / their sum, the entropy Σ -p log(p + 1e-8); summed over l.
* ``az_progressivity``: min over l of (entropy of F_l - entropy of F_{l-1}).
* ``az_trainability``: for each consecutive pair, back-propagate a Rademacher (±1) gradient
  g_out from F_l to F_{l-1} (g_in); if the resolution shrinks by a stride s, g_in is
  pixel-unshuffled (s x s neighbourhoods stacked as channels) to F_l's resolution; with
  M = g_inᵀ g_out / (B·H·W) (C_in·s² x C_out: the widths may differ) and σ its largest
  singular value, the pair scores -σ - 1/(σ + 1e-6) + 2 (0 at σ = 1, spectral-norm
  preservation); the mean over pairs.  A block that passes the gradient on unchanged
  (g_in == g_out: an identity cell) scores -inf, deliberately, in the official code.
* ``az_complexity``: FLOPs (the official notebook takes the benchmark's FLOPs); here torch's
  FLOP counter on one input, the same number as the ``n_flops`` baseline.

The MobileNetV2 space (``ImageNet_MBV2/ZeroShotProxy/compute_az_nas_score.py``, maps after
every block of ``Masternet.extract_layer_features_and_logit``) scores pairs the same way:
consecutive maps that change width at the same resolution (MobileNet blocks, the final 1x1
conv) give a rectangular M, never skipped; a stride s is taken as int(H_in / H_out), which
there always divides exactly.

Blocks in a generic network: zcproxy follows the main path ("trunk") from the input: starting
from the input tensor, the outermost module called on the current tensor (after the previous
trunk module returned) is the next trunk module and its output the next current tensor.  When
no module takes the current tensor itself (a functional step such as adding a position
embedding or a class token, ``flatten``, a residual sum), the outermost module called
afterwards whose input is computed from it (found in the autograd graph) is the next one.
Stages are entered instead of taken whole: an ``nn.Sequential`` whose children are all
composite (ResNet's ``layer1``), and a module whose output is that of a child
``nn.Sequential`` of blocks (composite, none itself a Sequential), possibly through
normalisation/activation layers (a stage ``downsample -> blocks``, torchvision's ViT
``Encoder``; MobileViT's block, which refolds its inner transformer's output, is not one).
Trunk modules made only of normalisation, activation, pooling, dropout, flatten or identity
layers (NATS's ``lastact``) and parameter-free modules that only permute dimensions
(torchvision's Swin ``Permute``) are not blocks.  The walk ends at the global pooling (a
parameter-free module leaving one position), at the first output that is not a 3- or 4-dim
tensor, or when nothing depends on the current tensor (the walk is one forward of the first
2 samples with autograd on).  Feature maps are the block outputs:
(B, C, H, W) or tokens (B, L, C); on a NATS network this gives exactly the official 18 maps
(stem, 17 cells/blocks); ``blocks=("stem", "cells.0", ...)`` names them explicitly for
networks where the walk finds something else.

Channels of a 4-dim map are dim 1 unless the last conv/linear/norm layer run inside its block
is a linear or LayerNorm layer (one that acts on the last dimension) with the width of dim 3 and
not of dim 1 (timm's and torchvision's Swin keep (B, H, W, C)); a conv or BatchNorm there
always means dim 1, whatever its width (an NB101 cell may end in a 32-channel conv while its
concatenated output is 128 x 32 x 32; az_* version 1 took that map's width for its channels).
A 3-dim map is (B, C, L) when that layer is a convolution or norm whose own output is 3-dim
(a Conv1d or BatchNorm1d: channels in dim 1 even when L equals C, or when branches are
concatenated), unless its width is dim 2's and not dim 1's (a transpose inside the block); after
any other layer (a linear or LayerNorm, a Conv2d patch embedding flattened into tokens) it is
(B, L, C) unless that width is dim 1's only.  A Conv1d whose (B, C, L) output is transposed
inside its block with L == C cannot be told apart from shapes and is read (B, C, L).

Where the official code gives no rule, zcproxy generalises it as follows (choices of
zcproxy, not of the authors):

* a stride that does not divide the resolution (timm's ResNet-10t at 176 px: 11x11 -> 6x6,
  where the official int(11 / 6) = 1 would fail): s = ceil(H_in / H_out), g_in padded with
  zeros at the bottom/right to s·H_out x s·W_out, then unshuffled (padding rows add nothing
  to M, the normalisation stays B·H_out·W_out);
* transformers.  The official ViT code (``ImageNet_AutoFormer/lib/training_free/indicators/
  az_nas.py`` with ``model/autoformer_space.py`` ``extract_res_features``) takes two (B, N, C)
  maps per encoder layer (after the attention residual and after the MLP residual), all N
  tokens with the class token, no patch embedding; it scores in eval mode with the supernet's
  own weights, skips identity pairs and raises NotImplementedError when N changes.  zcproxy
  applies the NB201 recipe above to every network instead (train mode, He re-init; pass
  ``init="none"`` to keep the weights) and its blocks are module outputs, one map per
  transformer block as per CNN block: the patch embedding (the stem, F_0) and each block's
  output (timm ViT/DeiT ``blocks.i``, torchvision ViT ``encoder.layers.i``, LeViT's
  ``stages.i.downsample`` and ``stages.i.blocks.j``, Swin's blocks and patch mergings); the
  attention-residual midpoint is a functional sum no module returns.  Entropies use all
  tokens, class token included, as AutoFormer's.  A pair pairs the gradients position by
  position: a (B, C, H, W) map and (B, L, C) tokens with L = H·W are the same positions in
  row-major order; when the token count changes, tokens
  are read as a square grid after k leading prefix (class/distillation) tokens (the smallest
  k < √(L - k) making L - k a square; prefix tokens have no grid position and are left out
  of M), then matched as maps (equal grids, or a stride as above: LeViT's 14x14 -> 7x7 ->
  4x4 subsampling attention).  Pairs that still cannot be matched (an upsampling, tokens
  that form no square grid) make ``az_trainability`` NaN, naming the block.

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

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..context import ProxyContext, ProxyInputError
from ..registry import ProxyOptionError, ProxyUndefined, register_proxy
from ..surgery import Recipe, is_activation, is_norm, kaiming_normal_init_
from .structural import trace_structure

_PASSIVE = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
            nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
            nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten)
WALK_BATCH = 2  # samples of the forward that finds the blocks (train-mode BatchNorm needs 2)


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


def _is_block_stage(module: nn.Module) -> bool:
    """A Sequential of blocks: composite children, none a Sequential (conv-norm-act layers)."""
    children = list(module.children())
    return type(module) is nn.Sequential and bool(children) and all(
        list(c.children()) and not isinstance(c, nn.Sequential) for c in children)


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _width(module: nn.Module) -> int | None:
    """The channel count a conv, linear or normalisation layer produces, else None."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.batchnorm._NormBase):  # batch and instance norms
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return module.normalized_shape[0]
    return None


@dataclass
class _Call:
    name: str
    module: nn.Module
    start: int
    end: int = -1
    input: object = None
    output: object = None
    occurrence: int = 0

    @property
    def depth(self) -> tuple[int, int]:
        return self.name.count(".") + 1, self.start

    def contains(self, other: "_Call") -> bool:
        return self.start < other.start and other.end < self.end


@dataclass
class Block:
    """One feature map's module: its name, which call of it, and its channel dimension."""
    name: str
    occurrence: int
    channel_dim: int


def _record(net: nn.Module, run) -> list[_Call]:
    """Every module call of one forward (``run()``), in call order; grad on, so the walk can
    follow functional steps through the autograd graph."""
    calls: list[_Call] = []
    open_calls: dict[int, list[_Call]] = {}
    counter = [0]
    occurrence: dict[str, int] = {}

    def pre(name):
        def hook(module, args):
            counter[0] += 1
            call = _Call(name, module, counter[0], input=args[0] if args else None,
                         occurrence=occurrence.get(name, 0))
            occurrence[name] = call.occurrence + 1
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
        with torch.enable_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return calls


class _Descendants:
    """Whether a tensor was computed from ``source``, by its autograd graph."""

    def __init__(self, source: torch.Tensor):
        self.source = source
        self.target = source.grad_fn
        # Nodes are numbered in creation order: one made before the source's cannot lead to it.
        self.floor = self.target._sequence_nr() if self.target is not None else -1
        self.memo: dict[object, bool] = {}

    def __call__(self, t: object) -> bool:
        if t is self.source:
            return True
        if not isinstance(t, torch.Tensor) or t.grad_fn is None or not self.source.requires_grad:
            return False
        stack = [(t.grad_fn, False)]
        while stack:  # depth-first, each node's answer memoised
            node, expanded = stack.pop()
            if node in self.memo:
                continue
            if node is self.target or (self.target is None
                                       and getattr(node, "variable", None) is self.source):
                self.memo[node] = True
                continue
            nexts = [n for n, _ in node.next_functions
                     if n is not None and n._sequence_nr() >= self.floor]
            if expanded:
                self.memo[node] = any(self.memo.get(n, False) for n in nexts)
            else:
                stack.append((node, True))
                stack.extend((n, False) for n in nexts if n not in self.memo)
        return self.memo[t.grad_fn]


def _wraps_stage(call: _Call, calls: list[_Call]) -> bool:
    """Whether ``call``'s output is a child Sequential of blocks' output, possibly through
    passive modules (a stage ``downsample -> blocks``, a transformer encoder)."""
    prefix = call.name + "."
    for child in calls:
        if not (call.contains(child) and child.name.startswith(prefix)
                and "." not in child.name[len(prefix):] and _is_block_stage(child.module)):
            continue
        out, after = child.output, child.end
        while out is not call.output:
            nxt = [c for c in calls if c.start > after and call.contains(c) and c.input is out
                   and _is_passive(c.module)]
            if not nxt:
                break
            step = min(nxt, key=lambda c: c.start)
            out, after = step.output, step.end
        if out is call.output:
            return True
    return False


def _enterable(call: _Call, calls: list[_Call]) -> bool:
    return _is_stage(call.module) or (not _is_passive(call.module) and _wraps_stage(call, calls))


def _is_relayout(call: _Call) -> bool:
    """A parameter-free module whose output is its input with non-batch dims permuted."""
    x, y = call.input, call.output
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) \
            or x.dim() != y.dim() or x.dim() < 3 or _has_parameters(call.module):
        return False
    same = tuple(range(1, x.dim()))
    for perm in itertools.permutations(same):
        order = (0, *perm)
        if perm != same and tuple(x.shape[d] for d in order) == tuple(y.shape) \
                and torch.equal(x.detach().permute(order), y.detach()):
            return True
    return False


def _channel_dim(call: _Call, calls: list[_Call]) -> int:
    """Where a block's output keeps its channels (see the module doc)."""
    out = call.output
    width, last, layer = None, -1, None
    for c in calls:
        if c.start >= call.start and c.end <= call.end and c.end > last:
            w = _width(c.module)
            if w is not None:
                width, last, layer = w, c.end, c
    if out.dim() == 4:
        # Only a layer that acts on the last dimension can leave a map channels-last: a conv
        # or BatchNorm of 32 channels at the end of an NB101 cell whose 128-channel output is
        # 32 wide must not turn that map's width into its channels.
        last_dim = layer is not None and isinstance(layer.module, (nn.Linear, nn.LayerNorm))
        return 3 if last_dim and out.shape[3] == width != out.shape[1] else 1
    if layer is not None and _makes_channels_first_sequence(layer):
        # (B, C, L) even when L == C, or branches of it concatenated; dim 2 only where the
        # layer's width moved to the end (a transpose inside the block)
        return 2 if out.shape[2] == width != out.shape[1] else 1
    return 1 if width is not None and out.shape[1] == width != out.shape[2] else 2


def _makes_channels_first_sequence(call: _Call) -> bool:
    """A convolution or batch/instance/group norm whose own output is a 3-dim (B, C, L) map: a
    Conv1d or BatchNorm1d, not a Conv2d patch embedding flattened into tokens afterwards nor
    LeViT's norms on flattened (B·L, C) rows."""
    return isinstance(call.module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase,
                                    nn.GroupNorm)) \
        and isinstance(call.output, torch.Tensor) and call.output.dim() == 3


def _positions(t: torch.Tensor, channel_dim: int) -> int:
    return t[0].numel() // t.shape[channel_dim] if t.shape[0] else 0


def _is_global_pool(call: _Call, calls: list[_Call]) -> bool:
    """A parameter-free module that leaves one position of a map that had several."""
    x, y = call.input, call.output
    if _has_parameters(call.module) or not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        return False
    return _positions(y, _channel_dim(call, calls)) == 1 < min(
        _positions(x, d) for d in (1, x.dim() - 1))


def trunk_walk(calls: list[_Call]) -> list[tuple[_Call, int]]:
    """The blocks on the main path of a recorded forward, with their channel dimension."""
    root, trunk = calls[0], []
    done = [c for c in calls[1:] if c.end > 0]
    current, after = root.input, root.start
    while isinstance(current, torch.Tensor):
        later = sorted((c for c in done if c.start > after), key=lambda c: c.depth)
        pool = [c for c in later if c.input is current]
        if not pool:
            depends = _Descendants(current)
            pool = [c for c in later if depends(c.input)]
        if not pool:
            break
        pick = pool[0]
        while _enterable(pick, calls):
            inner = [c for c in pool if pick.contains(c) and c.name.startswith(pick.name + ".")]
            if not inner:
                break
            pick = inner[0]
        current, after = pick.output, pick.end
        if not isinstance(current, torch.Tensor) or current.dim() not in (3, 4) \
                or _is_global_pool(pick, calls):
            break
        if not _is_passive(pick.module) and not _is_relayout(pick):
            trunk.append((pick, _channel_dim(pick, calls)))
    return trunk


def trunk_blocks(net: nn.Module, run) -> list[tuple[str, int]]:
    """(module name, occurrence) of the blocks on the main path; ``run()`` does one forward."""
    return [(c.name, c.occurrence) for c, _ in trunk_walk(_record(net, run))]


def find_blocks(ctx: ProxyContext, net: nn.Module, x: torch.Tensor,
                blocks: tuple[str, ...] | None = None) -> list[Block]:
    """The feature-map blocks of ``net`` (the trunk walk, or the named modules' first calls),
    from a forward of the first ``WALK_BATCH`` samples of ``x``."""
    small = x[:WALK_BATCH].detach().clone().requires_grad_(True)
    calls = _record(net, lambda: ctx.forward(net, small))
    if blocks is None:
        return [Block(c.name, c.occurrence, dim) for c, dim in trunk_walk(calls)]
    modules = dict(net.named_modules())
    missing = [b for b in blocks if b not in modules]
    if missing:
        raise ProxyInputError(f"no module named {missing[0]!r} in {type(net).__name__}")
    first = {}
    for c in calls:
        first.setdefault(c.name, c)
    found = []
    for b in blocks:
        c = first.get(b)
        if c is not None and isinstance(c.output, torch.Tensor) and c.output.dim() in (3, 4):
            found.append(Block(b, 0, _channel_dim(c, calls)))
    return found


def block_features(ctx: ProxyContext, net: nn.Module, x: torch.Tensor,
                   blocks: tuple[str, ...] | None = None
                   ) -> list[tuple[str, torch.Tensor, int]]:
    """(name, output, channel dim) of the blocks in one forward pass of ``x``, in the autograd
    graph."""
    wanted = find_blocks(ctx, net, x, blocks)
    modules = dict(net.named_modules())
    seen: dict[str, int] = {}
    found: list[tuple[str, int, torch.Tensor]] = []
    wanted_set = {(b.name, b.occurrence) for b in wanted}

    def hook_for(name):
        def hook(_module, _args, output):
            k = seen.get(name, 0)
            seen[name] = k + 1
            if (name, k) in wanted_set and isinstance(output, torch.Tensor):
                found.append((name, k, output))
                return output.clone()  # later in-place ops must not change the kept map
        return hook

    handles = [modules[name].register_forward_hook(hook_for(name))
               for name in {b.name for b in wanted}]
    try:
        ctx.forward(net, x)
    finally:
        for h in handles:
            h.remove()
    dims = {(b.name, b.occurrence): b.channel_dim for b in wanted}
    order = {(b.name, b.occurrence): i for i, b in enumerate(wanted)}
    found.sort(key=lambda f: order[(f[0], f[1])])
    feats = [(name if k == 0 else f"{name}#{k}", t, dims[(name, k)]) for name, k, t in found]
    if len(feats) < 2:
        raise ProxyInputError(
            f"AZ-NAS needs at least 2 block feature maps, found {len(feats)} on "
            f"{type(net).__name__}; name them with blocks=(...)")
    return feats


def _channels_last(t: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """(B, H, W, C) for a 4-dim map, (B, L, C) for tokens."""
    if t.dim() == 3 and channel_dim != 1:
        return t
    return t.movedim(channel_dim, -1)


def _vectors(t: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """(B·H·W, C) for (B, C, H, W) maps, (B·L, C) for (B, L, C) tokens."""
    t = _channels_last(t, channel_dim)
    return t.reshape(-1, t.shape[-1])


def spectral_entropy(t: torch.Tensor, channel_dim: int = 1) -> float:
    """Entropy of the normalised eigenvalues of the covariance of the map's channel vectors."""
    v = _vectors(t.detach(), channel_dim).to(torch.float64)
    v = v - v.mean(dim=0, keepdim=True)
    cov = v.T @ v / v.shape[0]
    s = torch.linalg.eigvalsh(cov).clamp_min(0.0)
    p = s / s.sum()
    return float((-p * torch.log(p + 1e-8)).sum())


def _token_grid(length: int) -> tuple[int, int] | None:
    """(prefix tokens k, grid side s) with L = k + s², the smallest k < s; None if none."""
    for k in range(length):
        side = math.isqrt(length - k)
        if k >= side:
            return None
        if side * side == length - k:
            return k, side
    return None


def _as_grid(g: torch.Tensor) -> torch.Tensor | None:
    """A channels-last gradient as (B, H, W, C), prefix tokens dropped; None if no grid."""
    if g.dim() == 4:
        return g
    grid = _token_grid(g.shape[1])
    if grid is None:
        return None
    k, side = grid
    return g[:, k:].reshape(g.shape[0], side, side, g.shape[2])


def _align(g_in: torch.Tensor, g_out: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor] | str:
    """Channels-last gradients as (N, C_in') and (N, C_out) rows of the same positions, or why
    they cannot be matched."""
    pos_in, pos_out = tuple(g_in.shape[1:-1]), tuple(g_out.shape[1:-1])
    if pos_in == pos_out or (math.prod(pos_in) == math.prod(pos_out)
                             and 3 in (g_in.dim(), g_out.dim())):
        return g_in.reshape(-1, g_in.shape[-1]), g_out.reshape(-1, g_out.shape[-1])
    a, b = _as_grid(g_in), _as_grid(g_out)
    if a is None or b is None:
        tokens = g_in.shape[1] if a is None else g_out.shape[1]
        return (f"{tokens} tokens form no square grid (after at most a few prefix tokens) to "
                f"match {_describe(g_in)} with {_describe(g_out)}")
    (hi, wi), (ho, wo) = a.shape[1:3], b.shape[1:3]
    if (hi, wi) != (ho, wo):
        stride = -(-hi // ho) if ho else 0
        if not (0 < ho <= hi and 0 < wo <= wi and -(-wi // wo) == stride
                and -(-hi // stride) == ho and -(-wi // stride) == wo):
            return (f"cannot match a {hi}x{wi} grid with a {ho}x{wo} one (not a downsampling "
                    f"by an integer stride)")
        a = a.permute(0, 3, 1, 2)
        a = nn.functional.pad(a, (0, stride * wo - wi, 0, stride * ho - hi))
        a = nn.functional.pixel_unshuffle(a, stride).permute(0, 2, 3, 1)
    return a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])


def _describe(g: torch.Tensor) -> str:
    return ("tokens " if g.dim() == 3 else "a map ") + "x".join(map(str, g.shape))


def pair_trainability(f_in: torch.Tensor, f_out: torch.Tensor, gen: torch.Generator,
                      dim_in: int = 1, dim_out: int = 1) -> tuple[float, str]:
    """The pair's score and, if it is not finite, why."""
    g_out = (torch.randint(0, 2, f_out.shape, generator=gen) * 2 - 1).to(f_out)
    g_in, = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True, allow_unused=True)
    if g_in is None:
        g_in = torch.zeros_like(f_in)
    if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
        return float("-inf"), ("passes gradients on unchanged (an identity block; AZ-NAS "
                               "scores it -inf)")
    if g_in.shape[0] != g_out.shape[0]:
        return float("nan"), f"changes the batch dimension ({g_in.shape[0]} -> {g_out.shape[0]})"
    rows = _align(_channels_last(g_in, dim_in), _channels_last(g_out, dim_out))
    if isinstance(rows, str):
        return float("nan"), rows
    a, b = (r.to(torch.float64) for r in rows)
    sigma = float(torch.linalg.svdvals(a.T @ b / a.shape[0]).max())
    return -sigma - 1.0 / (sigma + 1e-6) + 2.0, ""


def az_components(ctx: ProxyContext, *, batch_size: int = 64, init: str = "kaiming_fan_in",
                  blocks: tuple[str, ...] | None = None, use_inputs: bool = False,
                  train: bool = True) -> dict[str, object]:
    """Per-block entropies and per-pair trainabilities, memoised per context and settings."""
    blocks = None if blocks is None else tuple(blocks)

    def compute():
        net = ctx.prepared(Recipe(train=train), shared=False)
        gen = torch.Generator().manual_seed(ctx.seed)
        if init == "kaiming_fan_in":
            kaiming_normal_init_(net, gen, mode="fan_in")
        elif init != "none":
            raise ProxyOptionError(f"init must be 'kaiming_fan_in' or 'none', not {init!r}")
        if use_inputs:
            x = ctx.data(min_batch=1)[0].detach().clone()
        else:
            x = torch.randn((batch_size, *ctx.shape()), generator=gen).to(ctx.device,
                                                                          ctx.model_dtype)
        x.requires_grad_(True)  # keeps every map in the graph even with frozen weights
        feats = block_features(ctx, net, x, blocks)
        entropies = [(name, spectral_entropy(t, dim)) for name, t, dim in feats]
        pairs = []
        for (_, f_in, d_in), (name, f_out, d_out) in reversed(list(zip(feats, feats[1:]))):
            pairs.append((name, *pair_trainability(f_in, f_out, gen, d_in, d_out)))
        return {"entropies": entropies, "trainability": pairs}
    return ctx.memo(("az-nas", batch_size, init, blocks, use_inputs, train), compute)


def _entropies(ctx, **options) -> list[tuple[str, float]]:
    entropies = az_components(ctx, **options)["entropies"]
    for name, h in entropies:
        if not math.isfinite(h):
            raise ProxyUndefined(f"the feature map of {name!r} is constant over the batch "
                                 "(zero covariance: its spectrum is 0/0)", float("-inf"))
    return entropies


# Version 2: a conv or BatchNorm ending a block always leaves its map channels-first (version 1
# misread 22 of the 1,000 NB101 zoo cells; results/leaderboard/README.md says what changed).
AZ_MAPS_VERSION = "2"


@register_proxy("az_expressivity", higher_is_better=True, version=AZ_MAPS_VERSION,
                description="AZ-NAS expressivity: Σ over blocks of the spectral entropy of the "
                            "feature covariance (Lee & Ham 2024)")
def az_expressivity(ctx: ProxyContext, *, batch_size: int = 64, init: str = "kaiming_fan_in",
                    blocks: tuple[str, ...] | None = None, use_inputs: bool = False,
                    train: bool = True) -> float:
    return sum(h for _, h in _entropies(ctx, batch_size=batch_size, init=init, blocks=blocks,
                                        use_inputs=use_inputs, train=train))


@register_proxy("az_progressivity", higher_is_better=True, version=AZ_MAPS_VERSION,
                description="AZ-NAS progressivity: smallest increase of the spectral entropy "
                            "from one block to the next (Lee & Ham 2024)")
def az_progressivity(ctx: ProxyContext, *, batch_size: int = 64, init: str = "kaiming_fan_in",
                     blocks: tuple[str, ...] | None = None, use_inputs: bool = False,
                     train: bool = True) -> float:
    h = [v for _, v in _entropies(ctx, batch_size=batch_size, init=init, blocks=blocks,
                                  use_inputs=use_inputs, train=train)]
    return min(b - a for a, b in zip(h, h[1:]))


@register_proxy("az_trainability", higher_is_better=True, version=AZ_MAPS_VERSION,
                description="AZ-NAS trainability: mean over blocks of -σ - 1/σ + 2, σ the "
                            "spectral norm of the block's gradient map (Lee & Ham 2024)")
def az_trainability(ctx: ProxyContext, *, batch_size: int = 64, init: str = "kaiming_fan_in",
                    blocks: tuple[str, ...] | None = None, use_inputs: bool = False,
                    train: bool = True) -> float:
    pairs = az_components(ctx, batch_size=batch_size, init=init, blocks=blocks,
                          use_inputs=use_inputs, train=train)["trainability"]
    for name, v, why in pairs:
        if v == float("-inf"):
            raise ProxyUndefined(f"block {name!r} {why}", float("-inf"))
    for name, v, why in pairs:
        if math.isnan(v) and why:
            raise ProxyUndefined(f"AZ-NAS trainability cannot pair block {name!r} with the "
                                 f"previous one: {why}")
    values = [v for _, v, _ in pairs]
    if not all(math.isfinite(v) for v in values):
        raise ProxyUndefined("a block's gradient map is not finite", float("-inf"))
    return sum(values) / len(values)


@register_proxy("az_complexity", higher_is_better=True,
                description="AZ-NAS complexity: FLOPs of one input (Lee & Ham 2024)")
def az_complexity(ctx: ProxyContext) -> float:
    return float(trace_structure(ctx).flops)
