"""The one interface every NAS benchmark adapter implements.

A benchmark names architectures by a dense integer index and a canonical string, knows the
trained accuracy of each, and can build the untrained PyTorch network.  Tables are loaded lazily:
constructing an adapter never reads a file, the first lookup does.
"""
from __future__ import annotations

import abc
import operator
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

# Output selectors belong to the core (the core never imports nasbench/); re-exported here for
# code that imported them from this module.
from ..context import OutputSelector, last_of_tuple, logits_only  # noqa: F401


class BenchmarkDataMissing(FileNotFoundError):
    """Raised when a benchmark file cannot be found; the message lists every place tried."""

    def __init__(self, what: str, tried: Sequence[object], how_to_get: str):
        lines = [f"{what} not found. Looked in:"] + [f"  - {p}" for p in tried]
        lines.append(how_to_get)
        super().__init__("\n".join(lines))
        self.tried = list(tried)


class Benchmark(abc.ABC):
    """A NAS benchmark: architectures by index, their accuracy, and their networks."""

    name: str
    datasets: tuple[str, ...] = ("cifar10",)
    output_selector: OutputSelector = staticmethod(logits_only)
    input_size: tuple[int, int, int] = (3, 32, 32)

    @abc.abstractmethod
    def table(self, dataset: str = "cifar10") -> pd.DataFrame:
        """One row per architecture, indexed 0..N-1, columns ``arch``, ``accuracy``, ``params``
        (in millions, or NaN where unknown) and optionally ``flops`` (millions)."""

    @abc.abstractmethod
    def build(self, index: int, dataset: str = "cifar10",
              device: torch.device | str = "cpu") -> nn.Module:
        """The untrained network for one architecture, on ``device``."""

    def input_shape(self, dataset: str = "cifar10") -> tuple[int, ...]:
        """Per-sample input shape of the networks trained on ``dataset``."""
        return self.input_size

    def __len__(self) -> int:
        return len(self.table(self.datasets[0]))

    def arch(self, index: int) -> str:
        return str(self.table(self.datasets[0])["arch"].iat[self._check_index(index)])

    def index_of(self, arch: str) -> int:
        """Index of a canonical architecture string; ValueError naming it if it is unknown."""
        lookup = getattr(self, "_index_lookup", None)
        if lookup is None:
            arches = self.table(self.datasets[0])["arch"]
            lookup = dict(zip(arches.tolist(), range(len(arches))))
            self._index_lookup = lookup
        try:
            return lookup[arch]
        except KeyError:
            raise ValueError(f"{arch!r} is not an architecture of {self.name}") from None

    def accuracy(self, index: int, dataset: str = "cifar10") -> float:
        return float(self.table(dataset)["accuracy"].iat[self._check_index(index)])

    def params(self, index: int, dataset: str = "cifar10") -> float:
        """Parameter count in millions as the benchmark records it (NaN where it does not)."""
        return float(self.table(dataset)["params"].iat[self._check_index(index)])

    #: Named sub-populations a study can be restricted to (name -> what it holds), for
    #: comparing with figures published over a part of the benchmark; "all" is implicit.
    populations: dict[str, str] = {}

    def population_mask(self, name: str, indices: Sequence[int]) -> np.ndarray:
        """True for each of ``indices`` that belongs to population ``name``."""
        if name == "all":
            return np.ones(len(indices), dtype=bool)
        if name not in self.populations:
            known = ", ".join(["all", *self.populations])
            raise ValueError(f"{self.name} has no population {name!r} (it has: {known})")
        return np.array([self._in_population(name, self.arch(int(i))) for i in indices],
                        dtype=bool)

    def _in_population(self, name: str, arch: str) -> bool:
        raise NotImplementedError(f"{self.name} declares population {name!r} but cannot "
                                  "test membership")

    def sample(self, n: int | None, seed: int = 0) -> list[int]:
        """``n`` distinct indices drawn uniformly with ``seed``; all of them, shuffled, if None.

        The draw is a prefix of one seeded permutation, so a larger sample with the same seed
        contains the smaller one, and any prefix of a partly scored run is itself uniform.
        """
        total = len(self)
        if n is None or n >= total:
            n = total
        if n < 0:
            raise ValueError(f"sample size must be positive, got {n}")
        return np.random.default_rng(seed).permutation(total)[:n].tolist()

    # ------------------------------------------------------------------ search genome
    # What a benchmark search (``zcproxy.search.bench``) walks the space with.  A genome is a
    # hashable value of the adapter's choosing (a tuple of choices); every genome these methods
    # return names an architecture the benchmark holds.  None of them reads accuracy.
    def genome(self, index: int) -> tuple:
        """The genome of architecture ``index``."""
        raise NotImplementedError(f"{self.name} offers no search genome")

    def genome_index(self, genome: tuple) -> int:
        """Index of the architecture a genome denotes; ValueError if the benchmark lacks it."""
        raise NotImplementedError(f"{self.name} offers no search genome")

    def is_valid_genome(self, genome: tuple) -> bool:
        """True if ``genome`` is well formed and names an architecture of the benchmark."""
        try:
            self.genome_index(genome)
        except (ValueError, TypeError, IndexError):
            return False
        return True

    def random_genome(self, rng) -> tuple:
        """A uniformly drawn architecture of the benchmark (``rng`` is a ``random.Random``)."""
        return self.genome(rng.randrange(len(self)))

    def mutate_genome(self, genome: tuple, rng, mutations: int = 1) -> tuple:
        """``mutations`` point changes of ``genome``: a valid architecture other than it."""
        raise NotImplementedError(f"{self.name} offers no search genome")

    def crossover_genomes(self, a: tuple, b: tuple, rng) -> tuple:
        """A valid child taking each gene from ``a`` or ``b`` (uniform crossover)."""
        raise NotImplementedError(f"{self.name} offers no search genome")

    def genome_vector(self, genome: tuple) -> np.ndarray:
        """The genome as a vector of categorical codes: Hamming distance between two vectors
        counts the point mutations between the genomes (used to project onto a sample)."""
        raise NotImplementedError(f"{self.name} offers no search genome")

    def _check_index(self, index: int) -> int:
        # operator.index accepts Python and numpy integers and refuses 3.7 (which int() would
        # silently turn into architecture 3) and "3".
        try:
            position = operator.index(index)
        except TypeError:
            raise TypeError(f"{self.name} architectures are numbered by integers, not "
                            f"{index!r}") from None
        if not 0 <= position < len(self):
            raise IndexError(f"{self.name} has architectures 0..{len(self) - 1}, not {index}")
        return position
