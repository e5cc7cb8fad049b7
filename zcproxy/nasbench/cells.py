"""The NAS-Bench-201 cell network that NATS-Bench trains, for both of its search spaces.

NATS-Bench scores a zero-cost proxy against accuracies measured on one particular network family,
so the untrained network we hand a proxy must be that family exactly: same layers, same channel
widths, same parameter count (the tests check counts against the official records to the unit).

* Topology space (``nats-tss``, = NAS-Bench-201): a cell is a 4-node DAG whose 6 edges each carry
  one of five ops; the network stacks 3 stages of ``N=5`` cells at widths C, 2C, 4C (C=16),
  joined by stride-2 residual blocks.
* Size space (``nats-sss``): the cell is fixed to the best topology-space cell and only the five
  widths vary (one cell per stage), each in 8..64 in steps of 8.

Module and attribute names follow the official implementation, so a state dict saved by the
NATS-Bench code loads into these networks unchanged.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from ..surgery import mark_chain_links
from .pooling import ChannelsLastAvgPool2d

OP_NAMES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

TSS_CHANNELS = 16
TSS_CELLS_PER_STAGE = 5

SSS_CHANNEL_CHOICES: tuple[int, ...] = (8, 16, 24, 32, 40, 48, 56, 64)
SSS_NUM_LAYERS = 5
# The cell every size-space network uses: the best cell of the topology space.
SSS_CELL = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
            "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")

# One node's incoming edges: (op name, index of the node it reads).
Genotype = list[list[tuple[str, int]]]

_EDGE = re.compile(r"^([a-z0-9_]+)~(\d+)$")


# --------------------------------------------------------------------------- arch strings
def parse_tss_arch(arch_str: str) -> Genotype:
    """Edges of a topology-space cell string, e.g. ``|nor_conv_3x3~0|+|...~0|...~1|+|...|``.

    Only the canonical form the benchmark uses is accepted (node ``i`` reads nodes ``0..i-1`` in
    order), because arch strings are also lookup keys: a non-canonical spelling of a valid cell
    would silently miss in the table instead of failing here.
    """
    if not isinstance(arch_str, str):
        raise ValueError(f"invalid NATS topology arch {arch_str!r}: expected a string")
    nodes = arch_str.split("+")
    if len(nodes) != 3:
        raise ValueError(f"invalid NATS topology arch {arch_str!r}: expected 3 nodes joined "
                         f"by '+', got {len(nodes)}")
    genotype: Genotype = []
    for node_index, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")) or len(node) < 2:
            raise ValueError(f"invalid NATS topology arch {arch_str!r}: node {node!r} must be "
                             f"written |op~i|...|")
        edges = node[1:-1].split("|")
        if len(edges) != node_index:
            raise ValueError(f"invalid NATS topology arch {arch_str!r}: node {node_index} needs "
                             f"{node_index} edges, got {len(edges)}")
        parsed = []
        for source, edge in enumerate(edges):
            match = _EDGE.match(edge)
            if match is None:
                raise ValueError(f"invalid NATS topology arch {arch_str!r}: bad edge {edge!r}")
            op, read_from = match.group(1), int(match.group(2))
            if op not in OP_NAMES:
                raise ValueError(f"invalid NATS topology arch {arch_str!r}: unknown op {op!r} "
                                 f"(ops are {', '.join(OP_NAMES)})")
            if read_from != source or match.group(2) != str(read_from):
                raise ValueError(f"invalid NATS topology arch {arch_str!r}: edge {edge!r} of node "
                                 f"{node_index} should read node {source}")
            parsed.append((op, read_from))
        genotype.append(parsed)
    return genotype


def dead_operations(arch_str: str) -> list[tuple[int, int, str]]:
    """The operations of a topology-space cell that lie on no path from the cell's input
    (node 0) to its output (node 3), as ``(node, source, op)``; ``none`` edges are not
    operations.

    A dead operation still holds parameters and FLOPs but cannot change the cell's output, so
    cells that differ only in dead operations compute the same function.  VKDNW (CVPR 2025)
    and the GRAF features it builds on rank only the cells with none: 9,445 of the 15,625
    (gabikadlecova/zc_combine, ``zc_combine/fixes/utils.py``, which zeroes the edges of nodes
    with no live input, then of nodes with no live output, and keeps a cell that this leaves
    unchanged).  Written here as reachability: an edge lives when its source is reachable from
    the input and the output is reachable from its target.
    """
    genotype = parse_tss_arch(arch_str)
    edges = [(node, source, op) for node, inputs in enumerate(genotype, start=1)
             for op, source in inputs if op != "none"]
    from_input = {0}
    for node in (1, 2, 3):
        if any(n == node and s in from_input for n, s, _ in edges):
            from_input.add(node)
    to_output = {3}
    for node in (2, 1, 0):
        if any(s == node and n in to_output for n, s, _ in edges):
            to_output.add(node)
    return [(n, s, op) for n, s, op in edges if s not in from_input or n not in to_output]


def parse_sss_channels(channels_str: str) -> tuple[int, ...]:
    """The five widths of a size-space string such as ``8:16:24:32:64``."""
    if not isinstance(channels_str, str):
        raise ValueError(f"invalid NATS size arch {channels_str!r}: expected a string")
    parts = channels_str.split(":")
    if len(parts) != SSS_NUM_LAYERS:
        raise ValueError(f"invalid NATS size arch {channels_str!r}: expected {SSS_NUM_LAYERS} "
                         f"channel numbers joined by ':', got {len(parts)}")
    channels = []
    for part in parts:
        # Canonical decimal only ("08" or " 8" would be a second spelling of the same key).
        if not part.isdigit() or str(int(part)) != part or int(part) not in SSS_CHANNEL_CHOICES:
            raise ValueError(f"invalid NATS size arch {channels_str!r}: channel {part!r} is not "
                             f"one of {', '.join(map(str, SSS_CHANNEL_CHOICES))}")
        channels.append(int(part))
    return tuple(channels)


def sss_index(channels_str: str) -> int:
    """Official size-space index: base-8 digits ``channel/8 - 1``, first layer most significant."""
    index = 0
    for channel in parse_sss_channels(channels_str):
        index = index * len(SSS_CHANNEL_CHOICES) + SSS_CHANNEL_CHOICES.index(channel)
    return index


def sss_arch(index: int) -> str:
    """Inverse of :func:`sss_index`."""
    base = len(SSS_CHANNEL_CHOICES)
    total = base ** SSS_NUM_LAYERS
    if not 0 <= int(index) < total:
        raise IndexError(f"NATS size-space indices are 0..{total - 1}, not {index}")
    digits = []
    rest = int(index)
    for _ in range(SSS_NUM_LAYERS):
        rest, digit = divmod(rest, base)
        digits.append(SSS_CHANNEL_CHOICES[digit])
    return ":".join(str(c) for c in reversed(digits))


# --------------------------------------------------------------------------- operations
class ReLUConvBN(nn.Module):
    """Pre-activation conv: the benchmark's only learnable cell op."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """The ``none`` edge.  Multiplying (rather than returning fresh zeros) keeps the edge in the
    autograd graph when widths match, as the official network does."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.c_in, self.c_out = c_in, c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.c_in == self.c_out:
            return x.mul(0.0)
        shape = list(x.shape)
        shape[1] = self.c_out
        return x.new_zeros(shape)


