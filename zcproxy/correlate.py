"""``python -m zcproxy.correlate``: how well do proxies rank a NAS benchmark?

Scores a uniform sample of architectures (or all of them) with each proxy, appending every
score to ``<out>/journal.csv`` as it is computed, so an interrupted run started again continues
where it stopped.  Then writes ``scores.csv`` (one row per architecture), ``correlations.csv``
and ``correlations.md`` (Kendall τ, Spearman ρ, Pearson r with bootstrap 95% intervals,
precision@top-10%, beside the published figures), and prints the table.

Output goes to a scratch folder, runs/<bench>-<sample>-seed<seed> (the committed results/
folders are written only when --out names them).  A folder's journal is reused only for the
same settings and data (it records both, and the architecture of every score); reuse is
announced, --fresh rescores, failures caused by the machine are retried on the next run
(--retry-failed retries every failure), and a journal of zcproxy 0.1 is converted by --adopt
after every index is checked against the current table.

Beyond one machine: ``--executor ray`` scores on a Ray cluster into the same journal;
without Ray, ``--shard I/N`` scores one of N interleaved parts of the sample per machine into
``journal.shard-I-of-N.csv``, and ``--merge`` (same settings, all shard journals in one folder)
combines them, checks that every shard was scored with the same settings and that nothing is
missing, and writes the tables.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .analysis import run_record
from .api import resolve_proxies
from .atomic import sha256_file, write_csv, write_text
from .cli import UsageError, add_debug_flag, run_command
from .ensemble import parse_ensemble
from .executors import make_executor
from .journal import (Journal, JournalError, done_pairs, journal_in_use, read_sessions,
                      write_journal)
from .nasbench import BENCHMARKS
from .published import published
from .registry import available_proxies, get_proxy, proxy_info
from .runner import (ScoringJob, SettingsMismatch, adopt_journal, carry_over,
                     check_architectures, check_device, proxy_versions, run_scoring,
                     run_settings, scored_with, settings_differences, split_stale, wide_scores)
from .stats import (correlation_table, pairwise_rank_correlation, partial_rank_correlation,
                    to_markdown)

DEFAULT_PROXIES = "naswot,logsynflow,entropic"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zcproxy.correlate",
        description="\n\n".join(__doc__.split("\n\n")[:3]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m zcproxy.correlate --bench nats-sss --sample 1000 --workers 2 --plot\n"
               "  python -m zcproxy.correlate --bench nats-sss --sample 1000 --fresh   # rescore\n"
               "  python -m zcproxy.verify runs/nats-sss-sample1000-seed0 results/correlate/nats-sss\n"
               "(data from --data-dir, $ZCPROXY_DATA or ../shared/data)")
    p.add_argument("--bench", choices=BENCHMARKS,
                   help="benchmark to score (required, except with --list-proxies)")
    p.add_argument("--proxies", default=DEFAULT_PROXIES,
                   help=f"comma-separated proxy names (default {DEFAULT_PROXIES}); "
                        "`--list-proxies` shows them all")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--sample", type=int, default=1000,
                      help="number of architectures drawn uniformly (default 1000; at most "
                           "the size of the space)")
    size.add_argument("--all", action="store_true", help="score every architecture")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the sample, the network initialisation and the data batch")
    p.add_argument("--dataset", default="cifar10",
                   choices=["cifar10", "cifar100", "ImageNet16-120"],
                   help="whose accuracy to correlate with (NATS only has all three)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the benchmark data (default: $ZCPROXY_DATA if set, else ./data, "
                        "../shared/data)")
    p.add_argument("--official-path", default=None,
                   help="an official benchmark file/folder (NATS fast-mode dir or .pickle.pbz2, "
                        "nasbench_only108.tfrecord) to read instead of the compact tables")
    p.add_argument("--out", default=None,
                   help="output folder (default runs/<bench>-sample<N>-seed<S>, or -all-; "
                        "the committed results/correlate/<bench> only when named here)")
    p.add_argument("--fresh", action="store_true",
                   help="discard the folder's journal, run.json and tables, and score afresh")
    p.add_argument("--retry-failed", action="store_true",
                   help="score again the architectures a proxy failed on (failures caused by "
                        "the machine, e.g. no GPU or out of memory, are always retried)")
    p.add_argument("--adopt", action="store_true",
                   help="convert the folder's journal written by zcproxy 0.1 (no settings, no "
                        "architecture per row) after checking every index against the current "
                        "table via its scores.csv; says what it did")
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
    p.add_argument("--exact", action="store_true",
                   help="bit-exact arithmetic (today's reference path) instead of the default "
                        "fast path (channels-last, bfloat16 NASWOT codes, float32 Entropic "
                        "Score), which changes scores in the last bits but no ranking "
                        "(benchmarks/FIDELITY.md); a journal is continued only with the "
                        "arithmetic it was started with")
    p.add_argument("--option", action="append", default=[], metavar="PROXY.KEY=VALUE",
                   help="an option of one proxy, e.g. grad_norm.recipe=zennas or "
                        "swap.batch_size=64 (VALUE is read as JSON when it parses: numbers, "
                        "true/false; else as text); repeatable.  Options are settings: a "
                        "journal scored with other options is not continued, so give such a "
                        "run its own --out")
    p.add_argument("--batch-size", type=int, default=64,
                   help="real-image batch for data-dependent proxies such as NASWOT (default 64)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the 95%% intervals (default 1000; 0 to skip)")
    p.add_argument("--ensemble", action="append", default=[], metavar="NAME=[RULE:]P1,P2,...",
                   help="also report a rank aggregate of scored proxies, computed over the "
                        "study's architectures: RULE is mean_rank (default), log_rank (AZ-NAS's "
                        "Σ log(rank/N)) or max_abs (FreeREA's); repeatable, e.g. "
                        "--ensemble trio=log_rank:naswot,logsynflow,entropic")
    p.add_argument("--no-baselines", action="store_true",
                   help="leave out the structural baselines (n_params, n_flops, depth, n_act, "
                        "n_conv, width) that are otherwise scored and reported under the proxies")
    p.add_argument("--plot", action="store_true", help="also write rank plots (Figure 2 style)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--list-proxies", action="store_true", help="list proxies and exit")
    add_debug_flag(p)
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
    """Parse arguments and run; a mistake ends as one line on stderr and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bench is None and not args.list_proxies:
        parser.error("the following arguments are required: --bench")
    return run_command(lambda: run(args), prog="correlate", debug=args.debug)


