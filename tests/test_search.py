"""The ESFormer search: gene-restricted phases, budgets, resume, reproducibility, modes, CLI.

Algorithmic tests use a cheap deterministic stand-in for the proxies (the search must not care
what the scores are); one end-to-end run uses the real proxies at 64 px.  Budgets are given in
candidates, so nothing depends on this machine's speed.
"""
from __future__ import annotations

import json
import math
import random
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
import torch

import zcproxy
from zcproxy.esformer import (
    TOPOLOGY_GENES, Architecture, SearchSpace, build_model, count_macs, count_params,
)
from zcproxy.search import (
    BudgetError, CostModel, Member, Proposal, ProxyScorer, RegularizedEvolution, ResumeMismatch,
    SearchConfig, combined_rank, crossover_genes, read_events, run_search,
)
from zcproxy.search.__main__ import main as cli_main

# Small populations and counts: 2 multi-starts of 8, then 16-candidate phases, 90 in all.
SMALL = dict(starts=2, start_population=6, start_tournament=3, population=8, tournament=3,
             phase_candidates=16, multistart_candidates=8, total_candidates=90)


class FakeScorer:
    """Deterministic scores that depend on topology (ES) and on size (LogSynflow) so that both
    phases have something to climb; counts its calls to prove what a resume recomputes."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()

    def __call__(self, arch: Architecture, proxies):
        out = {}
        for proxy in proxies:
            self.calls[proxy] += 1
            if proxy == "entropic":
                out[proxy] = float(sum(g.kernel_size + 3 * (g.ffn_type == "convnext")
                                       for _, _, g in arch.blocks())
                                   + 1e-3 * (zlib.crc32(arch.to_json().encode()) % 997) / 997)
            else:
                out[proxy] = float(sum(g.out_channels * g.expansion for _, _, g in arch.blocks()))
        return out


def _candidates(out: Path) -> list[dict]:
    return [e for e in read_events(out / "log.jsonl") if e["event"] == "candidate"]


def _stable(events: list[dict]) -> list[dict]:
    """Events without their wall-clock fields."""
    clock = {"wall", "elapsed", "search_time", "seconds"}
    return [{k: v for k, v in e.items() if k not in clock} for e in events]


def _best_without_clock(out: Path) -> dict:
    best = json.loads((out / "best.json").read_text())
    best.pop("search_seconds")
    return best


@pytest.fixture(scope="module")
def decoupled_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("decoupled")
    run_search(SearchConfig(target="s0", seed=3, **SMALL), out, score_fn=FakeScorer(),
               progress=False)
    return out


# ---- the decoupled phases -----------------------------------------------------------------------
def test_phases_alternate_and_touch_only_their_genes(decoupled_run):
    events = read_events(decoupled_run / "log.jsonl")
    starts = [e for e in events if e["event"] == "phase_start"]
    assert [(e["name"], e["guide"]) for e in starts] == [
        ("multistart-1", "entropic"), ("multistart-2", "entropic"),
        ("topology-1", "entropic"), ("size-1", "logsynflow"), ("topology-2", "entropic"),
        ("size-2", "logsynflow"), ("topology-3", "entropic")]
    by_id = {c["id"]: c for c in _candidates(decoupled_run)}
    changed = Counter()
    for c in by_id.values():
        arch = Architecture.from_dict(c["arch"])
        assert set(c["scores"]) == {c["guide"]}  # only the guiding proxy is computed
        if c["kind"] == "all" or not c["parents"]:
            continue
        parents = [Architecture.from_dict(by_id[p]["arch"]) for p in c["parents"]]
        if c["origin"] == "seed":
            # the first main phase is seeded by every multi-start, the others by their previous
            source = by_id[c["parents"][0]]["phase"]
            assert arch == parents[0]
            assert source == c["phase"] - 1 or (c["phase"] == SMALL["starts"] and source < c["phase"])
            continue
        frozen = "size" if c["kind"] == "topology" else "topology"
        moving = c["kind"]
        assert arch.gene_values(frozen) == parents[0].gene_values(frozen), (c["id"], c["origin"])
        if c["origin"] == "crossover" and c["kind"] == "topology":
            # every block's topology genes come whole from one parent (up to the extra mutation
            # that only very alike parents get)
            mixed = [any(_block_genes(arch, s, b, TOPOLOGY_GENES) == _block_genes(p, s, b, TOPOLOGY_GENES)
                         for p in parents) for s, b in arch.space.positions()]
            assert sum(mixed) >= len(mixed) - 1
        changed[c["kind"]] += arch.gene_values(moving) != parents[0].gene_values(moving)
    # not vacuous: both kinds of phases did change their own genes
    assert changed["topology"] > 10 and changed["size"] > 10


def _block_genes(arch: Architecture, s: int, b: int, genes) -> tuple:
    return tuple(arch.stages[s][b].get(g) for g in genes)


def test_crossover_genes_keeps_the_other_kind_from_the_first_parent():
    space = SearchSpace("s1", extended=True)
    rng = random.Random(0)
    for _ in range(30):
        a, b = space.random(rng), space.random(rng)
        for kind, frozen in (("topology", "size"), ("size", "topology")):
            child = crossover_genes(space, a, b, rng, kind)
            assert child.gene_values(frozen) == a.gene_values(frozen)
            if kind == "size":  # widths are a per-stage sorted mix of both parents' widths
                for s, stage in enumerate(child.stages):
                    widths = [g.out_channels for g in stage]
                    assert widths == sorted(widths)
                    pool = Counter(g.out_channels for g in a.stages[s]) + \
                        Counter(g.out_channels for g in b.stages[s])
                    assert not Counter(widths) - pool


# ---- budgets ------------------------------------------------------------------------------------
def test_budget_is_never_exceeded(tmp_path):
    # 3.0 M parameters and 0.38 G MACs: only ~4% of random S0 networks fit both, so proposals
    # are rejected all the time, and the LogSynflow stand-in keeps pushing against the limit.
    max_params, max_macs = 3.0e6, 0.38e9
    out = tmp_path / "tight"
    run_search(SearchConfig(target="s0", max_params=3.0, max_macs=0.38, seed=1, **SMALL), out,
               score_fn=FakeScorer(), progress=False)
    archs = {json.dumps(c["arch"], sort_keys=True): c for c in _candidates(out)}
    largest = 0
    for c in archs.values():
        # recounted independently of the search's closed forms, on the built network
        params = count_params(build_model(Architecture.from_dict(c["arch"]), device="meta"))
        assert params == c["params"] and params <= max_params
        largest = max(largest, params)
    for c in list(archs.values())[::max(1, len(archs) // 3)]:  # traced MACs: 0.3 s each
        macs = count_macs(build_model(Architecture.from_dict(c["arch"]), device="meta"), 224)
        assert macs == c["macs"] and macs <= max_macs
    assert all(c["macs"] <= max_macs for c in archs.values())
    assert largest > 0.95 * max_params
    best = json.loads((out / "best.json").read_text())
    assert best["params"] <= max_params and best["macs"] <= max_macs


def test_cost_model_counts_match_the_built_network():
    for target, extended in (("s0", True), ("s1", False), ("s2", True)):
        space, cost = SearchSpace(target, extended), CostModel()
        rng = random.Random(7)
        archs = [space.efficientformer_v2()] + [space.random(rng) for _ in range(3)]
        for arch in archs:
            model = build_model(arch, device="meta")
            assert cost.params(arch) == count_params(model)
        assert cost.macs(archs[1]) == count_macs(build_model(archs[1], device="meta"), 224)
        small = CostModel(img_size=128)  # attention grids, and so both counts, depend on it
        assert small.params(archs[2]) == count_params(build_model(archs[2], img_size=128, device="meta"))
        assert small.macs(archs[2]) == count_macs(build_model(archs[2], img_size=128, device="meta"), 128)
        smallest = cost.minimum(space)
        assert all(cost.params(space.random(rng)) >= smallest for _ in range(300))


def test_unreachable_budget_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(BudgetError, match=r"--max-params 0\.5 M is unreachable: the smallest s0 "
                                          r"network has 1\.127 M parameters"):
        run_search(SearchConfig(target="s0", max_params=0.5, **SMALL), tmp_path / "a",
                   score_fn=FakeScorer(), progress=False)
    with pytest.raises(BudgetError, match=r"--max-macs 0\.01 G is unreachable"):
        run_search(SearchConfig(target="s0", max_macs=0.01, **SMALL), tmp_path / "b",
                   score_fn=FakeScorer(), progress=False)
    assert not (tmp_path / "a").exists()  # nothing written for a search that cannot run
    assert cli_main(["--target", "s0", "--max-params", "0.5", "--out", str(tmp_path / "c"),
                     "--phase-candidates", "4", "--total-candidates", "8"]) == 2
    assert "unreachable" in capsys.readouterr().err


# ---- resume and reproducibility -----------------------------------------------------------------
@pytest.mark.parametrize("stops", [(5,), (16, 40), (61,)])  # mid multi-start, boundary, late
def test_resume_continues_exactly_as_an_uninterrupted_run(decoupled_run, tmp_path, stops):
    out = tmp_path / "resumed"
    cfg = SearchConfig(target="s0", seed=3, **SMALL)
    scorer = FakeScorer()
    for i, stop in enumerate(stops):
        result = run_search(cfg, out, score_fn=scorer, resume=i > 0, progress=False,
                            stop_after=stop)
        assert result.interrupted and result.best is None
    resumed_scorer = FakeScorer()
    result = run_search(cfg, out, score_fn=resumed_scorer, resume=True, progress=False)
    assert not result.interrupted
    assert _stable(read_events(out / "log.jsonl")) == _stable(read_events(decoupled_run / "log.jsonl"))
    assert _best_without_clock(out) == _best_without_clock(decoupled_run)
    # the resumed process rescored nothing that was logged
    reference = FakeScorer()
    run_search(cfg, tmp_path / "again", score_fn=reference, progress=False)
    assert scorer.calls + resumed_scorer.calls == reference.calls


def test_resume_with_time_budgets_keeps_the_logged_phase_boundaries(tmp_path):
    """With time budgets the phases that ended before the interruption must end at their logged
    candidate counts on replay (the clock cannot be replayed); the interrupted phase continues
    on the clock from where the log left it."""
    class SlowScorer(FakeScorer):
        def __call__(self, arch, proxies):
            time.sleep(0.01)
            return super().__call__(arch, proxies)

    timed = {k: v for k, v in SMALL.items() if not k.endswith("candidates")}
    cfg = SearchConfig(target="s0", seed=2, multistart_minutes=0.002, phase_minutes=0.003,
                       total_minutes=0.05, **timed)
    out = tmp_path / "timed"
    first = run_search(cfg, out, score_fn=SlowScorer(), progress=False, stop_after=50)
    assert first.interrupted
    logged = read_events(out / "log.jsonl")
    ended_before = {e["phase"]: e["candidates"] for e in logged if e["event"] == "phase_end"}
    assert len(ended_before) >= 3
    run_search(cfg, out, score_fn=SlowScorer(), resume=True, progress=False)
    events = read_events(out / "log.jsonl")
    assert events[:len(logged)] == logged  # the resumed run only appended
    per_phase = Counter(e["phase"] for e in events if e["event"] == "candidate")
    ends = {e["phase"]: e for e in events if e["event"] == "phase_end"}
    assert all(per_phase[p] == ends[p]["candidates"] for p in ends)
    assert all(ends[p]["candidates"] == n for p, n in ended_before.items())
    assert sum(e["event"] == "done" for e in events) == 1


def test_resume_guards(decoupled_run, tmp_path):
    with pytest.raises(FileExistsError, match="--resume"):
        run_search(SearchConfig(target="s0", seed=3, **SMALL), decoupled_run,
                   score_fn=FakeScorer(), progress=False)
    with pytest.raises(ResumeMismatch, match="seed: log 3 vs now 4"):
        run_search(SearchConfig(target="s0", seed=4, **SMALL), decoupled_run,
                   score_fn=FakeScorer(), resume=True, progress=False)
    # a torn last line (killed mid-write) is dropped and the run resumes from the rest
    out = tmp_path / "torn"
    cfg = SearchConfig(target="s0", seed=3, **SMALL)
    run_search(cfg, out, score_fn=FakeScorer(), progress=False, stop_after=20)
    with open(out / "log.jsonl", "a") as fh:
        fh.write('{"event": "candidate", "id": 2')
    with pytest.warns(RuntimeWarning, match="incomplete last line"):
        run_search(cfg, out, score_fn=FakeScorer(), resume=True, progress=False)
    assert _best_without_clock(out) == _best_without_clock(decoupled_run)


def test_resume_refuses_a_log_of_other_proxy_definitions(tmp_path, monkeypatch):
    """A log records the version of each proxy it scored with; after a proxy's definition
    changed, resuming would rank its logged candidates against rescored ones."""
    import dataclasses

    from zcproxy.registry import _REGISTRY
    out = tmp_path / "versions"
    cfg = SearchConfig(target="s0", seed=3, **SMALL)
    run_search(cfg, out, score_fn=FakeScorer(), progress=False, stop_after=5)
    start = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert start["proxy_versions"] == {cfg.es_proxy: _REGISTRY[cfg.es_proxy].version,
                                       "logsynflow": _REGISTRY["logsynflow"].version}
    monkeypatch.setitem(_REGISTRY, "logsynflow",
                        dataclasses.replace(_REGISTRY["logsynflow"], version="99"))
    with pytest.raises(ResumeMismatch, match="proxy definitions .*'logsynflow': '1'.*'99'"):
        run_search(cfg, out, score_fn=FakeScorer(), resume=True, progress=False)


def test_a_log_has_one_writer_at_a_time(decoupled_run, tmp_path, capsys):
    """A second search on a folder whose log is open stops before reading or repairing it
    (it could cut a line the first one is writing); a refused resume releases the lock, so
    the corrected command resumes at once; a closed log can be opened again."""
    from zcproxy.atomic import FileInUse
    from zcproxy.search.log import SearchLog

    out = tmp_path / "busy"
    cfg = SearchConfig(target="s0", seed=3, **SMALL)
    run_search(cfg, out, score_fn=FakeScorer(), progress=False, stop_after=5)
    before = (out / "log.jsonl").read_bytes()
    holder = SearchLog(out / "log.jsonl")
    try:
        with pytest.raises(FileInUse, match="another process"):
            run_search(cfg, out, score_fn=FakeScorer(), resume=True, progress=False)
        assert cli_main(["--target", "s0", "--out", str(out), "--resume"]) == 2
        assert "being written by another process" in capsys.readouterr().err
    finally:
        holder.close()
    assert (out / "log.jsonl").read_bytes() == before
    with pytest.raises(ResumeMismatch):
        run_search(SearchConfig(target="s0", seed=4, **SMALL), out, score_fn=FakeScorer(),
                   resume=True, progress=False)
    run_search(cfg, out, score_fn=FakeScorer(), resume=True, progress=False)
    assert _best_without_clock(out) == _best_without_clock(decoupled_run)


def test_seed_makes_the_search_reproducible(decoupled_run, tmp_path):
    run_search(SearchConfig(target="s0", seed=3, **SMALL), tmp_path / "same",
               score_fn=FakeScorer(), progress=False)
    assert _stable(_candidates(tmp_path / "same")) == _stable(_candidates(decoupled_run))
    run_search(SearchConfig(target="s0", seed=4, **SMALL), tmp_path / "other",
               score_fn=FakeScorer(), progress=False)
    assert [c["arch"] for c in _candidates(tmp_path / "other")] != \
        [c["arch"] for c in _candidates(decoupled_run)]


# ---- modes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, guide, proxies", [
    ("combined", "combined", {"entropic", "logsynflow"}),
    ("logsynflow", "logsynflow", {"logsynflow"}),
])
def test_ablation_modes(tmp_path, mode, guide, proxies):
    out = tmp_path / mode
    scorer = FakeScorer()
    run_search(SearchConfig(target="s1", extended=True, mode=mode, seed=0, **SMALL), out,
               score_fn=scorer, progress=False)
    events = read_events(out / "log.jsonl")
    starts = [e for e in events if e["event"] == "phase_start"]
    assert [e["name"] for e in starts] == ["multistart-1", "multistart-2", "main"]
    assert {e["guide"] for e in starts} == {guide} and {e["kind"] for e in starts} == {"all"}
    candidates = [e for e in events if e["event"] == "candidate"]
    assert len(candidates) == SMALL["total_candidates"]
    assert all(set(c["scores"]) == proxies for c in candidates)
    best = json.loads((out / "best.json").read_text())
    assert best["chosen_by"] == guide and best["params"] <= 6e6
    assert set(best["scores"]) == {"entropic", "logsynflow"}
    # a main-phase child may differ from its parent in topology and in size genes at once
    by_id = {c["id"]: c for c in candidates}
    both = 0
    for c in candidates:
        if c["origin"] == "mutation" and c["phase"] == 2:
            a, p = (Architecture.from_dict(x["arch"]) for x in (c, by_id[c["parents"][0]]))
            both += (a.gene_values("topology") != p.gene_values("topology")
                     and a.gene_values("size") != p.gene_values("size"))
    assert both > 0


def test_combined_rank_by_hand():
    members = [Member(i, None, {"entropic": es, "logsynflow": ls})
               for i, (es, ls) in enumerate([(1.0, 30.0), (2.0, 10.0), (3.0, 20.0), (3.0, 10.0)])]
    # ES ranks (ties averaged) 1, 2, 3.5, 3.5 -> 0, 1/3, 5/6, 5/6; LS ranks 4, 1.5, 3, 1.5
    expected = [(0 + 1) / 2, (1 / 3 + 1 / 6) / 2, (5 / 6 + 2 / 3) / 2, (5 / 6 + 1 / 6) / 2]
    assert combined_rank(members) == pytest.approx(expected)


def test_regularized_evolution_ages_out_and_selects_the_fittest():
    """A toy genome (an int): the population is always the newest members, and parents are the
    two fittest of the tournament sample."""
    rng, evaluated, parents_seen = random.Random(0), [], []
    counter = iter(range(10 ** 6))

    def evaluate(proposal: Proposal, generation: int) -> Member:
        member = Member(next(counter), proposal.genome, {"f": float(proposal.genome)})
        evaluated.append(member)
        return member

    evo = RegularizedEvolution(population_size=5, tournament_size=5, rng=rng,
                               fitness=lambda ms: [m.scores["f"] for m in ms],
                               evaluate=evaluate, should_stop=lambda: len(evaluated) >= 40)

    def mutate(m: Member) -> Proposal:
        parents_seen.append((m.genome, sorted(x.genome for x in evo.population)))
        return Proposal(m.genome - 1, "mutation", (m.id,))

    history = evo.run((Proposal(g, "random") for g in (5, 9, 1, 7, 3, 8)),
                      mutate, lambda a, b: Proposal(a.genome + b.genome, "crossover", (a.id, b.id)))
    assert len(history) == 40 and [m.genome for m in history[:5]] == [5, 9, 1, 7, 3]
    assert list(evo.population) == history[-5:]
    # tournament = whole population here, so the mutated parent is always its maximum
    assert all(parent == population[-1] for parent, population in parents_seen)


# ---- the real proxies and the CLI ---------------------------------------------------------------
def test_end_to_end_with_the_real_proxies(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "real"
    cfg = SearchConfig(target="s0", resolution=64, starts=1, start_population=3,
                       start_tournament=2, population=3, tournament=2, phase_candidates=3,
                       total_candidates=9, seed=0)
    result = run_search(cfg, out, progress=False)
    best = json.loads((out / "best.json").read_text())
    assert best == result.best and best["params"] <= 3.5e6
    assert all(math.isfinite(v) for v in best["scores"].values())
    assert (out / "trajectory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a logged score is what the public API gives for that network at 64 px without layer
    # scale, built from the candidate's own seed (a hash of its genes and the run seed)
    c = next(c for c in _candidates(out) if c["guide"] == "logsynflow")
    arch = Architecture.from_dict(c["arch"])
    torch.manual_seed(ProxyScorer(64, seed=0).candidate_seed(arch))
    model = build_model(arch, img_size=64, layer_scale_init=None)
    assert zcproxy.score(model, "logsynflow", input_shape=(3, 64, 64)) == \
        pytest.approx(c["scores"]["logsynflow"], rel=1e-9)
    # and scores do not depend on the global RNG (a resumed run must score like a fresh one)
    first = ProxyScorer(64)(arch, ["logsynflow", "entropic"])
    torch.rand(100)
    assert ProxyScorer(64)(arch, ["logsynflow", "entropic"]) == first
    # the ES role is filled by the reading es_proxy names: |weights| here differs from the
    # signed default and equals the registered entropic_abs of the same network and seed
    absolute = ProxyScorer(64, es_proxy="entropic_abs")(arch, ["entropic", "logsynflow"])
    assert absolute["logsynflow"] == first["logsynflow"]
    assert absolute["entropic"] != pytest.approx(first["entropic"], rel=1e-3)
    seed = ProxyScorer(64).candidate_seed(arch)
    torch.manual_seed(seed)
    model = build_model(arch, img_size=64, layer_scale_init=None)
    assert zcproxy.score(model, "entropic_abs", input_shape=(3, 64, 64), seed=seed) == \
        pytest.approx(absolute["entropic"], rel=1e-9)


def test_the_es_reading_is_part_of_the_searchs_settings(decoupled_run):
    with pytest.raises(ValueError, match="not a reading of the Entropic Score"):
        SearchConfig(target="s0", es_proxy="logsynflow", **SMALL)
    with pytest.raises(ResumeMismatch, match="es_proxy: log 'entropic' vs now 'entropic_abs'"):
        run_search(SearchConfig(target="s0", seed=3, es_proxy="entropic_abs", **SMALL),
                   decoupled_run, score_fn=FakeScorer(), resume=True, progress=False)


def test_cli_help_and_bad_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--target", "--mode", "--resume", "--phase-candidates", "--resolution",
                 "--score-layer-scale", "--extended", "--max-macs", "--es-proxy", "examples:"):
        assert flag in text
    with pytest.raises(SystemExit) as exc:
        cli_main(["--out", "x", "--phase-candidates", "4"])  # no total budget
    assert exc.value.code == 2
    assert "--total-candidates" in capsys.readouterr().err
