"""``python -m zcproxy.correlate``: how well do proxies rank a NAS benchmark?

Scores a uniform sample of architectures (or all of them) with each proxy, appending every
score to ``<out>/journal.csv`` as it is computed, so an interrupted run started again continues
where it stopped.  Then writes ``scores.csv`` (one row per architecture), ``correlations.csv``
and ``correlations.md`` (Kendall τ, Spearman ρ, Pearson r with bootstrap 95% intervals,
precision@top-10%, beside the published figures), and prints the table.

Beyond one machine: ``--executor ray`` scores on a Ray cluster into the same journal;
without Ray, ``--shard I/N`` scores one of N interleaved parts of the sample per machine into
``journal.shard-I-of-N.csv``, and ``--merge`` (same settings, all shard journals in one folder)
combines them, checks that nothing is missing and writes the tables.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

import pandas as pd

from . import __version__
from .nasbench import BENCHMARKS, get_benchmark
from .published import published
from .registry import available_proxies, get_proxy, proxy_info
from .executors import make_executor
from .runner import ScoringJob, run_scoring, wide_scores
from .stats import (correlation_table, pairwise_rank_correlation, partial_rank_correlation,
                    to_markdown)

DEFAULT_PROXIES = "naswot,logsynflow,entropic"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zcproxy.correlate",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m zcproxy.correlate --bench nats-sss --sample 1000 --plot\n"
               "         (data from --data-dir, $ZCPROXY_DATA or ../shared/data)")
    p.add_argument("--bench", required=True, choices=BENCHMARKS, help="benchmark to score")
    p.add_argument("--proxies", default=DEFAULT_PROXIES,
                   help=f"comma-separated proxy names (default {DEFAULT_PROXIES}); "
                        "`--list-proxies` shows them all")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--sample", type=int, default=1000,
                      help="number of architectures drawn uniformly (default 1000)")
    size.add_argument("--all", action="store_true", help="score every architecture")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the sample, the network initialisation and the data batch")
    p.add_argument("--dataset", default="cifar10",
                   choices=["cifar10", "cifar100", "ImageNet16-120"],
                   help="whose accuracy to correlate with (NATS only has all three)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the benchmark data (default: $ZCPROXY_DATA, ./data, "
                        "../shared/data)")
    p.add_argument("--official-path", default=None,
                   help="an official benchmark file/folder (NATS fast-mode dir or .pickle.pbz2, "
                        "nasbench_only108.tfrecord) to read instead of the compact tables")
    p.add_argument("--out", default=None, help="output folder (default results/correlate/<bench>)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per worker (default: torch's choice; 1 with --workers>1)")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="where to score: local processes (--workers) or Ray tasks (default local)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to join, e.g. auto or ray://head:10001 (default: a running "
                        "local instance, else a new one); needs pip install 'zcproxy[ray]'")
    p.add_argument("--chunk-size", type=int, default=8,
                   help="architectures per Ray task (default 8)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="score only the I-th of N interleaved parts of the sample (I = 0..N-1) "
                        "into <out>/journal.shard-I-of-N.csv, e.g. one part per machine; then "
                        "run --merge with the same settings where all shard journals are")
    p.add_argument("--merge", action="store_true",
                   help="combine <out>/journal.shard-*-of-N.csv (and journal.csv) into "
                        "journal.csv, check that every architecture of the sample is scored, "
                        "and write the tables")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda or cuda:1")
    p.add_argument("--batch-size", type=int, default=64,
                   help="real-image batch for data-dependent proxies such as NASWOT (default 64)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the 95%% intervals (0 to skip)")
    p.add_argument("--no-baselines", action="store_true",
                   help="leave out the structural baselines (n_params, n_flops, depth, n_act, "
                        "n_conv, width) that are otherwise scored and reported under the proxies")
    p.add_argument("--plot", action="store_true", help="also write rank plots (Figure 2 style)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--list-proxies", action="store_true", help="list proxies and exit")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler's stop request), handled like Ctrl-C."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM stops the run the way Ctrl-C does: the worker pool is shut
    down and the user is told how to continue, instead of the process vanishing mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum, _frame):
        raise Terminated()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_proxies:
        for name in available_proxies():
            info = get_proxy(name)
            print(f"{name:12s} {'(needs data) ' if info.needs_data else ''}{info.description}")
        return 0
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    for name in proxies:
        get_proxy(name)  # fail before any work on a typo
    if not args.no_baselines:
        proxies += [p.name for p in proxy_info() if p.baseline and p.name not in proxies]
    out = Path(args.out or Path("results") / "correlate" / args.bench)
    bench = get_benchmark(args.bench, data_dir=args.data_dir, official_path=args.official_path)
    n = None if args.all else args.sample
    indices = bench.sample(n, seed=args.seed)
    threads = args.threads or (1 if args.workers > 1 or args.executor == "ray" else 0)
    job = ScoringJob(bench=args.bench, proxies=tuple(proxies), dataset=args.dataset,
                     seed=args.seed, device=args.device, data_dir=args.data_dir,
                     official_path=args.official_path, batch_size=args.batch_size,
                     threads=threads)
    if args.shard and args.merge:
        raise SystemExit("--shard and --merge are separate steps: score each shard, then merge")
    check_run_settings(out, job)
    if args.merge:
        journal = merge_shards(out, indices, proxies)
    else:
        path = out / "journal.csv"
        if args.shard:
            shard, count = parse_shard(args.shard)
            indices = shard_indices(indices, shard, count)
            path = shard_journal(out, shard, count)
        executor = make_executor(args.executor, workers=args.workers, threads=threads,
                                 ray_address=args.ray_address, chunk_size=args.chunk_size)
        try:
            with executor, sigterm_as_interrupt():
                journal = run_scoring(job, indices, path, progress=not args.no_progress,
                                      executor=executor)
        except KeyboardInterrupt as stop:
            print(f"\ninterrupted: every finished architecture is in {path}; run the same "
                  "command again to continue from there", file=sys.stderr)
            return 143 if isinstance(stop, Terminated) else 130
        if args.shard:
            done = journal.drop_duplicates("index")
            print(f"shard {args.shard}: {len(done)} of {len(indices)} architectures in {path}; "
                  f"once every shard is done, run the same command with --merge instead of "
                  f"--shard where all journal.shard-*-of-{count}.csv files are, to write the "
                  "tables")
            return 0
    # A folder is one study that grows: its tables cover every architecture and proxy its
    # journal holds (e.g. cheap proxies on 1,000 archs, NASWOT on the first 150 of them).
    proxies = study_proxies(journal, proxies)
    indices = study_indices(journal, bench.sample(None, seed=args.seed))
    scores = wide_scores(journal, bench, args.dataset, proxies, indices)
    table = write_outputs(out, scores, proxies, args.bench, n_boot=args.bootstrap,
                          seed=args.seed, split=getattr(bench, "accuracy_split", ""))
    print(to_markdown(table))
    failed = scores[scores["errors"] != ""]
    if len(failed):
        print(f"\n{len(failed)} architecture(s) had failed or non-finite scores; they are NaN in "
              f"{out / 'scores.csv'} (column 'errors') and left out of the correlations.",
              file=sys.stderr)
    if args.plot:
        from .plot import write_figures
        write_figures(scores, proxies, out / "figures", title=args.bench)
    return 0


def study_proxies(journal: pd.DataFrame, requested: Sequence[str]) -> list[str]:
    """The requested proxies, then any other registered proxy the journal holds scores of."""
    known = set(available_proxies())
    extra = [p for p in dict.fromkeys(journal["proxy"]) if p not in requested and p in known]
    return list(requested) + extra


def study_indices(journal: pd.DataFrame, order: Sequence[int]) -> list[int]:
    """Every architecture in the journal, in the order of the seeded sample permutation."""
    scored = set(journal["index"].tolist())
    return [i for i in order if i in scored]


def check_run_settings(out: Path, job: ScoringJob) -> None:
    """Refuse to mix runs with different settings in one journal; record ours."""
    settings = {"bench": job.bench, "dataset": job.dataset, "seed": job.seed,
                "batch_size": job.batch_size, "official_path": job.official_path}
    path = out / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        clash = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if clash:
            raise SystemExit(f"{out} holds a run with other settings "
                             f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in clash.items())}); "
                             "use another --out folder")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**settings, "zcproxy": __version__}, indent=2) + "\n")


SHARD_GLOB = "journal.shard-*-of-*.csv"


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), with 0 <= I < N."""
    try:
        shard, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard takes I/N, e.g. 0/4, not {text!r}") from None
    if count < 1 or not 0 <= shard < count:
        raise SystemExit(f"--shard {text}: need N >= 1 and 0 <= I < N")
    return shard, count