def run(args: argparse.Namespace) -> int:
    if args.list_proxies:
        names = available_proxies()
        width = max(map(len, names))
        for name in names:
            info = get_proxy(name)
            print(f"{name:{width}s} {'(needs data) ' if info.needs_data else ''}{info.description}")
        return 0
    check_arguments(args)
    proxies = parse_proxies(args.proxies, baselines=not args.no_baselines)
    check_device(args.device)
    out = Path(args.out) if args.out else default_out(args)
    check_out_folder(out)
    journal_path = (shard_journal(out, *parse_shard(args.shard)) if args.shard
                    else out / "journal.csv")
    # From --fresh to the tables, this folder's journal is this command's alone.
    with journal_in_use(journal_path):
        return score_and_report(args, out, journal_path, proxies)


def score_and_report(args: argparse.Namespace, out: Path, journal_path: Path,
                     proxies: list[str]) -> int:
    """Everything after the arguments are checked: score into ``journal_path`` (or merge
    ``out``'s shards, or convert its journal) and write the tables."""
    threads = args.threads or (1 if args.workers > 1 or args.executor == "ray" else 0)
    job = ScoringJob(bench=args.bench, proxies=tuple(proxies), dataset=args.dataset,
                     seed=args.seed, device=args.device, data_dir=args.data_dir,
                     official_path=args.official_path, batch_size=args.batch_size,
                     threads=threads, exact=args.exact,
                     proxy_options=parse_proxy_options(args.option, proxies))
    try:
        ensembles = [parse_ensemble(e) for e in args.ensemble]
    except ValueError as err:
        raise UsageError(str(err)) from None
    settings, bench = run_settings(job)  # loads the table: a data problem stops us here
    if settings.get("inputs_source"):
        say(f"real images for data-dependent proxies: {settings['inputs_source']}")
    if not args.all and args.sample > len(bench):
        raise UsageError(f"--sample {args.sample}: {args.bench} has only {len(bench):,} "
                         "architectures; use --all to score every one")
    n = None if args.all else args.sample
    indices = bench.sample(n, seed=args.seed)
    if args.fresh:
        removed = discard_run(out, shard=args.shard)
        if removed:
            say(f"--fresh: removed {', '.join(removed)} from {out}")
    check_run_record(out, settings)
    if args.adopt:
        say(adopt_journal(out / "journal.csv", job, scores_path=out / "scores.csv",
                          recorded=read_run_record(out)))
    if args.merge:
        journal = merge_shards(out, indices, proxies, settings, bench.table(args.dataset))
    else:
        if args.shard:
            shard, count = parse_shard(args.shard)
            indices = shard_indices(indices, shard, count)
        executor = make_executor(args.executor, workers=args.workers, threads=threads,
                                 ray_address=args.ray_address, chunk_size=args.chunk_size)
        try:
            with executor, sigterm_as_interrupt():
                journal = run_scoring(job, indices, journal_path, progress=not args.no_progress,
                                      executor=executor, retry_failed=args.retry_failed,
                                      notify=_announce)
        except KeyboardInterrupt as stop:
            print(f"\ninterrupted: every finished architecture is in {journal_path} (those in flight "
                  "were stopped, not waited for); run the same command again to continue from "
                  "there", file=sys.stderr)
            return 143 if isinstance(stop, Terminated) else 130
        if args.shard:
            done = journal.drop_duplicates("index")
            print(f"shard {args.shard}: {len(done)} of {len(indices)} architectures in {journal_path}; "
                  f"once every shard is done, run the same command with --merge instead of "
                  f"--shard where all journal.shard-*-of-{count}.csv files are, to write the "
                  "tables")
            return 0
    # A folder is one study that grows: its tables cover every architecture and proxy its
    # journal holds (e.g. cheap proxies on 1,000 archs, NASWOT on the first 150 of them),
    # but only scores of each proxy's current definition.
    journal, stale = split_stale(journal)
    for proxy, what in stale.items():
        say(f"left out of the tables: {what} of {proxy}; --proxies {proxy} rescores them")
    proxies = study_proxies(journal, proxies)
    indices = study_indices(journal, bench.sample(None, seed=args.seed))
    scores = wide_scores(journal, bench, args.dataset, proxies, indices)
    table = write_outputs(out, scores, proxies, args.bench, n_boot=args.bootstrap,
                          seed=args.seed, split=getattr(bench, "accuracy_split", ""),
                          settings=settings, ensembles=ensembles, dataset=args.dataset)
    print(to_markdown(table))
    failed = scores[scores["errors"] != ""]
    if len(failed):
        print(f"\n{len(failed)} architecture(s) had failed or non-finite scores "
              f"({failures_by_proxy(scores, proxies)}); they are NaN or ±inf in "
              f"{out / 'scores.csv'} (column 'errors' names each proxy and why) and left out "
              "of the correlations.", file=sys.stderr)
    if args.plot:
        from .plot import write_figures
        write_figures(scores, proxies, out / "figures", title=args.bench)
    say(f"tables in {out}")
    return 0


