"""Regularized evolution (REA, Real et al. 2019) with FreeREA's refinements, for any genome.

Each step samples a tournament from the population, takes its two best members as parents and
makes two children: one by mutating the best parent (several point mutations, chosen by the
caller's operator), one by crossing the two parents over.  Every child joins the population
and the oldest member leaves (ageing), so the population is always the last
``population_size`` candidates evaluated: old lucky scores cannot dominate forever.

The class knows nothing about architectures, budgets or proxies: the caller supplies the
operators (which already return feasible genomes), the evaluation, the fitness (which may
depend on the whole population, e.g. a rank-sum of two proxies) and the stopping rule.  Every
random choice goes through one ``random.Random``, so a run is a pure function of its seed and
the scores it is fed -- the property the resumable search relies on.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

G = TypeVar("G")


@dataclass
class Member(Generic[G]):
    """An evaluated genome.  ``id`` is unique over the whole search (parents refer to it)."""

    id: int
    genome: G
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Proposal(Generic[G]):
    """A genome to evaluate, and how it came about (for the log)."""

    genome: G
    origin: str                   # "random", "seed", "fill", "mutation", "crossover"
    parents: tuple[int, ...] = ()


Fitness = Callable[[Sequence[Member]], Sequence[float]]


class RegularizedEvolution(Generic[G]):
    """One population evolving until ``should_stop`` says so.

    ``evaluate(proposal, generation)`` returns the scored :class:`Member` (generation 0 is the
    initial population, then one per tournament).  ``fitness(members)`` returns one value per
    member, higher is better, computed in the context of that list (the population).
    """

    def __init__(self, *, population_size: int, tournament_size: int, rng: random.Random,
                 fitness: Fitness, evaluate: Callable[[Proposal, int], Member],
                 should_stop: Callable[[], bool]):
        if population_size < 2:
            raise ValueError(f"population_size={population_size} must be at least 2")
        if not 2 <= tournament_size <= population_size:
            raise ValueError(f"tournament_size={tournament_size} must be between 2 and the "
                             f"population size {population_size}")
        self.population_size, self.tournament_size = population_size, tournament_size
        self.rng, self.fitness, self.evaluate = rng, fitness, evaluate
        self.should_stop = should_stop
        self.population: deque[Member] = deque()
        self.history: list[Member] = []
        self.generation = 0

    def _add(self, member: Member) -> None:
        self.population.append(member)
        self.history.append(member)
        if len(self.population) > self.population_size:
            self.population.popleft()  # ageing: the oldest dies, whatever its score

    def parents(self) -> tuple[Member, Member]:
        """Tournament selection: the two fittest of a uniform sample (ties: sample order)."""
        members = list(self.population)
        values = self.fitness(members)
        size = min(self.tournament_size, len(members))
        sample = self.rng.sample(range(len(members)), size)
        ranked = sorted(sample, key=lambda i: -values[i])
        best = members[ranked[0]]
        return best, (members[ranked[1]] if len(ranked) > 1 else best)

    def run(self, initial: Iterable[Proposal],
            mutate: Callable[[Member], Proposal],
            crossover: Callable[[Member, Member], Proposal]) -> list[Member]:
        """Evaluate the (lazy) initial proposals, then evolve; returns every member evaluated.

        ``initial`` is consumed one proposal at a time between stop checks, so a budget can end
        the phase during initialisation and no proposal is drawn that will not be evaluated.
        """
        proposals = iter(initial)
        while len(self.population) < self.population_size and not self.should_stop():
            proposal = next(proposals, None)
            if proposal is None:
                break
            self._add(self.evaluate(proposal, 0))
        while self.population and not self.should_stop():
            self.generation += 1
            best, second = self.parents()
            self._add(self.evaluate(mutate(best), self.generation))
            if self.should_stop():
                break
            self._add(self.evaluate(crossover(best, second), self.generation))
        return self.history

    def best(self, k: int = 1, key: Callable[[Member], Any] | None = None) -> list[Member]:
        """The ``k`` fittest distinct genomes of the history (fitness over the whole history)."""
        return top_distinct(self.history, self.fitness, k, key)


def top_distinct(members: Sequence[Member], fitness: Fitness, k: int,
                 key: Callable[[Member], Any] | None = None) -> list[Member]:
    """The ``k`` fittest members with distinct ``key`` (default: the genome); ties keep the
    earlier member, so the choice does not depend on anything but the scores."""
    key = key or (lambda m: m.genome)
    values = fitness(list(members))
    order = sorted(range(len(members)), key=lambda i: (-values[i], i))
    chosen, seen = [], set()
    for i in order:
        k_i = key(members[i])
        if k_i in seen:
            continue
        seen.add(k_i)
        chosen.append(members[i])
        if len(chosen) == k:
            break
    return chosen