def shard_indices(indices: Sequence[int], shard: int, count: int) -> list[int]:
    """The shard-th of ``count`` interleaved parts: every part is itself a uniform sample, and
    the parts are as even as they can be."""
    return list(indices)[shard::count]


def shard_journal(out: Path, shard: int, count: int) -> Path:
    return out / f"journal.shard-{shard}-of-{count}.csv"


def merge_shards(out: Path, indices: Sequence[int], proxies: Sequence[str]) -> pd.DataFrame:
    """Fold every shard journal (and an existing journal.csv) into journal.csv.

    A score found twice is kept once, a success winning over a recorded failure; the merge
    stops with a clear error if a shard file is missing or an architecture of the sample has
    no score, so tables are never written from a partial sample by accident.
    """
    from .journal import COLUMNS, Journal
    paths = sorted(out.glob(SHARD_GLOB))
    if not paths:
        raise SystemExit(f"--merge: no {SHARD_GLOB} in {out}; score the shards with --shard first")
    counts = {int(p.stem.rsplit("-of-", 1)[1]) for p in paths}
    if len(counts) != 1:
        raise SystemExit(f"--merge: {out} mixes shard journals of different splits "
                         f"({', '.join(f'of {c}' for c in sorted(counts))}); keep one split")
    count = counts.pop()
    missing_files = [str(shard_journal(out, i, count).name) for i in range(count)
                     if not shard_journal(out, i, count).exists()]
    if missing_files:
        raise SystemExit(f"--merge: missing shard journal(s) {', '.join(missing_files)} in {out}")
    sources = [shard_journal(out, i, count) for i in range(count)]
    merged_path = out / "journal.csv"
    if merged_path.exists():
        sources.insert(0, merged_path)
    frames = []
    for path in sources:
        with Journal(path) as journal:  # repairs a torn last line, checks the header
            frames.append(journal.read())
    frame = pd.concat(frames, ignore_index=True)
    frame["_ok"] = frame["error"].fillna("") == ""
    frame = (frame.sort_values("_ok", kind="stable")
             .drop_duplicates(["index", "proxy"], keep="last").drop(columns="_ok"))
    have = set(zip(frame["index"].tolist(), frame["proxy"].tolist()))
    lacking = [(i, p) for i in indices for p in proxies if (int(i), p) not in have]
    if lacking:
        position = {int(i): k for k, i in enumerate(indices)}
        by_shard = sorted({position[int(i)] % count for i, _ in lacking})
        raise SystemExit(f"--merge: {len(lacking)} score(s) of {len({i for i, _ in lacking})} "
                         f"architecture(s) are missing (e.g. index {lacking[0][0]}, proxy "
                         f"{lacking[0][1]}), from shard(s) {', '.join(map(str, by_shard))} of "
                         f"{count}; finish those shards with the same settings, then merge again")
    # Sample order first; rows of other architectures (an earlier journal.csv) are kept too.
    order = {int(i): k for k, i in enumerate(indices)}
    frame = frame.assign(_pos=frame["index"].map(order).fillna(len(order)),
                         error=frame["error"].fillna(""))
    frame = frame.sort_values(["_pos", "index", "proxy"], kind="stable")[COLUMNS]
    tmp = merged_path.with_suffix(".csv.tmp")
    tmp.unlink(missing_ok=True)
    with Journal(tmp) as journal:
        journal.append(list(frame.itertuples(index=False, name=None)))
    os.replace(tmp, merged_path)
    print(f"merged {count} shard journals into {merged_path} "
          f"({len(frame)} scores of {len(indices)} architectures)")
    return frame.reset_index(drop=True)


