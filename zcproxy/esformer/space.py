"""The ESFormer search space: genes, their choices, validation, JSON, random/mutate/crossover.

The skeleton (blocks per stage, which blocks are attention blocks, downsampling) is fixed by the
target EfficientFormerV2 size ("s0", "s1", "s2"); what is searched is every block's genes.
Genes split into *topology* (what computation a block does) and *size* (how wide it is), as in
the ESFormer paper's Table 1, so that a decoupled search can evolve one kind while freezing the
other:

=============  ======================================  =========================================
gene           FFN block                               attention block
=============  ======================================  =========================================
ffn_type       "ibn" / "convnext" (+ "bottleneck"      "ibn" / "convnext"
               in the extended space)
kernel_size    3 / 5 / 7                               fixed to 3 (global receptive field)
out_channels   per-stage choices, nondecreasing        per-stage choices, nondecreasing
expansion      2..6                                    2..6
num_heads      --                                      2 / 4 / 6 / 8
head_dim       --                                      16 / 24 / 32 / 48 / 64 (query/key width)
=============  ======================================  =========================================

Output channels may never decrease along the network, so every residual can be a zero-padded
identity.  Per-stage channel choices share only their end points (stage k's largest choice is
stage k+1's smallest), so monotonicity is a per-stage property and can be repaired inside a
stage without ever touching another stage or a topology gene.

Positions are 0-based in the API (``stage``, ``block``) but error messages say "stage 1..4,
block 1..depth", matching the paper's stage numbering.
"""
from __future__ import annotations

import json
import numbers
import random as _random
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterator, Literal, Sequence, Union

import numpy as np

TOPOLOGY_GENES: tuple[str, ...] = ("ffn_type", "kernel_size")
SIZE_GENES: tuple[str, ...] = ("out_channels", "expansion", "num_heads", "head_dim")
ALL_GENES: tuple[str, ...] = TOPOLOGY_GENES + SIZE_GENES

FFN_TYPES: tuple[str, ...] = ("ibn", "convnext")
EXTENDED_FFN_TYPES: tuple[str, ...] = FFN_TYPES + ("bottleneck",)
KERNEL_SIZES: tuple[int, ...] = (3, 5, 7)
ATTENTION_KERNEL_SIZE = 3
EXPANSIONS: tuple[int, ...] = (2, 3, 4, 5, 6)
NUM_HEADS: tuple[int, ...] = (2, 4, 6, 8)
HEAD_DIMS: tuple[int, ...] = (16, 24, 32, 48, 64)

GeneKind = Literal["topology", "size", "all"]
RngLike = Union[_random.Random, np.random.Generator]


def _multiples_of_8(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, 8))


@dataclass(frozen=True)
class Skeleton:
    """The fixed part of a target size: EfficientFormerV2's depths, attention blocks and widths.

    ``ref_widths``/``ref_expansions`` are EfficientFormerV2's own settings (timm's
    ``EfficientFormer_width``/``EfficientFormer_expansion_ratios``), used to build the reference
    architecture; ``channel_choices`` are ours: multiples of 8 bracketing the reference widths,
    wide enough that the paper's budgets (3.5 / 6 / 12.5 M parameters) are both reachable and
    exceedable, with consecutive stages sharing only an end point.
    """

    name: str
    depths: tuple[int, int, int, int]
    num_attention: int  # the last blocks of stages 3 and 4 that are attention blocks
    ref_widths: tuple[int, int, int, int]
    ref_expansions: tuple[tuple[int, ...], ...]
    channel_choices: tuple[tuple[int, ...], ...]

    def is_attention(self, stage: int, block: int) -> bool:
        return stage >= 2 and block >= self.depths[stage] - self.num_attention