def failures_by_proxy(scores: pd.DataFrame, proxies: Sequence[str], *, top: int = 5) -> str:
    """``"tenas_ntk 15, gradsign 3"``: how many architectures each proxy was run on and has no
    finite score for, most first (the ``top`` of them), so the summary line says which columns
    the failures are in.  An architecture a proxy was not run on (a folder grows proxy by
    proxy) has no ``seconds_<proxy>`` and is not a failure."""
    counts = {}
    for p in proxies:
        if p in scores and f"seconds_{p}" in scores:
            ran = scores[f"seconds_{p}"].notna()
            counts[p] = int((ran & ~np.isfinite(pd.to_numeric(scores[p], errors="coerce"))).sum())
    ranked = sorted(((n, p) for p, n in counts.items() if n), key=lambda c: (-c[0], c[1]))
    shown = ", ".join(f"{p} {n}" for n, p in ranked[:top])
    return shown + (f" and {len(ranked) - top} more proxies" if len(ranked) > top else "")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _announce(text: str) -> None:
    say(text + ("; --fresh rescores" if text.startswith("reusing") else ""))


def check_arguments(args: argparse.Namespace) -> None:
    """Every numeric setting that cannot work, before anything is loaded or scored."""
    checks = [("--workers", args.workers, 1), ("--threads", args.threads, 0),
              ("--bootstrap", args.bootstrap, 0), ("--batch-size", args.batch_size, 1),
              ("--chunk-size", args.chunk_size, 1)]
    if not args.all:
        checks.append(("--sample", args.sample, 1))
    for flag, value, least in checks:
        if value < least:
            raise UsageError(f"{flag} {value}: must be at least {least}")
    exclusive = [("--shard", args.shard), ("--merge", args.merge)]
    if all(v for _, v in exclusive):
        raise UsageError("--shard and --merge are separate steps: score each shard, then merge")
    if args.fresh and args.adopt:
        raise UsageError("--fresh discards the journal that --adopt would convert; pick one")
    if args.merge and (args.fresh or args.adopt):
        raise UsageError("--merge combines existing shard journals; --fresh and --adopt apply "
                         "to scoring runs")


