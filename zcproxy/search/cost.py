"""Exact parameter and MAC counts of ESFormer candidates, fast enough to check every proposal.

The search rejects every candidate over budget *before* scoring it, and a proposal may be
re-drawn many times, so the check must be cheap: building the network on the meta device costs
25-50 ms for parameters and 0.2-0.4 s for MACs (a traced forward).  So the network is split
into the components :class:`~zcproxy.esformer.model.ESFormer` wires together (stem, each
downsampling, each block, norm + head) and each is counted in closed form (under 0.5 ms for a
whole network).  The closed forms duplicate knowledge of ``zcproxy/esformer/blocks.py``, so
they are checked against the real modules -- built on the meta device, parameters summed and
MACs traced with ``FlopCounterMode`` exactly as ``count_macs`` does -- whenever a search starts
(:meth:`CostModel.self_check`), and the tests compare them with ``count_params``/``count_macs``
of ``build_model`` for random networks of every space.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace
from typing import Callable, Hashable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..esformer.blocks import Downsample, Stem, make_block
from ..esformer.model import ATTENTION_DOWNSAMPLE_STAGE, STRIDE_ATTENTION_STAGE
from ..esformer.space import Architecture, BlockGenes, SearchSpace

TRAINED_LAYER_SCALE = 1e-5  # the trained network keeps EfficientFormerV2's layer scale

_CHECKED: set[tuple] = set()  # (space, img_size, classes, layer scale) already self-checked
Component = tuple[Hashable, Callable[[], nn.Module], tuple[int, int, int]]


class CostModel:
    """Parameters and MACs of the network an architecture becomes at ``img_size``.

    ``img_size`` matters for parameters too: attention bias tables have one entry per key
    position, so budgets are counted at the deployment resolution (224), whatever resolution
    the proxies score at.
    """

    def __init__(self, img_size: int = 224, num_classes: int = 1000,
                 layer_scale_init: float | None = TRAINED_LAYER_SCALE):
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size <= 0 or img_size % 32:
            raise ValueError(f"img_size={img_size!r} must be a positive multiple of 32")
        self.img_size, self.num_classes = img_size, num_classes
        self.layer_scale_init = layer_scale_init
        self._params: dict[Hashable, int] = {}
        self._macs: dict[Hashable, int] = {}

    # ---- public --------------------------------------------------------------------------
    def params(self, arch: Architecture) -> int:
        """Parameters of the trained network (with layer scale), in microseconds: closed-form
        per component (checked against the real modules when the model is created)."""
        return sum(_formula(key, self.layer_scale_init is not None)
                   for key, _, _ in self._components(arch))

    def params_of_modules(self, arch: Architecture) -> int:
        """The same count from the real modules built on the meta device (slow; the reference)."""
        return sum(self._count(c, "params") for c in self._components(arch))

    def self_check(self, space: SearchSpace, n_random: int = 1, seed: int = 0) -> None:
        """Refuse to run if the closed forms disagree with the modules (blocks.py changed)."""
        key = (space, self.img_size, self.num_classes, self.layer_scale_init)
        if key in _CHECKED:
            return
        rng = random.Random(seed)
        for arch in [space.efficientformer_v2()] + [space.random(rng) for _ in range(n_random)]:
            for what, fast, slow in (("parameter", self.params, self.params_of_modules),
                                     ("MAC", self.macs, self.macs_of_modules)):
                if fast(arch) != slow(arch):
                    raise RuntimeError(
                        f"zcproxy.search.cost's {what} formulas give {fast(arch)} for an "
                        f"{space.skeleton} network whose modules count {slow(arch)}: "
                        "zcproxy/esformer/blocks.py changed; update zcproxy/search/cost.py")
        _CHECKED.add(key)

    def macs(self, arch: Architecture) -> int:
        """MACs of one image at ``img_size``, closed-form like :meth:`params`."""
        return sum(_macs_formula(key, self.img_size) for key, _, _ in self._components(arch))

    def macs_of_modules(self, arch: Architecture) -> int:
        """The same count traced through the real modules (FlopCounterMode; the reference)."""
        return sum(self._count(c, "macs") for c in self._components(arch))

    def minimum(self, space: SearchSpace, what: str = "params") -> int:
        """The smallest count any architecture of ``space`` reaches: a budget below it is
        unreachable.  Every count grows with every width and with the attention genes, so those
        sit at their smallest choices; given the widths, blocks are independent, so each block's
        cheapest ffn type / kernel / expansion is found by enumeration (a residual bottleneck
        shrinks as its expansion grows: no monotonicity is assumed there)."""
        if what not in ("params", "macs"):
            raise ValueError(f"what={what!r}; choose 'params' or 'macs'")
        def count(component: Component) -> int:
            if what == "params":
                return _formula(component[0], self.layer_scale_init is not None)
            return _macs_formula(component[0], self.img_size)

        total = 0
        for component in self._components(_smallest_widths(space)):
            key = component[0]
            if key[0] != "block":
                total += count(component)
                continue
            _, width, genes, attention, side, stride, _, (s, b) = key
            total += min(
                count(self._block(width, replace(genes, ffn_type=f, kernel_size=k, expansion=e),
                                  attention, side, stride, (s, b)))
                for f, k, e in itertools.product(space.choices(s, b, "ffn_type"),
                                                 space.choices(s, b, "kernel_size"),
                                                 space.choices(s, b, "expansion")))
        return total

    # ---- internals -----------------------------------------------------------------------
    def _count(self, component: Component, what: str) -> int:
        key, make, shape = component
        memo_key = key[:-1] if key[0] == "block" else key  # a block's position is not a cost
        memo = self._params if what == "params" else self._macs
        if memo_key not in memo:
            module = make()
            memo[memo_key] = (sum(p.numel() for p in module.parameters()) if what == "params"
                              else _component_macs(module, shape))
        return memo[memo_key]

    def _block(self, width: int, genes: BlockGenes, attention: bool, side: int,
               stride: int | None, where: tuple[int, int]) -> Component:
        ls = self.layer_scale_init
        return (("block", width, genes, attention, side, stride, ls, where),
                lambda: make_block(width, genes, attention, (side, side), stride, ls, "meta"),
                (width, side, side))

    def _components(self, arch: Architecture) -> Iterator[Component]:
        """Mirror of ESFormer.__init__'s wiring: what each component is built from."""
        if not isinstance(arch, Architecture):
            raise TypeError(f"expected an Architecture, got {type(arch).__name__}")
        space, meta = arch.space, "meta"
        width = arch.stages[0][0].out_channels
        yield (("stem", width), lambda w=width: Stem(3, w, device=meta),
               (3, self.img_size, self.img_size))
        side = self.img_size // 4
        for s, stage in enumerate(arch.stages):
            if s > 0:
                out, attn = stage[0].out_channels, s == ATTENTION_DOWNSAMPLE_STAGE
                yield (("down", width, out, side, attn),
                       lambda w=width, o=out, sd=side, a=attn: Downsample(w, o, (sd, sd), a, meta),
                       (width, side, side))
                width, side = out, side // 2
            stride = 2 if s == STRIDE_ATTENTION_STAGE else None
            for b, genes in enumerate(stage):
                yield self._block(width, genes, space.is_attention(s, b), side, stride, (s, b))
                width = genes.out_channels
        yield (("head", width, self.num_classes),
               lambda w=width: nn.Sequential(nn.BatchNorm2d(w, device=meta),
                                             nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                                             nn.Linear(w, self.num_classes, device=meta)),
               (width, side, side))