SKELETONS: dict[str, Skeleton] = {
    "s0": Skeleton(
        "s0", (2, 2, 6, 4), 2, (32, 48, 96, 176),
        ((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4)),
        (_multiples_of_8(16, 48), _multiples_of_8(48, 80), _multiples_of_8(80, 144),
         _multiples_of_8(144, 256))),
    "s1": Skeleton(
        "s1", (3, 3, 9, 6), 2, (32, 48, 120, 224),
        ((4, 4, 4), (4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4)),
        (_multiples_of_8(16, 48), _multiples_of_8(48, 96), _multiples_of_8(96, 176),
         _multiples_of_8(176, 320))),
    "s2": Skeleton(
        "s2", (4, 4, 12, 8), 4, (32, 64, 144, 288),
        ((4, 4, 4, 4), (4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
         (4, 4, 3, 3, 3, 3, 4, 4)),
        (_multiples_of_8(16, 64), _multiples_of_8(64, 112), _multiples_of_8(112, 208),
         _multiples_of_8(208, 384))),
}


def get_skeleton(name: str) -> Skeleton:
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(f"unknown skeleton {name!r}; choose one of {tuple(SKELETONS)}") from None


@dataclass(frozen=True)
class BlockGenes:
    """One block's genes.  ``num_heads``/``head_dim`` are None exactly for FFN blocks."""

    ffn_type: str
    kernel_size: int
    out_channels: int
    expansion: int
    num_heads: int | None = None
    head_dim: int | None = None

    def __post_init__(self) -> None:
        # numpy integers from a caller's RNG are accepted but stored as int, so that equality,
        # hashing and JSON do not depend on where a number came from.
        for name in ("kernel_size", "out_channels", "expansion", "num_heads", "head_dim"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name}={value!r} is not an integer")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.ffn_type, str):
            raise ValueError(f"ffn_type={self.ffn_type!r} is not a string")

    def get(self, gene: str) -> Any:
        if gene not in ALL_GENES:
            raise ValueError(f"unknown gene {gene!r}; genes are {ALL_GENES}")
        return getattr(self, gene)


def _where(stage: int, block: int) -> str:
    return f"stage {stage + 1} block {block + 1}"


@dataclass(frozen=True)
class Architecture:
    """A point of the search space: hashable, immutable, valid by construction.

    ``stages[s][b]`` holds the genes of block ``b`` of stage ``s``.  Construction validates every
    gene against ``SearchSpace(skeleton, extended)`` and raises one ValueError listing every
    problem, each naming the block and the gene.
    """

    skeleton: str
    stages: tuple[tuple[BlockGenes, ...], ...]
    extended: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.stages, (list, tuple)) or not all(
                isinstance(s, (list, tuple)) for s in self.stages):
            raise ValueError("stages must be a sequence of sequences of BlockGenes")
        object.__setattr__(self, "stages", tuple(tuple(s) for s in self.stages))
        object.__setattr__(self, "extended", bool(self.extended))
        problems = SearchSpace(self.skeleton, self.extended).problems(self.stages)
        if problems:
            raise ValueError("invalid ESFormer architecture:\n  " + "\n  ".join(problems))

    @property
    def space(self) -> "SearchSpace":
        return SearchSpace(self.skeleton, self.extended)

    def blocks(self) -> Iterator[tuple[int, int, BlockGenes]]:
        """(stage, block, genes) in network order."""
        for s, stage in enumerate(self.stages):
            for b, genes in enumerate(stage):
                yield s, b, genes

    def gene_values(self, kind: GeneKind = "all") -> tuple:
        """The values of one kind of genes in network order: a key to compare architectures on
        only their topology (or only their size), e.g. to deduplicate a population."""
        names = _genes_of_kind(kind)
        return tuple(g.get(n) for _, _, g in self.blocks() for n in names)

    def replace_block(self, stage: int, block: int, **genes: Any) -> "Architecture":
        """A copy with some genes of one block changed (validated; no repair)."""
        stages = [list(s) for s in self.stages]
        stages[stage][block] = replace(stages[stage][block], **genes)
        return Architecture(self.skeleton, tuple(tuple(s) for s in stages), self.extended)

    def to_dict(self) -> dict:
        return {"skeleton": self.skeleton, "extended": self.extended,
                "stages": [[asdict(g) for g in stage] for stage in self.stages]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Architecture":
        try:
            stages = tuple(tuple(BlockGenes(**block) for block in stage) for stage in data["stages"])
            return cls(data["skeleton"], stages, data.get("extended", False))
        except (KeyError, TypeError) as err:
            raise ValueError(f"not an ESFormer architecture record: {err}") from err

    @classmethod
    def from_json(cls, text: str) -> "Architecture":
        return cls.from_dict(json.loads(text))


def _genes_of_kind(kind: str) -> tuple[str, ...]:
    if kind == "topology":
        return TOPOLOGY_GENES
    if kind == "size":
        return SIZE_GENES
    if kind == "all":
        return ALL_GENES
    raise ValueError(f"genes={kind!r}; choose 'topology', 'size' or 'all'")


class _Picker:
    """Uniform choices from either a ``random.Random`` or a ``numpy.random.Generator``, so the
    search may use whichever it seeds; an int seed is refused because re-seeding on every call
    would silently return the same 'random' architecture each time."""

    def __init__(self, rng: RngLike) -> None:
        if isinstance(rng, np.random.Generator):
            self._index = lambda n: int(rng.integers(n))
        elif isinstance(rng, _random.Random):
            self._index = rng.randrange
        else:
            raise TypeError(f"rng must be random.Random or numpy.random.Generator, got {type(rng).__name__}")

    def choice(self, seq: Sequence[Any]) -> Any:
        if not seq:
            raise ValueError("cannot choose from an empty sequence")
        return seq[self._index(len(seq))]

    def coin(self) -> bool:
        return self._index(2) == 1


@dataclass(frozen=True)
class SearchSpace:
    """The choices of every gene for one target skeleton, and the operators of the search."""

    skeleton: str
    extended: bool = False
    _sk: Skeleton = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sk", get_skeleton(self.skeleton))

    # ---- structure -------------------------------------------------------------------------
    @property
    def depths(self) -> tuple[int, ...]:
        return self._sk.depths

    def positions(self) -> list[tuple[int, int]]:
        return [(s, b) for s, d in enumerate(self._sk.depths) for b in range(d)]

    def is_attention(self, stage: int, block: int) -> bool:
        return self._sk.is_attention(stage, block)

    def genes_of(self, stage: int, block: int, kind: GeneKind = "all") -> tuple[str, ...]:
        """The searchable genes of one block (kernel size is not searchable in attention blocks,
        heads and head dimension exist only there)."""
        wanted = _genes_of_kind(kind)
        if self.is_attention(stage, block):
            own = ("ffn_type", "out_channels", "expansion", "num_heads", "head_dim")
        else:
            own = ("ffn_type", "kernel_size", "out_channels", "expansion")
        return tuple(g for g in own if g in wanted)

    def choices(self, stage: int, block: int, gene: str) -> tuple:
        attention = self.is_attention(stage, block)
        if gene == "ffn_type":
            return FFN_TYPES if attention or not self.extended else EXTENDED_FFN_TYPES
        if gene == "kernel_size":
            return (ATTENTION_KERNEL_SIZE,) if attention else KERNEL_SIZES
        if gene == "out_channels":
            return self._sk.channel_choices[stage]
        if gene == "expansion":
            return EXPANSIONS
        if gene == "num_heads":
            return NUM_HEADS if attention else (None,)
        if gene == "head_dim":
            return HEAD_DIMS if attention else (None,)
        raise ValueError(f"unknown gene {gene!r}; genes are {ALL_GENES}")

    # ---- validation ------------------------------------------------------------------------
    def problems(self, stages: Sequence[Sequence[BlockGenes]]) -> list[str]:
        """Every reason why ``stages`` is not a valid architecture of this space (empty if valid)."""
        if len(stages) != len(self.depths):
            return [f"{len(stages)} stages given, skeleton {self.skeleton} has {len(self.depths)}"]
        out: list[str] = []
        for s, (stage, depth) in enumerate(zip(stages, self.depths)):
            if len(stage) != depth:
                out.append(f"stage {s + 1} has {len(stage)} blocks, skeleton {self.skeleton} needs {depth}")
        if out:
            return out
        previous: tuple[int, int, int] | None = None
        for s, stage in enumerate(stages):
            for b, genes in enumerate(stage):
                if not isinstance(genes, BlockGenes):
                    out.append(f"{_where(s, b)}: expected BlockGenes, got {type(genes).__name__}")
                    continue
                for gene in ALL_GENES:
                    allowed = self.choices(s, b, gene)
                    value = genes.get(gene)
                    if value not in allowed:
                        why = (" (attention blocks fix kernel_size=3)" if gene == "kernel_size"
                               and self.is_attention(s, b) else
                               " (only attention blocks have heads)" if allowed == (None,) else "")
                        out.append(f"{_where(s, b)}: {gene}={value!r} not in {allowed}{why}")
                if previous is not None and genes.out_channels < previous[2]:
                    out.append(
                        f"{_where(s, b)}: out_channels={genes.out_channels} < {previous[2]} of "
                        f"{_where(previous[0], previous[1])}; output channels must be nondecreasing")
                previous = (s, b, genes.out_channels)
        return out

    def _check_member(self, arch: Architecture) -> None:
        if not isinstance(arch, Architecture):
            raise TypeError(f"expected an Architecture, got {type(arch).__name__}")
        if (arch.skeleton, arch.extended) != (self.skeleton, self.extended):
            raise ValueError(f"architecture of space ({arch.skeleton}, extended={arch.extended}) "
                             f"given to space ({self.skeleton}, extended={self.extended})")

    # ---- operators -------------------------------------------------------------------------
    def random(self, rng: RngLike) -> Architecture:
        """A uniformly drawn architecture; channels are sorted within each stage (always valid)."""
        pick = _Picker(rng)
        stages = []
        for s, depth in enumerate(self.depths):
            widths = sorted(pick.choice(self._sk.channel_choices[s]) for _ in range(depth))
            blocks = []
            for b in range(depth):
                genes = {g: pick.choice(self.choices(s, b, g))
                         for g in ALL_GENES if g != "out_channels"}
                blocks.append(BlockGenes(out_channels=widths[b], **genes))
            stages.append(tuple(blocks))
        return Architecture(self.skeleton, tuple(stages), self.extended)

    def mutate(self, arch: Architecture, rng: RngLike, genes: GeneKind = "all",
               n_mutations: int = 1) -> Architecture:
        """Apply ``n_mutations`` point mutations of the given kind of genes.

        Each mutation picks a block uniformly among those having a searchable gene of that kind,
        then one of its genes uniformly, then a new value uniformly among the other choices.
        A new width that breaks monotonicity is repaired by clamping the other blocks of the same
        stage to it, so only ``out_channels`` (a size gene) is ever touched by the repair.
        """
        self._check_member(arch)
        if isinstance(n_mutations, bool) or not isinstance(n_mutations, numbers.Integral) or n_mutations < 1:
            raise ValueError(f"n_mutations={n_mutations!r} must be a positive integer")
        kind_genes = _genes_of_kind(genes)
        pick = _Picker(rng)
        candidates = []
        for s, b in self.positions():
            mutable = tuple(g for g in self.genes_of(s, b) if g in kind_genes
                            and len(self.choices(s, b, g)) > 1)
            if mutable:
                candidates.append((s, b, mutable))
        stages = [list(stage) for stage in arch.stages]
        for _ in range(int(n_mutations)):
            s, b, mutable = pick.choice(candidates)
            gene = pick.choice(mutable)
            current = stages[s][b].get(gene)
            value = pick.choice([v for v in self.choices(s, b, gene) if v != current])
            stages[s][b] = replace(stages[s][b], **{gene: value})
            if gene == "out_channels":
                for i, other in enumerate(stages[s]):
                    if (i < b and other.out_channels > value) or (i > b and other.out_channels < value):
                        stages[s][i] = replace(other, out_channels=value)
        return Architecture(self.skeleton, tuple(tuple(st) for st in stages), self.extended)

    def crossover(self, a: Architecture, b: Architecture, rng: RngLike) -> Architecture:
        """Uniform per-block crossover: each block's genes come whole from ``a`` or ``b``.

        Mixed widths can decrease within a stage; they are repaired by sorting each stage's
        inherited widths, which keeps the multiset of inherited widths (and every non-width gene
        at its position) and only reorders ``out_channels``.
        """
        self._check_member(a)
        self._check_member(b)
        pick = _Picker(rng)
        stages = []
        for stage_a, stage_b in zip(a.stages, b.stages):
            chosen = [ga if pick.coin() else gb for ga, gb in zip(stage_a, stage_b)]
            widths = sorted(g.out_channels for g in chosen)
            stages.append(tuple(replace(g, out_channels=w) for g, w in zip(chosen, widths)))
        return Architecture(self.skeleton, tuple(stages), self.extended)

    def efficientformer_v2(self) -> Architecture:
        """EfficientFormerV2's own network of this skeleton, as a point of this space."""
        return efficientformer_v2(self.skeleton, self.extended)


def efficientformer_v2(target: str, extended: bool = False) -> Architecture:
    """EfficientFormerV2-S0/S1/S2 expressed in our genes: per-stage widths, its per-block MLP
    ratios, IBN FFNs with 3x3 depthwise kernels, 8 heads of query/key width 32 (attn_ratio 4)."""
    sk = get_skeleton(target)
    stages = []
    for s, depth in enumerate(sk.depths):
        blocks = []
        for b in range(depth):
            attention = sk.is_attention(s, b)
            blocks.append(BlockGenes(
                ffn_type="ibn", kernel_size=3, out_channels=sk.ref_widths[s],
                expansion=sk.ref_expansions[s][b],
                num_heads=8 if attention else None, head_dim=32 if attention else None))
        stages.append(tuple(blocks))
    return Architecture(target, tuple(stages), extended)