def parse_proxies(text: str, *, baselines: bool) -> list[str]:
    """The proxy names of ``--proxies`` (checked), then the baselines unless left out."""
    proxies = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not proxies:
        raise UsageError(f"--proxies {text!r} names no proxy; e.g. --proxies naswot,logsynflow "
                         "(--list-proxies shows them all)")
    for name in proxies:
        get_proxy(name)  # fail before any work on a typo; the message lists the known ones
    if baselines:
        proxies += [p.name for p in proxy_info() if p.baseline and p.name not in proxies]
    return proxies


def parse_proxy_options(items: Sequence[str], proxies: Sequence[str]) -> dict[str, dict]:
    """``--option PROXY.KEY=VALUE`` items as {proxy: {key: value}}, checked against the
    proxies of the run and the options each accepts before anything is scored."""
    options: dict[str, dict] = {}
    for item in items:
        target, sep, text = item.partition("=")
        proxy, dot, key = target.strip().partition(".")
        if not (sep and dot and proxy and key):
            raise UsageError(f"--option {item!r}: write PROXY.KEY=VALUE, e.g. "
                             "grad_norm.recipe=zennas")
        if proxy not in proxies:
            raise UsageError(f"--option {item!r}: {proxy} is not among this run's proxies "
                             f"({', '.join(proxies)})")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options.setdefault(proxy, {})[key] = value
    try:
        resolve_proxies(options)
    except TypeError as err:
        raise UsageError(f"--option: {err}") from None
    return options


def default_out(args: argparse.Namespace) -> Path:
    """A scratch folder named by the settings, so that a quick try never rewrites the
    committed results/ and two different studies never share a journal by accident."""
    size = "all" if args.all else f"sample{args.sample}"
    dataset = "" if args.dataset == "cifar10" else f"-{args.dataset}"
    return Path("runs") / f"{args.bench}{dataset}-{size}-seed{args.seed}"