def _component_macs(module: nn.Module, shape: tuple[int, int, int]) -> int:
    # Same convention as zcproxy.esformer.flops.count_macs: FLOPs of one image / 2, eval mode.
    module.eval()
    x = torch.zeros(1, *shape, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() // 2


def _smallest_widths(space: SearchSpace) -> Architecture:
    """EfficientFormerV2's network of this skeleton with every width at its stage's minimum and
    the smallest attention (fewest heads, narrowest heads)."""
    ref = space.efficientformer_v2()
    stages = []
    for s, stage in enumerate(ref.stages):
        blocks = []
        for b, genes in enumerate(stage):
            changes: dict = {"out_channels": min(space.choices(s, b, "out_channels"))}
            if space.is_attention(s, b):
                changes.update(num_heads=min(space.choices(s, b, "num_heads")),
                               head_dim=min(space.choices(s, b, "head_dim")))
            blocks.append(replace(genes, **changes))
        stages.append(tuple(blocks))
    return Architecture(space.skeleton, tuple(stages), space.extended)


# ---- closed forms of the parameter counts, mirroring zcproxy/esformer/blocks.py -----------------
def _conv_bn(c_in: int, c_out: int, k: int = 1, groups: int = 1) -> int:
    return c_out * (c_in // groups) * k * k + c_out + 2 * c_out  # weight, bias, BN affine


def _ffn(ffn_type: str, c_in: int, c_out: int, e: int, k: int) -> int:
    hidden = c_in * e
    if ffn_type == "ibn":
        return _conv_bn(c_in, hidden) + _conv_bn(hidden, hidden, k, hidden) + _conv_bn(hidden, c_out)
    if ffn_type == "convnext":
        return _conv_bn(c_in, c_in, k, c_in) + _conv_bn(c_in, hidden) + _conv_bn(hidden, c_out)
    raise ValueError(f"no parameter formula for ffn_type={ffn_type!r}")


def _attention(dim: int, heads: int, head_dim: int, side: int, stride: int | None) -> int:
    qk, v = heads * head_dim, heads * 4 * head_dim
    total = 0
    if stride is not None:
        total += _conv_bn(dim, dim, 3, dim)
        side = math.ceil(side / stride)
    total += 2 * _conv_bn(dim, qk) + _conv_bn(dim, v) + _conv_bn(v, v, 3, v)
    total += 2 * (heads * heads + heads) + _conv_bn(v, dim) + heads * side * side
    return total


def _formula(key: tuple, layer_scale: bool) -> int:
    kind = key[0]
    if kind == "stem":
        c = key[1]
        return _conv_bn(3, c // 2, 3) + _conv_bn(c // 2, c, 3)
    if kind == "down":
        _, c_in, c_out, side, attn = key
        total = _conv_bn(c_in, c_out, 3)
        if attn:  # 8 heads, key width 16, values 4 x 16 (EfficientFormerV2's downsampling)
            qk, v = 8 * 16, 8 * 64
            total += c_in * 9 + c_in + 2 * _conv_bn(c_in, qk) + _conv_bn(c_in, v)
            total += _conv_bn(v, v, 3, v) + _conv_bn(v, c_out) + 8 * side * side
        return total
    if kind == "head":
        _, width, classes = key
        return 2 * width + width * classes + classes
    _, c_in, genes, attention, side, stride, _, _ = key
    c_out, e, k = genes.out_channels, genes.expansion, genes.kernel_size
    if attention:
        return (_attention(c_in, genes.num_heads, genes.head_dim, side, stride)
                + c_in * layer_scale + _ffn(genes.ffn_type, c_in, c_out, e, k) + c_out * layer_scale)
    if genes.ffn_type == "bottleneck":
        mid = max(1, c_out // e)
        return _conv_bn(c_in, mid) + _conv_bn(mid, mid, k) + _conv_bn(mid, c_out)
    return _ffn(genes.ffn_type, c_in, c_out, e, k) + c_out * layer_scale


# ---- closed forms of the MAC counts (FlopCounterMode's convention: convolutions, linear layers
# and attention matmuls; no bias, norm, activation, pooling, upsampling or addition) ------------
def _out_side(side: int, stride: int) -> int:
    return math.ceil(side / stride)  # odd kernels with 'same' padding


def _conv_macs(c_in: int, c_out: int, side_out: int, k: int = 1, groups: int = 1) -> int:
    return c_out * (c_in // groups) * k * k * side_out * side_out


def _ffn_macs(ffn_type: str, c_in: int, c_out: int, e: int, k: int, side: int) -> int:
    if ffn_type == "bottleneck":
        mid = max(1, c_out // e)
        return (_conv_macs(c_in, mid, side) + _conv_macs(mid, mid, side, k)
                + _conv_macs(mid, c_out, side))
    hidden = c_in * e
    dw = _conv_macs(hidden, hidden, side, k, hidden) if ffn_type == "ibn" else \
        _conv_macs(c_in, c_in, side, k, c_in)
    if ffn_type not in ("ibn", "convnext"):
        raise ValueError(f"no MAC formula for ffn_type={ffn_type!r}")
    return _conv_macs(c_in, hidden, side) + dw + _conv_macs(hidden, c_out, side)


def _attention_macs(dim: int, heads: int, head_dim: int, side: int, stride: int | None) -> int:
    qk, v = heads * head_dim, heads * 4 * head_dim
    total, r = 0, side
    if stride is not None:
        r = _out_side(side, stride)
        total += _conv_macs(dim, dim, r, 3, dim)
    n = r * r
    total += 2 * _conv_macs(dim, qk, r) + _conv_macs(dim, v, r) + _conv_macs(v, v, r, 3, v)
    total += heads * n * n * head_dim + 2 * heads * heads * n * n + heads * n * n * 4 * head_dim
    return total + _conv_macs(v, dim, side)  # the projection runs after upsampling back


def _macs_formula(key: tuple, img_size: int) -> int:
    kind = key[0]
    if kind == "stem":
        c, half = key[1], _out_side(img_size, 2)
        return _conv_macs(3, c // 2, half, 3) + _conv_macs(c // 2, c, _out_side(half, 2), 3)
    if kind == "down":
        _, c_in, c_out, side, attn = key
        side2 = _out_side(side, 2)
        total = _conv_macs(c_in, c_out, side2, 3)
        if attn:
            qk, v, n, n2 = 8 * 16, 8 * 64, side * side, side2 * side2
            total += _conv_macs(c_in, c_in, side2, 3, c_in) + _conv_macs(c_in, qk, side2)
            total += _conv_macs(c_in, qk, side) + _conv_macs(c_in, v, side)
            total += _conv_macs(v, v, side2, 3, v) + 8 * n2 * n * 16 + 8 * n2 * n * 64
            total += _conv_macs(v, c_out, side2)
        return total
    if kind == "head":
        _, width, classes = key
        return width * classes
    _, c_in, genes, attention, side, stride, _, _ = key
    ffn = _ffn_macs(genes.ffn_type, c_in, genes.out_channels, genes.expansion,
                    genes.kernel_size, side)
    if attention:
        return _attention_macs(c_in, genes.num_heads, genes.head_dim, side, stride) + ffn
    return ffn
