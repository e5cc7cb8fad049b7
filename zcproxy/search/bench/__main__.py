"""Command line of the benchmark search: ``python -m zcproxy.search.bench --help``
(also reached as ``python -m zcproxy.search --bench ...``)."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ...atomic import write_csv, write_text
from ...cli import UsageError, add_debug_flag, run_command
from ...ensemble import ALIASES, RULES
from ...nasbench import BENCHMARKS, get_benchmark
from ...registry import available_proxies, get_proxy
from ...runner import SETTING_DEFAULTS, arithmetic_of
from .engine import STRATEGIES, BenchSearchConfig, Guide, accuracies, search_benchmark
from .sources import CachedScores, HybridScores, LiveScores, ScoreTable, StopScoring
from .study import Method, StudySpec, method_label, run_study

DESCRIPTION = """\
Search a NAS benchmark without training: regularized evolution (the REA engine the ESFormer
search uses, FreeREA's mutation + crossover + ageing) guided by a zero-cost proxy, by several
proxies combined within the population, or by a structural baseline; or random sampling.

The search never reads accuracy; the accuracy of the architecture it returns (the fittest
distinct architecture it evaluated) is looked up afterwards on every dataset of the benchmark
(NATS-tss: CIFAR-10/100 and ImageNet16-120 test; NATS-sss: the three validation accuracies;
NB101: CIFAR-10 test, mean of 3 runs).

Scores are computed live (through the same Worker and per-architecture seed as `python -m
zcproxy.correlate`), or looked up with --scores in a correlate output (cached mode: 30 seeds
cost seconds).  If the tables cover only a sample of the benchmark, the search is restricted
to that sample, and says so.

One run prints (and with --out writes) its evaluations, distinct architectures, wall / CPU /
proxy seconds and the accuracies found.  --repeats N runs a study: every --guide (default: every
proxy in the tables, the structural baselines, three ensembles, random search) for N seeds,
into --out (default results/bench-search/<bench>): runs.csv, summary.csv/.md,
comparisons.csv, accuracy_vs_evaluations.png.  Interrupted runs continue when the same command
is run again (live scores are journaled in <out>/live-scores.csv; finished study runs are
skipped)."""

EPILOG = """\
guides:
  logsynflow                          one registered proxy (or baseline: n_params, n_flops, ...)
  naswot,logsynflow,entropic          an ensemble, combined by --combine (default rank)
  freerea:naswot,logsynflow           an ensemble with its own rule (rank, freerea, aznas)
  random@naswot                       random sampling, the best by the proxy (NASWOT's search)
  none                                random search: no proxy (reports the mean sampled and the
                                      best by accuracy, an oracle)

examples:
  python -m zcproxy.search.bench --bench nats-tss --guide logsynflow --evaluations 100
  python -m zcproxy.search.bench --bench nats-tss --guide naswot,logsynflow,entropic \\
      --combine freerea --scores results/correlate/nats-tss --seed 3
  python -m zcproxy.search.bench --bench nats-sss --scores results/correlate/nats-sss-all \\
      --live-missing --repeats 30 --budgets 100,1000      # the committed study
  python -m zcproxy.search.bench --bench nb101 --scores results/correlate/nb101 --list-guides
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zcproxy.search.bench", description=DESCRIPTION,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", required=True, choices=BENCHMARKS, help="benchmark to search")
    g = p.add_argument_group("what guides the search")
    g.add_argument("--guide", action="append", metavar="GUIDE",
                   help="a proxy, an ensemble or 'none' (see below); repeat it for a study")
    rules = sorted(set(RULES) | set(ALIASES))
    g.add_argument("--combine", default="rank", choices=rules,
                   help="rule for guides of several proxies: rank = mean normalised rank within "
                        "the population (the ESFormer search's), freerea = each divided by the "
                        "population's max |value| and summed, aznas = Σ log(rank/N) "
                        "(default: %(default)s)")
    g.add_argument("--strategy", default="rea", choices=STRATEGIES,
                   help="rea: regularized evolution; random: sample uniformly, keep the best by "
                        "the guide (default: %(default)s)")
    g.add_argument("--list-guides", action="store_true",
                   help="list the proxies the score tables (or the registry) offer and exit")

    g = p.add_argument_group("budgets")
    g.add_argument("--evaluations", type=int, default=1000,
                   help="candidates evaluated per run (reproducible; default %(default)s)")
    g.add_argument("--seconds", type=float,
                   help="proxy-seconds budget: measured live, the tables' recorded seconds in "
                        "cached mode")
    g.add_argument("--budgets", default=None, metavar="N,N",
                   help="study: also report these smaller budgets, read from each run's first "
                        "evaluations (default: 100 and --evaluations)")

    g = p.add_argument_group("evolution")
    d = BenchSearchConfig("nats-tss", Guide(("n_params",)))
    g.add_argument("--population", type=int, default=d.population,
                   help="population size; the first this many candidates are random "
                        "(default %(default)s)")
    g.add_argument("--tournament", type=int, default=d.tournament,
                   help="tournament size (default %(default)s)")
    g.add_argument("--mutations", type=int, default=d.mutations,
                   help="point mutations per mutated child (default %(default)s)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the run (study: of the first run; default %(default)s)")
    g.add_argument("--repeats", type=int, default=None, metavar="N",
                   help="run a study of N seeds per guide instead of one run")

    g = p.add_argument_group("scores")
    g.add_argument("--scores", action="append", metavar="PATH",
                   help="look scores up in a correlate output folder, scores.csv or journal "
                        "(repeatable; later ones fill what earlier ones lack) instead of "
                        "computing them; scores of a proxy's older definition (as the journal "
                        "or run.json records it) are left out, and the search says so")
    g.add_argument("--live-missing", action="store_true",
                   help="with --scores: compute live the proxies the tables lack")
    g.add_argument("--score-seed", type=int, default=None,
                   help="live scoring seed (network initialisation, data batch), as correlate's "
                        "--seed (default: the tables' seed, else 0)")
    g.add_argument("--batch-size", type=int, default=None,
                   help="live scoring: real-image batch of data proxies (default: the tables', "
                        "else 64)")
    g.add_argument("--dataset", default=None,
                   help="the dataset whose networks are scored (NATS: cifar10, cifar100, "
                        "ImageNet16-120 set the head and input size; default: the tables', "
                        "else cifar10); accuracy is reported on every dataset regardless")
    g.add_argument("--device", default="cpu", help="live scoring device (default cpu)")
    g.add_argument("--threads", type=int, default=0, help="torch threads for live scoring")
    g.add_argument("--exact", action="store_true",
                   help="live scoring with bit-exact arithmetic, as correlate --exact (the "
                        "committed tables are exact; the default fast path ranks the same)")
    g.add_argument("--data-dir", default=None,
                   help="benchmark data folder (default: $ZCPROXY_DATA, ./data, ../shared/data)")

    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="one run: write run.json, evaluations.csv (and the live score journal) "
                        "here; study: default results/bench-search/<bench>")
    g.add_argument("--stop-after", type=int, metavar="N",
                   help="live scoring: stop after N freshly scored architectures (run the same "
                        "command again to continue)")
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    add_debug_flag(p)
    return p


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _fingerprint(files: list[str]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(Path(f).read_bytes())
    return digest.hexdigest()


def standard_methods(available: list[str], live_missing: bool) -> list[Method]:
    """The study's default guides: every proxy of the tables, the structural baselines, three
    ensembles of NASWOT, LogSynflow and ES (mean rank, FreeREA's max-abs rule, AZ-NAS's log
    rank), FreeREA's NASWOT + LogSynflow, the paper's LogSynflow + ES by the same three rules,
    and the random references."""
    known = set(available_proxies())
    have = [p for p in available if p in known]
    proxies = [p for p in have if not get_proxy(p).baseline]
    baselines = [p for p in have if get_proxy(p).baseline]
    for p in ("n_params", "n_flops"):
        if p not in baselines and live_missing:
            baselines.append(p)
    methods = [Method("rea", Guide((p,))) for p in proxies + baselines]
    # The paper's Entropic Score: the default (signed) reading, else the |weights| one where a
    # table has only that (the all-space NATS-sss run predates the signed default).
    es = "entropic" if "entropic" in have else "entropic_abs"
    trio = tuple(p for p in ("naswot", "logsynflow", es) if p in have)
    if len(trio) >= 2:
        methods += [Method("rea", Guide(trio, rule))
                    for rule in ("mean_rank", "max_abs", "log_rank")]
    if len(trio) == 3:  # FreeREA's own metrics (without its skip-connection count), its rule
        methods.append(Method("rea", Guide(("naswot", "logsynflow"), "max_abs")))
        # The paper's own pair, ES for topology and LogSynflow for size, in one score.
        methods += [Method("rea", Guide(("logsynflow", es), rule))
                    for rule in ("mean_rank", "max_abs", "log_rank")]
    methods.append(Method("random", Guide()))
    for p in ("naswot", "n_params"):
        if p in have or (p == "n_params" and live_missing):
            methods.append(Method("random", Guide((p,))))
    return methods


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and search; a mistake ends as one line on stderr and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.live_missing and not args.scores:
        parser.error("--live-missing completes --scores tables; without --scores every score "
                     "is computed live anyway")
    for flag in ("evaluations", "population", "tournament", "mutations", "repeats",
                 "stop_after"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} {value}: must be at least 1")
    if args.seconds is not None and not 0 < args.seconds < float("inf"):
        parser.error(f"--seconds {args.seconds}: must be positive and finite")
    return run_command(lambda: _run(args), prog="search.bench", debug=args.debug)


def _run(args: argparse.Namespace) -> int:
    bench = get_benchmark(args.bench, data_dir=args.data_dir)
    arches = bench.table(bench.datasets[0])["arch"].to_numpy()

    table = settings = None
    if args.scores:
        table = ScoreTable.from_paths(args.scores, len(bench), bench=args.bench, arches=arches)
        settings = next((s for s in table.settings if "seed" in s), {})
        for note in table.notes:
            _say(note)
    if args.list_guides:
        names = table.proxies if table is not None else available_proxies()
        for name in names:
            info = get_proxy(name) if name in available_proxies() else None
            kind = "baseline" if info is not None and info.baseline else "proxy"
            covered = f"{len(table.covered([name])):,} archs" if table is not None else ""
            print(f"{name:18s} {kind:8s} {covered}")
        return 0

    study = args.repeats is not None
    if args.guide:
        methods = [Method.parse(g, args.combine, args.strategy) for g in args.guide]
    elif study:
        methods = standard_methods(table.proxies if table is not None else
                                   ["naswot", "logsynflow", "entropic", "n_params", "n_flops"],
                                   args.live_missing)
    else:
        raise UsageError("give --guide (a proxy, an ensemble, or none), or --repeats for a study")
    for m in methods:
        m.guide.check()
    proxies = list(dict.fromkeys(p for m in methods for p in m.guide.proxies))

    out = Path(args.out) if args.out else (Path("results") / "bench-search" / args.bench
                                           if study else None)
    seed = args.score_seed if args.score_seed is not None else int((settings or {}).get("seed", 0))
    batch = args.batch_size if args.batch_size is not None else int(
        (settings or {}).get("batch_size", 64))
    networks = table.dataset if table is not None else None
    if args.dataset is not None and networks not in (None, args.dataset):
        raise UsageError(f"--dataset {args.dataset}, but the score tables hold the scores of the "
                         f"{networks} networks; drop --dataset or give tables of the "
                         f"{args.dataset} networks")
    networks = args.dataset or networks or SETTING_DEFAULTS["dataset"]
    journal = out / "live-scores.csv" if out is not None else None
    live_proxies = proxies
    allowed = None
    if table is not None:
        cached_proxies = [p for p in proxies if p in table.proxies]
        live_proxies = [p for p in proxies if p not in table.proxies]
        if live_proxies and not args.live_missing:
            raise UsageError(f"the score tables hold no {', '.join(live_proxies)} scores (they "
                             f"have {', '.join(table.proxies)}); drop those guides or pass "
                             "--live-missing")
        # A run without a proxy (random search) stays where the guided runs can go.
        covered = table.covered(cached_proxies or table.proxies)
        if len(covered) < len(bench):
            allowed = covered
            _say(f"WARNING: the score tables cover {len(covered):,} of {len(bench):,} "
                 f"{args.bench} architectures for {', '.join(cached_proxies or table.proxies)}: "
                 "the search is RESTRICTED TO THAT SAMPLE (random draws from it, mutants and "
                 "children moved to the nearest sampled architecture). Its results describe a "
                 "search of the sample, not of the benchmark.")
    live = None
    if live_proxies:
        if out is not None:
            _check_scoring_record(out, args.bench, seed, batch, args.exact, networks)
        live = LiveScores(args.bench, live_proxies, dataset=networks, seed=seed, batch_size=batch,
                          device=args.device, data_dir=args.data_dir, threads=args.threads,
                          journal=journal, stop_after=args.stop_after, exact=args.exact)
        for note in live.notes:
            _say(note)
    source = HybridScores(CachedScores(table), live) if table is not None else live
    sources = {"tables": table.sources if table is not None else [],
               "fingerprint": _fingerprint(table.sources) if table is not None else None,
               "live": live_proxies, "score_seed": seed, "batch_size": batch,
               "restricted": allowed is not None, "networks": networks,
               "space": int(len(allowed) if allowed is not None else len(bench))}
    try:
        if study:
            budgets = ([int(b) for b in args.budgets.split(",")] if args.budgets
                       else [min(100, args.evaluations)])
            spec = StudySpec(args.bench, methods, repeats=args.repeats,
                             evaluations=args.evaluations, budgets=tuple(budgets),
                             population=args.population, tournament=args.tournament,
                             mutations=args.mutations, first_seed=args.seed,
                             networks=networks)
            run_study(spec, bench, source, out, allowed=allowed, sources=sources,
                      progress=not args.quiet)
            print((out / "summary.md").read_text())
            return 0
        config = BenchSearchConfig(args.bench, methods[0].guide, methods[0].strategy,
                                   args.evaluations, args.seconds, args.seed, args.population,
                                   args.tournament, args.mutations)
        run = search_benchmark(config, bench, source, allowed)
    except StopScoring as stop:
        _say(f"{stop}; run the same command again to continue (scores kept in {journal})")
        return 0
    except KeyboardInterrupt:
        _say(f"interrupted; run the same command again to continue (scores kept in {journal})"
             if journal else "interrupted")
        return 130
    finally:
        if source is not None:
            source.close()
    report = _report(run, bench, arches, sources)
    print(_format_report(report))
    if out is not None:
        write_text(out / "run.json", json.dumps(report, indent=2) + "\n")
        write_csv(_evaluations_frame(run, arches), out / "evaluations.csv", index=False)
    return 0


def _check_scoring_record(out: Path, bench: str, seed: int, batch: int, exact: bool,
                          dataset: str) -> None:
    """Live scores journaled in ``out`` are reused only under the settings they were made with,
    the arithmetic and the networks' dataset included (a record without them predates those
    settings: exact, CIFAR-10 networks)."""
    record = out / "scoring.json"
    mine = {"bench": bench, "score_seed": seed, "batch_size": batch,
            "arithmetic": arithmetic_of(exact), "dataset": dataset}
    if record.exists():
        old = {**SETTING_DEFAULTS, **json.loads(record.read_text())}
        if old != mine:
            raise UsageError(f"{out} holds live scores made with {old}, not {mine}; use "
                             "another --out")
    else:
        write_text(record, json.dumps(mine, indent=2) + "\n")


def _report(run, bench, arches: np.ndarray, sources: dict) -> dict:
    index = run.chosen()
    return {"config": run.config.record(), "method": method_label(run.config.strategy,
                                                                  run.config.guide.label),
            "evaluations": run.evaluations, "distinct": run.distinct(),
            "wall_s": run.wall_seconds(), "cpu_s": run.cpu_seconds(),
            "score_s": run.score_seconds(), "space": run.space, "restricted": run.restricted,
            "index": index, "arch": None if index is None else str(arches[index]),
            "accuracy": accuracies(bench, index),
            "sample_mean": {ds: float(np.mean(bench.table(ds)["accuracy"].to_numpy()[
                sorted(set(run.indices))])) for ds in bench.datasets},
            "oracle": {ds: float(np.max(bench.table(ds)["accuracy"].to_numpy()[
                sorted(set(run.indices))])) for ds in bench.datasets},
            "accuracy_split": getattr(bench, "accuracy_split", "test"), "sources": sources}


def _format_report(r: dict) -> str:
    lines = [f"{r['method']} on {r['config']['bench']}: {r['evaluations']} evaluations, "
             f"{r['distinct']} distinct architectures, {r['wall_s']:.2f} s wall, "
             f"{r['cpu_s']:.2f} s CPU, {r['score_s']:.1f} proxy seconds"]
    if r["restricted"]:
        lines.append(f"  (restricted to the {r['space']:,} architectures the score tables cover)")
    if r["index"] is not None:
        lines.append(f"  found #{r['index']}: {r['arch']}")
        lines.append("  accuracy (" + r["accuracy_split"] + "): " + ", ".join(
            f"{ds} {v:.2f}" for ds, v in r["accuracy"].items()))
    lines.append("  mean accuracy of the evaluated architectures: " + ", ".join(
        f"{ds} {v:.2f}" for ds, v in r["sample_mean"].items()))
    lines.append("  best evaluated by accuracy (an oracle, not the search's answer): " + ", ".join(
        f"{ds} {v:.2f}" for ds, v in r["oracle"].items()))
    return "\n".join(lines)


def _evaluations_frame(run, arches: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"evaluation": np.arange(1, run.evaluations + 1), "index": run.indices,
                          "arch": arches[run.indices] if run.indices else [],
                          "origin": run.origins, "score_s": run.charged, "wall_s": run.wall,
                          "cpu_s": run.cpu})
    for p in run.config.guide.proxies:
        frame[p] = [s.get(p) for s in run.scores]
    return frame


if __name__ == "__main__":
    sys.exit(main())