class ChannelProjection(nn.Module):
    """``skip_connect`` across a width change (size space): 1x1 conv + BN, no activation."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class AvgPool3x3(nn.Module):
    """``avg_pool_3x3``; a width change first goes through a 1x1 ReLU-conv-BN."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.preprocess = ReLUConvBN(c_in, c_out, 1) if c_in != c_out else None
        self.op = ChannelsLastAvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            x = self.preprocess(x)
        return self.op(x)


def make_op(name: str, c_in: int, c_out: int) -> nn.Module:
    """One cell edge.  Cells never change resolution, so every op has stride 1."""
    if name == "none":
        return Zero(c_in, c_out)
    if name == "skip_connect":
        return nn.Identity() if c_in == c_out else ChannelProjection(c_in, c_out)
    if name == "nor_conv_1x1":
        return ReLUConvBN(c_in, c_out, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c_in, c_out, 3)
    if name == "avg_pool_3x3":
        return AvgPool3x3(c_in, c_out)
    raise ValueError(f"unknown NATS op {name!r} (ops are {', '.join(OP_NAMES)})")


# --------------------------------------------------------------------------- blocks
class Cell(nn.Module):
    """A DAG cell: each node is the sum of its incoming edges, the output is the last node.

    Only edges leaving the input node change width (``c_in -> c_out``); the rest are
    ``c_out -> c_out``.
    """

    def __init__(self, genotype: Genotype, c_in: int, c_out: int):
        super().__init__()
        self.layers = nn.ModuleList()
        self.node_inputs: list[list[tuple[int, int]]] = []  # per node: (layer index, source node)
        for node in genotype:
            wiring = []
            for op, source in node:
                wiring.append((len(self.layers), source))
                self.layers.append(make_op(op, c_in if source == 0 else c_out, c_out))
            self.node_inputs.append(wiring)
        self.out_dim = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for wiring in self.node_inputs:
            nodes.append(sum(self.layers[layer](nodes[source]) for layer, source in wiring))
        return nodes[-1]


