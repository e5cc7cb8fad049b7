"""Training-free search of a NAS benchmark: REA (or random sampling) guided by proxies.

The evolution is :class:`zcproxy.search.rea.RegularizedEvolution`, the engine the ESFormer
search uses; the genome, mutation and crossover come from the benchmark adapter
(``Benchmark.genome`` and friends), the scores from a source (:mod:`.sources`: computed live or
looked up), and the fitness from a guide: one proxy (lower-is-better ones negated, a failed
score last) or several combined within the population by a rule of :mod:`zcproxy.ensemble`.

The search never reads accuracy: it sees indices, genomes and scores only.  The accuracy of
what it found is looked up afterwards (:func:`accuracies`).

Definitions used in every report:

* an *evaluation* is one candidate the search evaluates (a proposal of the initial population,
  a mutant, a crossover child, a random draw).  A repeat of an architecture already evaluated in
  the run counts as an evaluation but costs no proxy time (its scores are remembered); proposals
  that repeat the run's history are drawn again up to ``novelty_attempts`` times first.
* the *incumbent* after k evaluations is the fittest distinct architecture among the first k by
  the guide (ensembles ranked over those distinct architectures); the search's answer is the
  incumbent at the end.  A run stopped by an evaluation budget is a pure function of its seed
  and the scores, and the first k evaluations of a longer run are exactly a k-evaluation run,
  so one 1,000-evaluation run also answers "what would 100 have found".
* *score seconds* are the proxy seconds charged: measured when scoring live, the score table's
  recorded seconds in cached mode.  ``seconds`` budgets count them, so a cached run stops where
  a live run on the machine that made the table would have.

Restricted spaces: when the scores cover only a sample of the benchmark (NB101: 1,000 of
423,624 cells), random draws come from the sample and every mutant or crossover child is
projected onto the sampled architecture nearest to it (Hamming distance of
``Benchmark.genome_vector``, ties drawn at random; a mutant never projects back onto its
parent, and sampled architectures the run has not evaluated yet are preferred while any
remain).  Such a search is a search of the sample, not of the benchmark, and says so.
"""
from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from ...ensemble import canonical_rule, combine, orientation
from ..rea import Member, Proposal, RegularizedEvolution

STRATEGIES = ("rea", "random")
NO_GUIDE = "none"
ScoreFn = Callable[[int, Sequence[str]], tuple[dict, float]]


# ---- guides -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Guide:
    """What ranks candidates: no proxy (random search), one proxy, or an ensemble."""

    proxies: tuple[str, ...] = ()
    rule: str | None = None  # a rule of zcproxy.ensemble when there are several proxies

    def __post_init__(self) -> None:
        if len(set(self.proxies)) != len(self.proxies):
            raise ValueError(f"a guide names a proxy twice: {self.proxies}")
        if len(self.proxies) > 1:
            object.__setattr__(self, "rule", canonical_rule(self.rule or "mean_rank"))
        elif self.rule is not None:
            object.__setattr__(self, "rule", None)  # a single proxy needs no rule

    @classmethod
    def parse(cls, text: str, combine_rule: str | None = None) -> "Guide":
        """``"logsynflow"``, ``"naswot,logsynflow,entropic"`` (combined by ``combine_rule``,
        default mean rank), ``"freerea:naswot,logsynflow"``, or ``"none"``."""
        text = text.strip()
        if text in (NO_GUIDE, ""):
            return cls()
        rule = combine_rule
        if ":" in text:
            rule, text = text.split(":", 1)
        names = tuple(p.strip() for p in text.replace("+", ",").split(",") if p.strip())
        return cls(names, rule)

    @property
    def label(self) -> str:
        if not self.proxies:
            return NO_GUIDE
        if len(self.proxies) == 1:
            return self.proxies[0]
        return f"{self.rule}({'+'.join(self.proxies)})"

    def check(self) -> None:
        """ValueError unless every proxy is registered (its direction comes from there)."""
        orientation(self.proxies)

    @functools.cached_property
    def signs(self) -> np.ndarray:
        return orientation(self.proxies)

    def values(self, scores: Sequence[dict]) -> np.ndarray:
        """Fitness of each score dict in the context of the list (higher is better)."""
        if not self.proxies:
            raise ValueError("a search without a guide has no fitness")
        signs = self.signs
        matrix = np.array([[s.get(p, math.nan) for p in self.proxies] for s in scores],
                          dtype=np.float64).reshape(len(scores), len(self.proxies))
        if len(self.proxies) == 1:
            column = matrix[:, 0] * signs[0]
            return np.where(np.isnan(column), -np.inf, column)
        return combine(matrix, self.rule, signs)

    def fitness(self, members: Sequence[Member]) -> list[float]:
        return self.values([m.scores for m in members]).tolist()