def check_out_folder(out: Path) -> None:
    """``out`` must be a folder this process can write to (created if missing)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise UsageError(f"--out {out} cannot be written: {err.strerror or err}") from None
    if os.stat(out).st_mode & 0o222 == 0:  # root may write anyway; the folder says read-only
        raise UsageError(f"--out {out} is read-only")


RUN_OUTPUTS = ("scores.csv", "correlations.csv", "correlations.md", "pairwise_spearman.csv")


def discard_run(out: Path, shard: str | None = None) -> list[str]:
    """What ``--fresh`` removes: the journal this run writes, run.json and the tables."""
    names = ["journal.csv", "run.json", *RUN_OUTPUTS]
    if shard:
        names = [shard_journal(out, *parse_shard(shard)).name]
    removed = []
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
            removed.append(name)
    return removed


def read_run_record(out: Path) -> dict | None:
    """The folder's ``run.json`` or None; an error if it is there but is not a settings record
    (``zcproxy.analysis.run_record`` reads it; a record must name its benchmark to be resumed)."""
    record = run_record(out)
    if record is not None and "bench" not in record:
        raise JournalError(f"{out / 'run.json'} is not a zcproxy settings record; restore it, "
                           "or rescore with --fresh")
    return record


def check_run_record(out: Path, settings: dict) -> None:
    """Refuse a folder whose run.json records another study (settings or data)."""
    record = read_run_record(out)
    if record is None:
        return
    clash = settings_differences(record, settings)
    if clash:
        raise SettingsMismatch(f"{out} holds a run with other settings ({'; '.join(clash)}); "
                               "use another --out folder, or --fresh to rescore")


def study_proxies(journal: pd.DataFrame, requested: Sequence[str]) -> list[str]:
    """The requested proxies, then any other registered proxy the journal holds scores of."""
    known = set(available_proxies())
    extra = [p for p in dict.fromkeys(journal["proxy"]) if p not in requested and p in known]
    return list(requested) + extra


def study_indices(journal: pd.DataFrame, order: Sequence[int]) -> list[int]:
    """Every architecture in the journal, in the order of the seeded sample permutation."""
    scored = set(journal["index"].tolist())
    return [i for i in order if i in scored]


SHARD_GLOB = "journal.shard-*-of-*.csv"


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), with 0 <= I < N."""
    try:
        shard, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N, e.g. 0/4, not {text!r}") from None
    if count < 1 or not 0 <= shard < count:
        raise UsageError(f"--shard {text}: need N >= 1 and 0 <= I < N")
    return shard, count


def shard_indices(indices: Sequence[int], shard: int, count: int) -> list[int]:
    """The shard-th of ``count`` interleaved parts: every part is itself a uniform sample, and
    the parts are as even as they can be."""
    return list(indices)[shard::count]


def shard_journal(out: Path, shard: int, count: int) -> Path:
    return out / f"journal.shard-{shard}-of-{count}.csv"