class ResNetBasicblock(nn.Module):
    """The fixed stride-2 reduction between stages: two 3x3 ReLU-conv-BN on the main path, a
    2x2 average pool followed by a 1x1 conv (no BN) on the shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False),
        )
        self.out_dim = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class CellNetwork(nn.Module):
    """Stem, then ``3N + 2`` layers (N cells, reduction, N cells, reduction, N cells), then
    BN-ReLU, global average pooling and a linear classifier.

    ``layer_channels`` gives each layer's output width.  ``forward`` returns
    ``(pooled features, logits)`` like the official network, so proxies that look at the
    penultimate features get the same tensor.
    """

    def __init__(self, layer_channels: Sequence[int], genotype: Genotype, num_classes: int):
        super().__init__()
        if len(layer_channels) % 3 != 2:
            raise ValueError(f"a cell network needs 3N+2 layer widths, got {len(layer_channels)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        per_stage = len(layer_channels) // 3
        reductions = {per_stage, 2 * per_stage + 1}
        self.stem = nn.Sequential(
            nn.Conv2d(3, layer_channels[0], kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(layer_channels[0]),
        )
        self.cells = nn.ModuleList()
        c_prev = layer_channels[0]
        for position, c_out in enumerate(layer_channels):
            if position in reductions:
                block: nn.Module = ResNetBasicblock(c_prev, c_out)
            else:
                block = Cell(genotype, c_prev, c_out)
            self.cells.append(block)
            c_prev = c_out
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        mark_chain_links([self.stem, *self.cells])  # forward feeds each to the next, see below

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.stem(x)
        for block in self.cells:
            feature = block(feature)
        features = self.global_pooling(self.lastact(feature)).flatten(1)
        return features, self.classifier(features)


# --------------------------------------------------------------------------- the two spaces
def tss_network(arch_str: str, num_classes: int, C: int = TSS_CHANNELS,
                N: int = TSS_CELLS_PER_STAGE) -> CellNetwork:
    """The topology-space network of one cell string (NATS-Bench trains C=16, N=5)."""
    genotype = parse_tss_arch(arch_str)
    widths = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
    return CellNetwork(widths, genotype, num_classes)


def sss_network(channels_str: str, num_classes: int) -> CellNetwork:
    """The size-space network: the fixed best cell at the five given widths, one cell per stage."""
    return CellNetwork(parse_sss_channels(channels_str), parse_tss_arch(SSS_CELL), num_classes)


def count_parameters(model: nn.Module) -> int:
    """Every parameter, trainable or not, the way the benchmark counted them (BN running stats
    are buffers, not parameters, so they are excluded there too)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, resolution: int, device: torch.device | str = "cpu") -> int:
    """Multiply-accumulates of one forward pass on a ``resolution``-square image, counted the
    way NATS-Bench did: every Conv2d and Linear (plus their bias adds), nothing else (pooling,
    BN, activations and additions are free).  This reproduces the official ``flops`` records
    (in units of 1e6) exactly."""
    total = 0

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            positions = output.shape[2] * output.shape[3]
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total += positions * kernel * module.in_channels * module.out_channels // module.groups
            if module.bias is not None:
                total += positions * module.out_channels
        else:
            total += module.in_features * module.out_features
            if module.bias is not None:
                total += module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
