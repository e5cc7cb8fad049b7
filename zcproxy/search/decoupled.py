"""The ESFormer search: multi-start, then topology/size phases guided by different proxies.

Schedule (the paper's section 3.5):

1. multi-start: ``starts`` (5) random populations of 25 (tournament 5) evolve independently,
   each for its own budget (3 minutes), guided by the Entropic Score alone; mutations touch
   every gene.  The best of each becomes a seed of the main search.  Each REA step takes the
   two best of a tournament and makes two children: ``mutations`` (2) uniform point mutations
   of the best, and a uniform crossover of the two (see :mod:`.rea`).
2. main search: populations of 50 (tournament 10).  In ``decoupled`` mode, *topology* phases
   (only ``ffn_type``/``kernel_size`` mutate and cross over; ranked by the Entropic Score)
   alternate with *size* phases (only widths, expansions, heads, head widths; ranked by
   LogSynflow), 5 minutes each (6 for S2), until the total budget (45 / 55 minutes including
   the multi-start) runs out.  Each phase starts from the ``seeds`` best distinct
   architectures of the phase before, plus mutations of them until the population is full.
   In ``combined`` and ``logsynflow`` modes (the paper's Table 5 ablation) the main search is a
   single phase over all genes, guided by the combined score or by LogSynflow alone, and the
   multi-start uses that same guide.

The combined score is the mean of the two proxies' normalised ranks within the population
(``(rank - 1) / (n - 1)``, ties averaged): ranks make the two scores commensurable without
assuming anything about their scales (LogSynflow is ~1e7, the Entropic Score ~5-10, and a
z-score would let one outlier dominate), and within-population ranks are what a tournament
compares anyway.  The architectures a phase hands on, and the final answer, are ranked within
everything that phase evaluated.

Every candidate satisfies the budget before it is scored: parameters (and optionally MACs) at
224 px are counted exactly and cheaply (:mod:`.cost`); an over-budget proposal is drawn again
(a fresh mutation / crossover / random architecture), as is one already evaluated in the
phase (up to a few times; after that a duplicate is accepted and costs nothing, its score
being cached).  The final architecture is the best of the last phase by that phase's guide.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from ..atomic import write_text
from ..ensemble import combine
from ..esformer.space import (
    SIZE_GENES, TOPOLOGY_GENES, Architecture, GeneKind, SearchSpace, get_skeleton,
)
from .cost import CostModel
from .log import Replay, ResumeMismatch, SearchLog
from .rea import Member, Proposal, RegularizedEvolution, top_distinct
from .scoring import ENTROPIC, LOGSYNFLOW, CachedScorer, ProxyScorer, ScoreFn, check_es_proxy

MODES: tuple[str, ...] = ("decoupled", "combined", "logsynflow")
# Settings a log written before they existed was run with: until issue 17 the role "entropic"
# was filled by the |weights| reading (``entropic`` then, ``entropic_abs`` now), so such a log
# resumes only with --es-proxy entropic_abs, never silently with today's signed default.
LEGACY_SETTINGS: dict[str, Any] = {"es_proxy": "entropic_abs"}
COMBINED = "combined"
TARGET_MAX_PARAMS_M = {"s0": 3.5, "s1": 6.0, "s2": 12.5}
# The paper's time budgets (minutes): multi-start phase, main alternation, whole search.
PAPER_MINUTES = {"s0": (3.0, 5.0, 45.0), "s1": (3.0, 5.0, 45.0), "s2": (3.0, 6.0, 55.0)}
MAX_ATTEMPTS = 1000   # proposals drawn for one feasible candidate before giving up
NOVELTY_ATTEMPTS = 20  # of which this many may be rejected for repeating the phase's history
PLAIN_CROSSOVER_ATTEMPTS = 5  # then crossover children also get one mutation, to move at all


class BudgetError(ValueError):
    """The parameter/MAC budget cannot be met (or no feasible candidate could be drawn)."""


class SearchInterrupted(Exception):
    """Raised internally when ``stop_after`` fresh candidates have been scored."""


@dataclass(frozen=True)
class SearchConfig:
    """Everything that determines a search (a resumed run must use the same values).

    Budgets in minutes or candidates: a ``None`` time budget means the paper's value unless
    any candidate budget is given, in which case unset time budgets are off (runs that stop on
    counts are reproducible regardless of machine speed).  ``max_params`` is in millions
    (default: the target's 3.5 / 6 / 12.5), ``max_macs`` in billions (default: none).
    """

    target: str = "s1"
    extended: bool = False
    mode: str = "decoupled"
    max_params: float | None = None
    max_macs: float | None = None
    seed: int = 0
    resolution: int = 224
    budget_resolution: int = 224
    score_layer_scale: float | None = None
    score_seed: int = 0
    es_proxy: str = ENTROPIC
    num_classes: int = 1000
    starts: int = 5
    start_population: int = 25
    start_tournament: int = 5
    population: int = 50
    tournament: int = 10
    mutations: int = 2
    seeds: int = 5
    multistart_minutes: float | None = None
    phase_minutes: float | None = None
    total_minutes: float | None = None
    multistart_candidates: int | None = None
    phase_candidates: int | None = None
    total_candidates: int | None = None

    def __post_init__(self) -> None:
        get_skeleton(self.target)
        check_es_proxy(self.es_proxy)
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; choose one of {MODES}")
        for name in ("starts", "start_population", "start_tournament", "population",
                     "tournament", "mutations", "seeds", "resolution", "budget_resolution",
                     "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name in ("resolution", "budget_resolution"):
            if getattr(self, name) % 32:
                raise ValueError(f"{name}={getattr(self, name)} must be a multiple of 32")
        for name in ("max_params", "max_macs", "multistart_minutes", "phase_minutes",
                     "total_minutes"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name}={value!r} must be a positive number")
        for name in ("multistart_candidates", "phase_candidates", "total_candidates"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.score_layer_scale is not None and not (
                isinstance(self.score_layer_scale, (int, float)) and self.score_layer_scale > 0):
            raise ValueError(f"score_layer_scale={self.score_layer_scale!r} must be a positive "
                             "number or None (no layer scale)")
        if self.start_tournament > self.start_population or self.tournament > self.population:
            raise ValueError("a tournament cannot be larger than its population")
        if min(self.start_tournament, self.tournament) < 2:
            raise ValueError("tournaments need at least 2 members (two parents)")
        self.budgets()  # validates the combination

    @property
    def max_params_m(self) -> float:
        return self.max_params if self.max_params is not None else TARGET_MAX_PARAMS_M[self.target]

    def budgets(self) -> "Budgets":
        counts = (self.multistart_candidates, self.phase_candidates, self.total_candidates)
        by_count = any(c is not None for c in counts)
        paper = PAPER_MINUTES[self.target]
        minutes = [given if given is not None else (None if by_count else default)
                   for given, default in zip((self.multistart_minutes, self.phase_minutes,
                                              self.total_minutes), paper)]
        ms_n = self.multistart_candidates if self.multistart_candidates is not None else self.phase_candidates
        b = Budgets(*(None if m is None else 60.0 * m for m in minutes), ms_n,
                    self.phase_candidates, self.total_candidates)
        if b.total_seconds is None and b.total_candidates is None:
            raise ValueError("no total budget: give --total-candidates (or --total-minutes) "
                             "when budgeting by candidate counts")
        if b.multistart_seconds is None and b.multistart_candidates is None:
            raise ValueError("no multi-start budget: give --multistart-candidates or "
                             "--phase-candidates (or --multistart-minutes)")
        if self.mode == "decoupled" and b.phase_seconds is None and b.phase_candidates is None:
            raise ValueError("no phase budget for the topology/size alternation: give "
                             "--phase-candidates (or --phase-minutes)")
        return b


@dataclass(frozen=True)
class Budgets:
    multistart_seconds: float | None
    phase_seconds: float | None
    total_seconds: float | None
    multistart_candidates: int | None
    phase_candidates: int | None
    total_candidates: int | None


@dataclass(frozen=True)
class PhaseSpec:
    index: int
    name: str
    kind: GeneKind          # which genes mutate / cross over
    guide: str              # "entropic", "logsynflow" or "combined"
    population: int
    tournament: int
    max_seconds: float | None
    max_candidates: int | None

    @property
    def proxies(self) -> tuple[str, ...]:
        return (ENTROPIC, LOGSYNFLOW) if self.guide == COMBINED else (self.guide,)


@dataclass
class SearchResult:
    """What a search returns; ``best`` is None when it was interrupted."""

    out_dir: Path
    best: dict[str, Any] | None
    candidates: int
    interrupted: bool = False
    phases: list[dict[str, Any]] = field(default_factory=list)


# ---- operators restricted to one kind of genes --------------------------------------------------
def crossover_genes(space: SearchSpace, a: Architecture, b: Architecture, rng: random.Random,
                    kind: GeneKind = "all") -> Architecture:
    """Uniform per-block crossover of one kind of genes; every other gene comes from ``a``.

    ``kind="all"`` is the space's own crossover (whole blocks).  For ``"topology"`` the child
    has exactly ``a``'s size genes, for ``"size"`` exactly ``a``'s topology genes; crossing
    sizes can make widths decrease within a stage, so each stage's inherited widths are sorted
    (the repair the space's crossover uses; it moves only ``out_channels``).
    """
    if kind == "all":
        return space.crossover(a, b, rng)
    genes = {"topology": TOPOLOGY_GENES, "size": SIZE_GENES}.get(kind)
    if genes is None:
        raise ValueError(f"kind={kind!r}; choose 'topology', 'size' or 'all'")
    stages = []
    for stage_a, stage_b in zip(a.stages, b.stages):
        blocks = [replace(ga, **{g: gb.get(g) for g in genes}) if rng.randrange(2) else ga
                  for ga, gb in zip(stage_a, stage_b)]
        if kind == "size":
            widths = sorted(g.out_channels for g in blocks)
            blocks = [replace(g, out_channels=w) for g, w in zip(blocks, widths)]
        stages.append(tuple(blocks))
    return Architecture(a.skeleton, tuple(stages), a.extended)


# ---- fitness ------------------------------------------------------------------------------------
def _finite(value: float | None) -> float:
    return -math.inf if value is None or math.isnan(value) else float(value)


def fitness_of(guide: str) -> Callable[[Sequence[Member]], list[float]]:
    """Fitness of members in the context of the list they are in (higher is better)."""
    if guide in (ENTROPIC, LOGSYNFLOW):
        return lambda members: [_finite(m.scores.get(guide)) for m in members]
    if guide == COMBINED:
        return combined_rank
    raise ValueError(f"unknown guide {guide!r}")


def combined_rank(members: Sequence[Member]) -> list[float]:
    """Mean normalised rank of the Entropic Score and LogSynflow among ``members`` (the
    ``mean_rank`` rule of :mod:`zcproxy.ensemble`; a missing score ranks last)."""
    values = [[_finite(m.scores.get(p)) for p in (ENTROPIC, LOGSYNFLOW)] for m in members]
    return combine(values, "mean_rank").tolist()


# ---- the search ---------------------------------------------------------------------------------
class _Clock:
    """A phase's clock, which can start from a logged value (resume)."""

    def __init__(self) -> None:
        self.offset, self.start = 0.0, time.perf_counter()

    def set(self, elapsed: float) -> None:
        self.offset, self.start = elapsed, time.perf_counter()

    def elapsed(self) -> float:
        return self.offset + time.perf_counter() - self.start


class Search:
    """One search run writing into ``out_dir``; use :func:`run_search`."""

    def __init__(self, config: SearchConfig, out_dir: str | Path, *, score_fn: ScoreFn | None = None,
                 device: torch.device | str = "cpu", resume: bool = False, progress: bool = True,
                 stop_after: int | None = None):
        self.cfg, self.budgets = config, config.budgets()
        self.out_dir = Path(out_dir)
        self.space = SearchSpace(config.target, config.extended)
        self.cost = CostModel(config.budget_resolution, config.num_classes)
        self.cost.self_check(self.space)
        self.max_params = round(config.max_params_m * 1e6)
        self.max_macs = None if config.max_macs is None else round(config.max_macs * 1e9)
        self.rng = random.Random(config.seed)
        self.scorer = CachedScorer(score_fn or ProxyScorer(
            config.resolution, device, config.score_layer_scale, config.score_seed,
            config.num_classes, config.es_proxy))
        self.progress, self.stop_after = progress, stop_after
        self._check_budget_reachable()
        log_path = self.out_dir / "log.jsonl"
        if log_path.exists() and log_path.stat().st_size and not resume:
            raise FileExistsError(f"{log_path} exists: pass --resume (resume=True) to continue "
                                  "that search, or choose another --out")
        if self.out_dir.is_file():
            raise FileExistsError(f"--out {self.out_dir} is a file, not a folder")
        foreign = [n for n in ("best.json", "trajectory.png") if (self.out_dir / n).exists()]
        if foreign and not (log_path.exists() and log_path.stat().st_size):
            # Outputs without this search's log belong to another run: never overwrite them.
            raise FileExistsError(f"{self.out_dir} holds {' and '.join(foreign)} of another run "
                                  "(no log.jsonl of this search beside them); choose another "
                                  "--out")
        self.log = SearchLog(log_path)
        try:
            self.replay = Replay(self.log.events)
            self._check_config()
        except BaseException:
            self.log.close()  # releases the log's lock: a corrected command may resume at once
            raise
        if not self.log.events:
            self.log.append({"event": "start", "config": self._config_record(),
                             "proxy_versions": self._proxy_versions(), "wall": time.time()})
        self.next_id = 0
        self.fresh = 0               # candidates scored by this process
        self.total_candidates = 0    # candidates evaluated in the whole search
        self.completed_seconds = 0.0  # clock of finished phases
        self.phase_log: list[dict[str, Any]] = []
        self._last_note = time.perf_counter()

    # ---- configuration -----------------------------------------------------------------------
    def _config_record(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self.cfg)))

    def _proxy_versions(self) -> dict[str, str]:
        from ..registry import proxy_versions
        return proxy_versions([self.cfg.es_proxy, LOGSYNFLOW])

    def _check_config(self) -> None:
        logged = self.replay.config
        if logged is None:
            return
        logged = {**LEGACY_SETTINGS, **logged}
        now = self._config_record()
        diff = sorted(k for k in set(logged) | set(now) if logged.get(k) != now.get(k))
        if diff:
            details = ", ".join(f"{k}: log {logged.get(k)!r} vs now {now.get(k)!r}" for k in diff)
            raise ResumeMismatch(f"{self.out_dir / 'log.jsonl'} was written by a search with other "
                                 f"settings ({details}); resume with the same settings or use "
                                 "another --out")
        versions, now_versions = self.replay.proxy_versions, self._proxy_versions()
        if versions is not None and versions != now_versions:  # older logs recorded none
            raise ResumeMismatch(f"{self.out_dir / 'log.jsonl'} holds scores of proxy "
                                 f"definitions {versions}, not today's {now_versions}: its "
                                 "candidates would be ranked against rescored ones; use "
                                 "another --out")

    def _check_budget_reachable(self) -> None:
        smallest = self.cost.minimum(self.space, "params")
        if smallest > self.max_params:
            raise BudgetError(
                f"--max-params {self.cfg.max_params_m:g} M is unreachable: the smallest "
                f"{self._space_name()} network has {smallest / 1e6:.3f} M parameters "
                f"(at {self.cfg.budget_resolution} px)")
        if self.max_macs is not None:
            smallest = self.cost.minimum(self.space, "macs")
            if smallest > self.max_macs:
                raise BudgetError(
                    f"--max-macs {self.cfg.max_macs:g} G is unreachable: the smallest "
                    f"{self._space_name()} network needs {smallest / 1e9:.3f} G MACs "
                    f"(at {self.cfg.budget_resolution} px)")

    def _space_name(self) -> str:
        return f"{self.cfg.target}{' extended' if self.cfg.extended else ''}"

    def fits(self, arch: Architecture) -> bool:
        if self.cost.params(arch) > self.max_params:
            return False
        return self.max_macs is None or self.cost.macs(arch) <= self.max_macs

    # ---- proposals ---------------------------------------------------------------------------
    def _draw(self, make: Callable[[int], Architecture], seen: set[str], what: str) -> Architecture:
        for attempt in range(MAX_ATTEMPTS):
            arch = make(attempt)
            if not self.fits(arch):
                continue
            if attempt >= NOVELTY_ATTEMPTS or arch.to_json() not in seen:
                return arch
        budget = f"{self.cfg.max_params_m:g} M parameters" + (
            f" and {self.cfg.max_macs:g} G MACs" if self.max_macs is not None else "")
        raise BudgetError(f"no {what} within the budget ({budget}) in {MAX_ATTEMPTS} attempts "
                          f"(space {self._space_name()}); the budget is too tight for this "
                          "space: raise --max-params/--max-macs")

    def _random(self, seen: set[str]) -> Iterator[Proposal]:
        while True:
            arch = self._draw(lambda _: self.space.random(self.rng), seen, "random architecture")
            yield Proposal(arch, "random")

    def _mutation(self, parent: Member, kind: GeneKind, seen: set[str], origin: str = "mutation"
                  ) -> Proposal:
        arch = self._draw(lambda _: self.space.mutate(parent.genome, self.rng, kind,
                                                      self.cfg.mutations),
                          seen, f"{kind} mutation of candidate {parent.id}")
        return Proposal(arch, origin, (parent.id,))

    def _crossover(self, a: Member, b: Member, kind: GeneKind, seen: set[str]) -> Proposal:
        def make(attempt: int) -> Architecture:
            child = crossover_genes(self.space, a.genome, b.genome, self.rng, kind)
            if attempt >= PLAIN_CROSSOVER_ATTEMPTS:  # parents too alike to give a new child
                child = self.space.mutate(child, self.rng, kind, 1)
            return child
        arch = self._draw(make, seen, f"{kind} crossover of candidates {a.id} and {b.id}")
        return Proposal(arch, "crossover", (a.id, b.id))

    def _seeded(self, seeds: Sequence[Member], kind: GeneKind, seen: set[str]) -> Iterator[Proposal]:
        for seed in seeds:
            yield Proposal(seed.genome, "seed", (seed.id,))
        for i in range(10 ** 9):
            yield self._mutation(seeds[i % len(seeds)], kind, seen, origin="fill")

    # ---- evaluation and stopping -------------------------------------------------------------
    def _evaluate(self, spec: PhaseSpec, state: dict, proposal: Proposal, generation: int) -> Member:
        arch = proposal.genome
        key = arch.to_json()
        logged = self.replay.next_candidate(spec.index)
        if logged is not None:
            if logged["id"] != self.next_id or logged["arch"] != arch.to_dict():
                raise ResumeMismatch(
                    f"candidate {self.next_id} of phase {spec.name} differs from the logged one "
                    f"(id {logged['id']}); the log was written by another version of the search "
                    "or edited; use another --out")
            self.scorer.remember(key, logged["scores"])
            state["clock"].set(logged["elapsed"])
            scores = {p: logged["scores"].get(p) for p in spec.proxies}
            state["fresh"] += not logged["cached"]
        else:
            if self.stop_after is not None and self.fresh >= self.stop_after:
                raise SearchInterrupted
            scores, seconds, cached = self.scorer.score(arch, key, spec.proxies)
            params = self.cost.params(arch)
            macs = self.cost.macs(arch)
            elapsed = state["clock"].elapsed()
            self.log.append({
                "event": "candidate", "id": self.next_id, "phase": spec.index,
                "phase_name": spec.name, "kind": spec.kind, "guide": spec.guide,
                "generation": generation, "origin": proposal.origin,
                "parents": list(proposal.parents), "arch": arch.to_dict(), "params": params,
                "macs": macs, "scores": {p: _finite_or_none(v) for p, v in scores.items()},
                "seconds": round(seconds, 4), "cached": cached, "elapsed": elapsed,
                "search_time": self.completed_seconds + elapsed, "wall": time.time()})
            self.fresh += not cached
            state["fresh"] += not cached
        member = Member(self.next_id, arch, {p: _nan(_finite_or_none(v)) for p, v in scores.items()})
        self.next_id += 1
        self.total_candidates += 1
        state["count"] += 1
        state["seen"].add(key)
        self._heartbeat(spec, state)
        return member

    def _should_stop(self, spec: PhaseSpec, state: dict) -> bool:
        n = state["count"]
        ended = self.replay.ended.get(spec.index)
        if ended is not None:
            return n >= ended["candidates"]
        if self.replay.pending(spec.index):
            return False
        b = self.budgets
        if spec.max_candidates is not None and n >= spec.max_candidates:
            return True
        if b.total_candidates is not None and self.total_candidates >= b.total_candidates:
            return True
        elapsed = state["clock"].elapsed()
        if spec.max_seconds is not None and elapsed >= spec.max_seconds:
            return True
        return b.total_seconds is not None and self.completed_seconds + elapsed >= b.total_seconds

    def _total_exhausted(self) -> bool:
        b = self.budgets
        return ((b.total_candidates is not None and self.total_candidates >= b.total_candidates)
                or (b.total_seconds is not None and self.completed_seconds >= b.total_seconds))

    # ---- phases ------------------------------------------------------------------------------
    def run_phase(self, spec: PhaseSpec, initial: Callable[[set[str]], Iterator[Proposal]]
                  ) -> list[Member]:
        state = {"count": 0, "fresh": 0, "seen": set(), "clock": _Clock()}
        if spec.index not in self.replay.started:
            self.log.append({"event": "phase_start", "phase": spec.index, "name": spec.name,
                             "kind": spec.kind, "guide": spec.guide,
                             "population": spec.population, "tournament": spec.tournament,
                             "search_time": self.completed_seconds, "wall": time.time()})
        seen = state["seen"]
        evo = RegularizedEvolution(
            population_size=spec.population, tournament_size=spec.tournament, rng=self.rng,
            fitness=fitness_of(spec.guide),
            evaluate=lambda p, g: self._evaluate(spec, state, p, g),
            should_stop=lambda: self._should_stop(spec, state))
        history = evo.run(initial(seen),
                          mutate=lambda m: self._mutation(m, spec.kind, seen),
                          crossover=lambda a, b: self._crossover(a, b, spec.kind, seen))
        ended = self.replay.ended.get(spec.index)
        elapsed = ended["elapsed"] if ended is not None else state["clock"].elapsed()
        best = evo.best(1, key=lambda m: m.genome)[0] if history else None
        summary = {"phase": spec.index, "name": spec.name, "guide": spec.guide,
                   "candidates": state["count"], "fresh": state["fresh"], "elapsed": elapsed,
                   "best_id": None if best is None else best.id,
                   "best_scores": None if best is None else
                   {p: _finite_or_none(v) for p, v in best.scores.items()}}
        if ended is None:
            self.log.append({"event": "phase_end", **summary, "wall": time.time()})
        self.completed_seconds += elapsed
        self.phase_log.append(summary)
        self._note_phase(spec, summary)
        return history

    def run(self) -> SearchResult:
        if self.replay.total and self.progress:
            _say(f"resuming: replaying {self.replay.total} logged candidates of "
                 f"{self.log.path}")
        try:
            try:
                last_spec, last_history = self._schedule()
            except SearchInterrupted:
                return SearchResult(self.out_dir, None, self.total_candidates, True,
                                    self.phase_log)
            best = self._finish(last_spec, last_history)
        finally:
            self.log.close()
        return SearchResult(self.out_dir, best, self.total_candidates, False, self.phase_log)

    def _schedule(self) -> tuple[PhaseSpec, list[Member]]:
        cfg, b = self.cfg, self.budgets
        ms_guide = {"decoupled": ENTROPIC, "combined": COMBINED, "logsynflow": LOGSYNFLOW}[cfg.mode]
        index, seeds, starts = 0, [], []
        for i in range(cfg.starts):
            if index and self._total_exhausted():
                break
            spec = PhaseSpec(index, f"multistart-{i + 1}", "all", ms_guide, cfg.start_population,
                             cfg.start_tournament, b.multistart_seconds, b.multistart_candidates)
            history = self.run_phase(spec, self._random)
            starts.extend(history)
            seeds.extend(top_distinct(history, fitness_of(ms_guide), 1))
            index += 1
        last_spec, last_history = spec, starts
        alternation = 0
        while not self._total_exhausted() and seeds:
            if cfg.mode == "decoupled":
                kind = "topology" if alternation % 2 == 0 else "size"
                guide = ENTROPIC if kind == "topology" else LOGSYNFLOW
                spec = PhaseSpec(index, f"{kind}-{alternation // 2 + 1}", kind, guide,
                                 cfg.population, cfg.tournament, b.phase_seconds,
                                 b.phase_candidates)
            else:
                spec = PhaseSpec(index, "main", "all", ms_guide, cfg.population, cfg.tournament,
                                 None, None)
            history = self.run_phase(spec, lambda seen, s=seeds, k=spec.kind: self._seeded(s, k, seen))
            last_spec, last_history = spec, history
            seeds = top_distinct(history, fitness_of(spec.guide), cfg.seeds)
            index += 1
            alternation += 1
            if cfg.mode != "decoupled":
                break
        return last_spec, last_history

    def _finish(self, spec: PhaseSpec, history: list[Member]) -> dict[str, Any]:
        best = top_distinct(history, fitness_of(spec.guide), 1)[0]
        key = best.genome.to_json()
        scores, _, _ = self.scorer.score(best.genome, key, (ENTROPIC, LOGSYNFLOW))
        params, macs = self.cost.params(best.genome), self.cost.macs(best.genome)
        record = {
            "arch": best.genome.to_dict(), "params": params, "params_m": params / 1e6,
            "macs": macs, "macs_g": macs / 1e9,
            "scores": {p: _finite_or_none(v) for p, v in scores.items()},
            "chosen_by": spec.guide, "phase": spec.name, "candidate_id": best.id,
            "budget": {"max_params": self.max_params, "max_macs": self.max_macs,
                       "at_resolution": self.cfg.budget_resolution},
            "candidates": self.total_candidates, "search_seconds": self.completed_seconds,
            "config": self._config_record(),
        }
        if not self.replay.done:
            self.log.append({"event": "done", "best_id": best.id, "wall": time.time(),
                             "candidates": self.total_candidates,
                             "search_time": self.completed_seconds})
        # Atomic: a kill or a full disk leaves the previous best.json (or none), never a
        # truncated one beside a log that says "done".
        write_text(self.out_dir / "best.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
        try:
            from .trajectory import plot_trajectory
            plot_trajectory(self.out_dir / "log.jsonl", self.out_dir / "trajectory.png")
        except Exception as err:  # noqa: BLE001 -- best.json is written; a plot failure must not hide it
            _say(f"trajectory.png not written: {type(err).__name__}: {err}")
        if self.progress:
            _say(f"best: candidate {best.id} of {spec.name}, {params / 1e6:.3f} M params, "
                 f"{macs / 1e9:.3f} G MACs, ES {scores[ENTROPIC]:.4g}, "
                 f"LogSynflow {scores[LOGSYNFLOW]:.4g} -> {self.out_dir / 'best.json'}")
        return record

    # ---- progress ----------------------------------------------------------------------------
    def _heartbeat(self, spec: PhaseSpec, state: dict) -> None:
        now = time.perf_counter()
        if self.progress and not self.replay.pending(spec.index) and now - self._last_note > 60:
            self._last_note = now
            minutes = state["clock"].elapsed() / 60
            _say(f"  [{spec.name}] {state['count']} candidates, {minutes:.1f} min")

    def _note_phase(self, spec: PhaseSpec, summary: dict) -> None:
        if not self.progress:
            return
        minutes = summary["elapsed"] / 60
        rate = summary["fresh"] / minutes if minutes > 0 else float("nan")
        best = summary["best_scores"] or {}
        shown = ", ".join(f"{p} {v:.4g}" for p, v in best.items() if v is not None)
        replayed = " (replayed)" if spec.index in self.replay.ended else ""
        _say(f"[{spec.name}] guide {spec.guide}: {summary['candidates']} candidates "
             f"({summary['fresh']} newly scored) in {minutes:.1f} min, {rate:.1f}/min; "
             f"best {shown}; search clock {self.completed_seconds / 60:.1f} min{replayed}")
        self._last_note = time.perf_counter()


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_search(config: SearchConfig, out_dir: str | Path, *, score_fn: ScoreFn | None = None,
               device: torch.device | str = "cpu", resume: bool = False, progress: bool = True,
               stop_after: int | None = None) -> SearchResult:
    """Run (or, with ``resume``, continue) a search writing ``best.json``, ``log.jsonl`` and
    ``trajectory.png`` into ``out_dir``.

    ``score_fn(arch, proxies) -> {proxy: score}`` replaces the real proxies (tests use a cheap
    deterministic stand-in).  ``stop_after`` stops the run after that many newly scored
    candidates, leaving a log to resume from (``SearchResult.interrupted`` is then True).
    """
    return Search(config, out_dir, score_fn=score_fn, device=device, resume=resume,
                  progress=progress, stop_after=stop_after).run()