def write_outputs(out: Path, scores: pd.DataFrame, proxies: Sequence[str], bench: str, *,
                  n_boot: int = 1000, seed: int = 0, split: str = "") -> pd.DataFrame:
    """Write scores.csv, correlations.csv/.md and pairwise.csv; return the correlation table.

    Proxies come first and structural baselines in a block under them; ``partial_*`` columns
    give the Spearman correlation left once #params (or depth) is controlled for.
    """
    scores.to_csv(out / "scores.csv", index=False)
    table = correlation_table(scores, proxies,
                              higher_is_better={p: get_proxy(p).higher_is_better for p in proxies},
                              n_boot=n_boot, seed=seed)
    for control in ("n_params", "depth"):
        if control in scores:
            table[f"partial_{control}"] = [
                _partial(scores, p, control) for p in table.index]
    table.insert(0, "kind", ["baseline" if get_proxy(p).baseline else "proxy"
                             for p in table.index])
    ref = {p: published(bench, p) for p in table.index}
    table["paper_kendall"] = [r[0] if r else float("nan") for r in ref.values()]
    table["paper_spearman"] = [r[1] if r else float("nan") for r in ref.values()]
    table = table.sort_values("kind", kind="stable", key=lambda k: k == "baseline")
    table.to_csv(out / "correlations.csv")
    pairwise = pairwise_rank_correlation(scores, list(proxies), method="spearman")
    pairwise.to_csv(out / "pairwise_spearman.csv")
    note = f"Accuracy: {split} split. " if split else ""
    blocks = [f"## {title}\n\n" + to_markdown(table[table["kind"] == kind].drop(columns="kind"))
              for kind, title in (("proxy", "Proxies"), ("baseline", "Structural baselines"))
              if (table["kind"] == kind).any()]
    (out / "correlations.md").write_text(
        f"# {bench}: proxy vs accuracy ({len(scores)} architectures)\n\n{note}"
        "Intervals are bootstrap 95%. partial_X: Spearman ρ of the proxy with accuracy once X "
        "is controlled for (0 = the proxy knows nothing beyond X). Re-running "
        "`python -m zcproxy.correlate` on the same --out folder recomputes these tables from "
        "journal.csv without re-scoring.\n\n" + "\n\n".join(blocks)
        + "\n\n## Spearman ρ between proxies\n\n" + to_markdown(pairwise) + "\n")
    return table


def _partial(scores: pd.DataFrame, proxy: str, control: str) -> float:
    if proxy == control or scores[control].nunique() < 2:
        return float("nan")
    sign = 1.0 if get_proxy(proxy).higher_is_better else -1.0
    return float(partial_rank_correlation(sign * scores[proxy], scores["accuracy"],
                                          scores[control]))


if __name__ == "__main__":
    raise SystemExit(main())