# ---- configuration and result -------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSearchConfig:
    """Everything that determines a run (with an evaluation budget, exactly)."""

    bench: str
    guide: Guide = field(default_factory=Guide)
    strategy: str = "rea"
    evaluations: int | None = 1000
    seconds: float | None = None
    seed: int = 0
    population: int = 25
    tournament: int = 5
    mutations: int = 1
    novelty_attempts: int = 20

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}; choose one of {STRATEGIES}")
        if self.strategy == "rea" and not self.guide.proxies:
            raise ValueError("REA needs a guide (a proxy or an ensemble); random search is "
                             "strategy 'random' with guide 'none'")
        if self.evaluations is None and self.seconds is None:
            raise ValueError("no budget: give evaluations and/or seconds")
        for name in ("evaluations", "population", "tournament", "mutations"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"seconds={self.seconds!r} must be positive")
        if self.novelty_attempts < 0:
            raise ValueError("novelty_attempts must be >= 0")
        if self.strategy == "rea" and not 2 <= self.tournament <= self.population:
            raise ValueError(f"tournament={self.tournament} must be between 2 and the "
                             f"population {self.population}")

    @property
    def name(self) -> str:
        return f"{self.strategy}@{self.guide.label}"

    def record(self) -> dict:
        out = asdict(self)
        out["guide"] = self.guide.label
        return out


class Candidate(NamedTuple):
    """A benchmark architecture as the search holds it."""

    index: int
    genome: tuple


@dataclass
class BenchRun:
    """One search: what it evaluated, in order, and what it cost."""

    config: BenchSearchConfig
    indices: list[int] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    charged: list[float] = field(default_factory=list)   # proxy seconds per evaluation
    wall: list[float] = field(default_factory=list)      # cumulative wall seconds
    cpu: list[float] = field(default_factory=list)       # cumulative CPU seconds (this process)
    space: int = 0                                       # architectures the search could visit
    restricted: bool = False                             # the space is a sample of the benchmark

    @property
    def evaluations(self) -> int:
        return len(self.indices)

    def distinct(self, k: int | None = None) -> int:
        return len(set(self.indices[:k]))

    def score_seconds(self, k: int | None = None) -> float:
        return float(sum(self.charged[:k]))

    def wall_seconds(self, k: int | None = None) -> float:
        k = len(self.wall) if k is None else min(k, len(self.wall))
        return self.wall[k - 1] if k else 0.0

    def cpu_seconds(self, k: int | None = None) -> float:
        k = len(self.cpu) if k is None else min(k, len(self.cpu))
        return self.cpu[k - 1] if k else 0.0

    def incumbents(self, checkpoints: Sequence[int]) -> list[int | None]:
        """The incumbent's index after each number of evaluations (None without a guide)."""
        guide = self.config.guide
        if not guide.proxies:
            return [None for _ in checkpoints]
        first: dict[int, int] = {}
        for position, index in enumerate(self.indices):
            first.setdefault(index, position)
        order = sorted(first.values())           # positions of first occurrences
        out = []
        for k in checkpoints:
            k = min(k, self.evaluations)
            rows = [p for p in order if p < k]
            if not rows:
                out.append(None)
                continue
            values = guide.values([self.scores[p] for p in rows])
            out.append(self.indices[rows[int(np.argmax(values))]])  # ties: the earliest
        return out

    def chosen(self, k: int | None = None) -> int | None:
        return self.incumbents([self.evaluations if k is None else k])[0]