def merge_shards(out: Path, indices: Sequence[int], proxies: Sequence[str], settings: dict,
                 table: pd.DataFrame) -> pd.DataFrame:
    """Fold every shard journal (and an existing journal.csv) into journal.csv.

    Every shard must carry the settings of this merge (benchmark, dataset, seed, batch, data
    fingerprints) and name the current table's architecture on each row; a shard scored
    otherwise stops the merge, naming the file and the difference.  A score found twice is
    kept once, a success winning over a recorded failure; the merge also stops with a clear
    error if a shard file is missing or an architecture of the sample has no score, so tables
    are never written from a partial or mixed sample by accident.
    """
    from .journal import COLUMNS
    paths = sorted(out.glob(SHARD_GLOB))
    if not paths:
        raise UsageError(f"--merge: no {SHARD_GLOB} in {out}; score the shards with --shard first")
    counts = {int(p.stem.rsplit("-of-", 1)[1]) for p in paths}
    if len(counts) != 1:
        raise UsageError(f"--merge: {out} mixes shard journals of different splits "
                         f"({', '.join(f'of {c}' for c in sorted(counts))}); keep one split")
    count = counts.pop()
    missing_files = [str(shard_journal(out, i, count).name) for i in range(count)
                     if not shard_journal(out, i, count).exists()]
    if missing_files:
        raise UsageError(f"--merge: missing shard journal(s) {', '.join(missing_files)} in {out}")
    sources = [shard_journal(out, i, count) for i in range(count)]
    merged_path = out / "journal.csv"
    if merged_path.exists():
        sources.insert(0, merged_path)
    frames, sessions = [], []
    for path in sources:
        with Journal(path, settings) as journal:  # repairs a torn last line, checks the header
            if journal.legacy:
                raise JournalError(f"--merge: {path} has no settings record (zcproxy 0.1); "
                                   "rescore that shard")
            clash = settings_differences(journal.settings, settings)
            if clash:
                raise SettingsMismatch(f"--merge: {path.name} was scored with other settings "
                                       f"than this merge ({'; '.join(clash)}); rescore it with "
                                       "the same settings as the other shards")
            frame = journal.read()
            sessions += [s for s in journal.sessions() if s not in sessions]  # merged again
        check_architectures(frame, table, path)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame["_ok"] = frame["error"] == ""
    frame = (frame.sort_values("_ok", kind="stable")
             .drop_duplicates(["index", "proxy"], keep="last").drop(columns="_ok"))
    carried, reused = carry_over(frame)
    for sentence in reused:
        say(sentence)
    have = done_pairs(carried, retry_failed=False, versions=proxy_versions(proxies))
    lacking = [(i, p) for i in indices for p in proxies if (int(i), p) not in have]
    if lacking:
        position = {int(i): k for k, i in enumerate(indices)}
        by_shard = sorted({position[int(i)] % count for i, _ in lacking})
        raise UsageError(f"--merge: {len(lacking)} score(s) of {len({i for i, _ in lacking})} "
                         f"architecture(s) are missing (e.g. index {lacking[0][0]}, proxy "
                         f"{lacking[0][1]}), from shard(s) {', '.join(map(str, by_shard))} of "
                         f"{count}; finish those shards with the same settings, then merge again")
    # Sample order first; rows of other architectures (an earlier journal.csv) are kept too.
    order = {int(i): k for k, i in enumerate(indices)}
    frame = frame.assign(_pos=frame["index"].map(order).fillna(len(order)))
    frame = frame.sort_values(["_pos", "index", "proxy"], kind="stable")[COLUMNS]
    write_journal(merged_path, settings, frame.itertuples(index=False, name=None), sessions)
    say(f"merged {count} shard journals into {merged_path} "
        f"({len(frame)} scores of {len(indices)} architectures)")
    # The file keeps the versions rows were computed under; the caller gets the carried ones.
    return carried.loc[frame.index, COLUMNS].reset_index(drop=True)


def add_ensembles(scores: pd.DataFrame, ensembles: Sequence[tuple[str, str, tuple[str, ...]]]
                  ) -> pd.DataFrame:
    """``scores`` with one column per rank aggregate (name, rule, members), computed over the
    architectures that have every member (:mod:`zcproxy.ensemble`, population-level)."""
    from .ensemble import ensemble_scores
    scores = scores.copy()
    for name, rule, members in ensembles:
        missing = [m for m in members if m not in scores.columns]
        if missing:
            raise UsageError(f"--ensemble {name}: {', '.join(missing)} not scored in this study; "
                             "add them to --proxies")
        if name in scores.columns:
            raise UsageError(f"--ensemble {name}: the name is taken by a proxy or column")
        scores[name] = ensemble_scores(scores, list(members), rule, nan="propagate").to_numpy()
    return scores


