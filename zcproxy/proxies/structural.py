"""Structural baselines: what a proxy has to beat before it means anything.

On NAS-Bench-101 the number of ReLU layers alone ranks cells about as well as the Entropic
Score, and on the size space #params alone reaches τ ≈ 0.68; so every correlation table shows
these beside the proxies.  All but ``params`` come from one traced forward pass of a single
input: an aten-level dispatch mode sees every operation (also functional ones and additions
inside ``forward``), which is what "longest input → output path" needs.

Sources: no external code; these are zcproxy's own definitions (FLOPs through
``torch.utils.flop_counter``, the rest counted by the dispatch mode), pinned by hand in
tests/test_baselines.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from ..context import ProxyContext
from ..registry import register_proxy
from ..surgery import ACTIVATION_OPS, ACTIVATION_PACKETS, Recipe  # noqa: F401 (re-exported)

aten = torch.ops.aten
CONV_PACKETS = frozenset({aten.convolution})


@dataclass(frozen=True)
class Structure:
    """What one forward pass reveals about a network's shape."""

    depth: int          # activations on the longest input → output path
    activations: int    # activation calls in total
    convs: int          # convolution calls
    flops: int          # floating-point operations of one input (torch's flop counter)


class _PathDepth(TorchDispatchMode):
    """Propagates, through every aten op, the largest number of activations on any path from
    the input to each tensor; parameters and constants start at 0."""

    def __init__(self):
        super().__init__()
        self.depth: dict[int, int] = {}
        self.keep: list[torch.Tensor] = []  # keeps ids unique while we trace
        self.activations = self.convs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat_in, _ = tree_flatten((args, kwargs))
        level = max((self.depth.get(id(t), 0) for t in flat_in if isinstance(t, torch.Tensor)),
                    default=0)
        packet = getattr(func, "overloadpacket", None)
        if packet in ACTIVATION_PACKETS:
            level += 1
            self.activations += 1
        elif packet in CONV_PACKETS:
            self.convs += 1
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.depth[id(t)] = max(level, self.depth.get(id(t), 0))
                self.keep.append(t)
        return out


def trace_structure(ctx: ProxyContext) -> Structure:
    """The :class:`Structure` of the context's model (memoised per context)."""
    def compute() -> Structure:
        net = ctx.prepared(Recipe(train=False))
        x = torch.zeros((1, *ctx.shape()), device=ctx.device, dtype=ctx.model_dtype)
        tracer = _PathDepth()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter, tracer:
            out = ctx.forward(net, x)
        return Structure(depth=tracer.depth.get(id(out), 0), activations=tracer.activations,
                         convs=tracer.convs, flops=int(counter.get_total_flops()))
    return ctx.memo("structure", compute)


@register_proxy("n_params", needs_forward=False, baseline=True,
                description="#params: number of trainable parameters (a size baseline)")
def num_params(ctx: ProxyContext) -> float:
    return float(sum(p.numel() for p in ctx.model.parameters() if p.requires_grad))


@register_proxy("n_flops", baseline=True,
                description="FLOPs of one input (torch.utils.flop_counter; a size baseline)")
def flops(ctx: ProxyContext) -> float:
    return float(trace_structure(ctx).flops)


@register_proxy("depth", baseline=True,
                description="activations on the longest input-to-output path (a depth baseline)")
def depth(ctx: ProxyContext) -> float:
    return float(trace_structure(ctx).depth)


@register_proxy("n_act", baseline=True,
                description="activation calls in one forward pass (a depth baseline)")
def activation_count(ctx: ProxyContext) -> float:
    return float(trace_structure(ctx).activations)


@register_proxy("n_conv", baseline=True,
                description="convolution calls in one forward pass (a depth baseline)")
def conv_count(ctx: ProxyContext) -> float:
    return float(trace_structure(ctx).convs)


@register_proxy("width", needs_forward=False, baseline=True,
                description="mean output channels of conv and linear layers (a width baseline)")
def mean_width(ctx: ProxyContext) -> float:
    widths = [m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
              for m in ctx.model.modules()
              if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    if not widths:
        raise ValueError(f"{type(ctx.model).__name__} has no conv or linear layers")
    return sum(widths) / len(widths)