# ---- the search ---------------------------------------------------------------------------------
class _Projection:
    """Maps a genome onto the nearest architecture of a sample (restricted spaces)."""

    def __init__(self, bench, allowed: np.ndarray):
        self.indices = np.asarray(allowed, dtype=np.int64)
        self.genomes = [bench.genome(int(i)) for i in self.indices]
        self.vectors = np.stack([bench.genome_vector(g) for g in self.genomes])
        self.bench = bench
        self.position = {int(i): k for k, i in enumerate(self.indices)}

    def nearest(self, genome: tuple, rng: random.Random, exclude: int | None = None,
                avoid: np.ndarray | None = None) -> Candidate:
        """The sampled architecture nearest to ``genome`` (ties drawn at random), never
        ``exclude``, and not one flagged in ``avoid`` (the run's visited ones) while any
        unflagged one remains."""
        distance = (self.vectors != self.bench.genome_vector(genome)).sum(axis=1)
        far = self.vectors.shape[1] + 1
        if avoid is not None and not avoid.all():
            distance = distance + far * avoid
        if exclude is not None and exclude in self.position and len(self.indices) > 1:
            distance[self.position[exclude]] = 4 * far
        ties = np.flatnonzero(distance == distance.min())
        k = int(ties[rng.randrange(len(ties))])
        return Candidate(int(self.indices[k]), self.genomes[k])

    def flag(self, flags: np.ndarray, index: int) -> None:
        position = self.position.get(index)
        if position is not None:
            flags[position] = 1


class BenchSearch:
    """One run; use :func:`search_benchmark`."""

    def __init__(self, config: BenchSearchConfig, bench, scores: ScoreFn,
                 allowed: Sequence[int] | np.ndarray | None = None):
        self.cfg, self.bench, self.score_fn = config, bench, scores
        config.guide.check()
        self.rng = random.Random(config.seed)
        self.size = len(bench)
        self.allowed = None if allowed is None else np.unique(np.asarray(allowed, dtype=np.int64))
        if self.allowed is not None and len(self.allowed) == self.size:
            self.allowed = None
        if self.allowed is not None and len(self.allowed) == 0:
            raise ValueError("the search space is empty: no architecture has every score needed")
        self.projection = (_Projection(bench, self.allowed)
                           if self.allowed is not None and config.strategy == "rea" else None)
        self.run = BenchRun(config, space=self.size if self.allowed is None else len(self.allowed),
                            restricted=self.allowed is not None)
        self.memo: dict[int, dict] = {}
        self.seen: set[int] = set()
        self._flags = (np.zeros(len(self.projection.indices), dtype=np.int64)
                       if self.projection is not None else None)
        self._t0 = self._c0 = 0.0

    # ---- budget and evaluation ---------------------------------------------------------------
    def exhausted(self) -> bool:
        cfg, run = self.cfg, self.run
        if cfg.evaluations is not None and run.evaluations >= cfg.evaluations:
            return True
        return cfg.seconds is not None and run.score_seconds() >= cfg.seconds

    def evaluate(self, candidate: Candidate, origin: str) -> Member:
        index = candidate.index
        if index in self.memo:
            scores, charged = self.memo[index], 0.0
        elif self.cfg.guide.proxies:
            scores, charged = self.score_fn(index, self.cfg.guide.proxies)
            scores = {p: float(scores[p]) for p in self.cfg.guide.proxies}
            self.memo[index] = scores
        else:
            scores, charged = {}, 0.0
        run = self.run
        run.indices.append(index)
        run.origins.append(origin)
        run.scores.append(scores)
        run.charged.append(float(charged))
        run.wall.append(time.perf_counter() - self._t0)
        run.cpu.append(time.process_time() - self._c0)
        self.seen.add(index)
        if self.projection is not None:
            self.projection.flag(self._flags, index)
        return Member(run.evaluations - 1, candidate, scores)

    # ---- proposals ---------------------------------------------------------------------------
    def candidate(self, genome: tuple) -> Candidate:
        return Candidate(self.bench.genome_index(genome), genome)

    def random_candidate(self) -> Candidate:
        if self.allowed is None:
            index = self.rng.randrange(self.size)
        else:
            index = int(self.allowed[self.rng.randrange(len(self.allowed))])
        return Candidate(index, self.bench.genome(index))

    def _novel(self, make: Callable[[], Candidate]) -> Candidate:
        if self.projection is not None:  # projections already avoid visited architectures
            return make()
        for _ in range(self.cfg.novelty_attempts):
            candidate = make()
            if candidate.index not in self.seen:
                return candidate
        return make()

    def _visited_flags(self) -> np.ndarray:
        return self._flags

    def _initial(self) -> Iterator[Proposal]:
        while True:
            candidate = self.random_candidate()
            for _ in range(self.cfg.novelty_attempts):
                if candidate.index not in self.seen:
                    break
                candidate = self.random_candidate()
            yield Proposal(candidate, "random")

    def _mutation(self, parent: Member) -> Proposal:
        def make() -> Candidate:
            genome = self.bench.mutate_genome(parent.genome.genome, self.rng, self.cfg.mutations)
            if self.projection is not None:
                return self.projection.nearest(genome, self.rng, exclude=parent.genome.index,
                                               avoid=self._visited_flags())
            return self.candidate(genome)
        return Proposal(self._novel(make), "mutation", (parent.id,))

    def _crossover(self, a: Member, b: Member) -> Proposal:
        def make() -> Candidate:
            genome = self.bench.crossover_genomes(a.genome.genome, b.genome.genome, self.rng)
            if self.projection is not None:
                return self.projection.nearest(genome, self.rng, avoid=self._visited_flags())
            return self.candidate(genome)
        return Proposal(self._novel(make), "crossover", (a.id, b.id))

    # ---- strategies --------------------------------------------------------------------------
    def execute(self) -> BenchRun:
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        if self.cfg.strategy == "random":
            self._random_search()
        else:
            evo = RegularizedEvolution(
                population_size=self.cfg.population, tournament_size=self.cfg.tournament,
                rng=self.rng, fitness=self.cfg.guide.fitness,
                evaluate=lambda proposal, _generation: self.evaluate(proposal.genome,
                                                                     proposal.origin),
                should_stop=self.exhausted)
            evo.run(self._initial(), self._mutation, self._crossover)
        return self.run

    def _random_search(self) -> None:
        """Distinct architectures drawn uniformly (all of them, shuffled, if the budget allows)."""
        pool = self.size if self.allowed is None else len(self.allowed)
        wanted = pool if self.cfg.evaluations is None else min(self.cfg.evaluations, pool)
        for k in self.rng.sample(range(pool), wanted):
            if self.exhausted():
                break
            index = k if self.allowed is None else int(self.allowed[k])
            self.evaluate(Candidate(index, ()), "random")