def write_outputs(out: Path, scores: pd.DataFrame, proxies: Sequence[str], bench: str, *,
                  n_boot: int = 1000, seed: int = 0, split: str = "",
                  settings: dict | None = None,
                  ensembles: Sequence[tuple[str, str, tuple[str, ...]]] = (),
                  dataset: str = "cifar10") -> pd.DataFrame:
    """Write scores.csv, correlations.csv/.md and pairwise.csv; return the correlation table.

    Proxies come first and structural baselines in a block under them; ``partial_*`` columns
    give the Spearman correlation left once #params (or depth) is controlled for.  Everything
    is computed before the first file is touched, and each file is replaced atomically; then
    ``run.json`` (``settings`` plus the row count and SHA-256 of each table) is written last,
    so a reader can tell a complete set of tables from one a kill interrupted.
    """
    aggregates = {name: f"{rule}({','.join(members)})" for name, rule, members in ensembles}
    scores = add_ensembles(scores, ensembles)
    proxies = list(proxies) + list(aggregates)
    table = correlation_table(scores, proxies,
                              higher_is_better={p: _higher_is_better(p) for p in proxies},
                              n_boot=n_boot, seed=seed)
    for control in ("n_params", "depth"):
        if control in scores:
            table[f"partial_{control}"] = [
                _partial(scores, p, control) for p in table.index]
    table.insert(0, "kind", ["ensemble" if p in aggregates else
                             "baseline" if get_proxy(p).baseline else "proxy"
                             for p in table.index])
    ref = {p: published(bench, p, dataset) for p in table.index}  # that dataset's figures
    table["paper_kendall"] = [r[0] if r else float("nan") for r in ref.values()]
    table["paper_spearman"] = [r[1] if r else float("nan") for r in ref.values()]
    table = table.sort_values("kind", kind="stable", key=lambda k: k == "baseline")
    pairwise = pairwise_rank_correlation(scores, list(proxies), method="spearman")
    note = f"Accuracy: {split} split. " if split else ""
    blocks = [f"## {title}\n\n" + to_markdown(table[table["kind"] == kind].drop(columns="kind"))
              for kind, title in (("proxy", "Proxies"),
                                  ("ensemble", "Rank aggregates: " + ", ".join(
                                      f"{n} = {d}" for n, d in aggregates.items())),
                                  ("baseline", "Structural baselines"))
              if (table["kind"] == kind).any()]
    markdown = (
        f"# {bench}: proxy vs accuracy ({len(scores)} architectures)\n\n{note}"
        "Intervals are bootstrap 95%. partial_X: Spearman ρ of the proxy with accuracy once X "
        "is controlled for (0 = the proxy knows nothing beyond X). Re-running "
        "`python -m zcproxy.correlate` on the same --out folder recomputes these tables from "
        "journal.csv without re-scoring.\n\n" + "\n\n".join(blocks)
        + "\n\n## Spearman ρ between proxies\n\n" + to_markdown(pairwise) + "\n")
    write_csv(scores, out / "scores.csv", index=False)
    write_csv(table, out / "correlations.csv")
    write_csv(pairwise, out / "pairwise_spearman.csv")
    write_text(out / "correlations.md", markdown)
    if settings is not None:
        # The definition each score column is of, so a reader of scores.csv alone (a search's
        # --scores, the leaderboard) can tell a table of an older definition from a current one.
        settings = {**settings, "proxy_versions": proxy_versions(
            [p for p in proxies if p not in aggregates]),
            "ensembles": {name: list(members) for name, _, members in ensembles}}
        write_run_record(out, settings, {"scores.csv": len(scores), "correlations.csv": len(table),
                                         "pairwise_spearman.csv": len(pairwise),
                                         "correlations.md": None})
    return table


def write_run_record(out: Path, settings: dict, outputs: dict[str, int | None]) -> Path:
    """run.json: the settings and data fingerprints the tables come from (from
    :func:`write_outputs` also ``proxy_versions``, the definition version of each proxy column,
    and ``ensembles``, each aggregate column's members), and for each table
    its row count and SHA-256, which :func:`zcproxy.analysis.load_scores` checks, and
    ``scored_with``: the devices, torch builds and threads per worker of the journal's runs."""
    record = dict(settings)
    journal = out / "journal.csv"
    if journal.exists():  # where its exact scores were computed (device, torch, threads)
        record["scored_with"] = scored_with(read_sessions(journal))
    record["outputs"] = {name: {"rows": rows, "sha256": sha256_file(out / name)}
                         for name, rows in outputs.items()}
    return write_text(out / "run.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def _higher_is_better(name: str) -> bool:
    # Rank aggregates are oriented "higher is better" by construction.
    return get_proxy(name).higher_is_better if name in available_proxies() else True


def _partial(scores: pd.DataFrame, proxy: str, control: str) -> float:
    if proxy == control or scores[control].nunique() < 2:
        return float("nan")
    sign = 1.0 if _higher_is_better(proxy) else -1.0
    return float(partial_rank_correlation(sign * scores[proxy], scores["accuracy"],
                                          scores[control]))


if __name__ == "__main__":
    raise SystemExit(main())