def search_benchmark(config: BenchSearchConfig, bench, scores: ScoreFn,
                     allowed: Sequence[int] | np.ndarray | None = None) -> BenchRun:
    """Run one search of ``bench`` (an adapter) with ``scores(index, proxies) -> (scores,
    seconds)``, restricted to the ``allowed`` indices if given.  Never reads accuracy."""
    return BenchSearch(config, bench, scores, allowed).execute()


# ---- after the search ---------------------------------------------------------------------------
def accuracy_columns(bench) -> dict[str, np.ndarray]:
    """Accuracy of every architecture per dataset of the benchmark (read after searching)."""
    return {ds: bench.table(ds)["accuracy"].to_numpy(dtype=np.float64) for ds in bench.datasets}


def accuracies(bench, index: int | None,
               columns: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    columns = columns or accuracy_columns(bench)
    return {ds: (math.nan if index is None else float(acc[index])) for ds, acc in columns.items()}


def checkpoints(budget: int, extra: Sequence[int] = ()) -> list[int]:
    """Evaluation counts at which a trajectory is recorded: dense early, sparse late."""
    grid = {1, 2, 3, 5, 7, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 125, 150, 175, 200,
            250, 300, 350, 400, 450, 500, 600, 700, 800, 900, 1000}
    grid |= {k for k in range(1000, budget + 1, 250)}
    grid |= set(extra) | {budget}
    return sorted(k for k in grid if 1 <= k <= budget)


__all__ = ["Guide", "BenchSearchConfig", "BenchRun", "Candidate", "BenchSearch",
           "search_benchmark", "accuracies", "accuracy_columns", "checkpoints", "STRATEGIES",
           "NO_GUIDE"]
