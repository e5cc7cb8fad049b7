"""``python -m zcproxy.leaderboard``: every proxy, ensemble and baseline of a study, side by side.

Reads the score table a ``correlate`` run wrote (``<run>/scores.csv``: one row per architecture,
one column per proxy and ``seconds_<proxy>``) and writes one Markdown table per benchmark and
dataset: Kendall τ and Spearman ρ with bootstrap 95 % intervals, Spearman ρ once #params is
controlled for, seconds per architecture on the machine that scored it, and the published
figures beside ours.  Rank aggregates (``--ensemble NAME=rule:p1,p2,...``) are computed here,
over the population of the table, by :mod:`zcproxy.ensemble`: they are not single-model proxies.
For every aggregate of two or more members the tables also say what each member adds: τ with
and without it, and a paired bootstrap interval of the difference (``<bench>-<dataset>-members.csv``).

Rows are sorted by τ, proxies and ensembles first, then the structural baselines (a proxy is
worth its cost only above them).  A proxy scored on fewer architectures than the others (a
study that grows) says so in its ``n`` column; every row is computed on the architectures it
has.  τ and ρ drop the architectures a proxy could not score (NaN or ±inf, reason in the run's
``errors`` column); the "undefined last" column ranks them below every scored one instead, as
a search does and as a figure over a whole benchmark must (:func:`undefined_last`).  An
aggregate's τ and ρ likewise rank only the architectures every member could score; its
"undefined last" figure ranks each member's undefined scores at that member's bottom
(AZ-NAS's own aggregation), and what each member adds compares the aggregates with and without
it on the same architectures, those the full aggregate ranks.

Accuracies of other datasets (``--datasets``) are looked up in the benchmark's tables for
the same architectures; the score is the one the run computed (its networks, its images), and
the table says which dataset the networks were built for.  When that dataset's images were not
in the data folder (the run's ``run.json`` records the stand-in, CIFAR-10), every row whose score
depends on the image batch is marked † and the caption says which images it saw.

``--population`` restricts a table to a named part of the benchmark (NATS-tss: ``no-dead-ops``,
the 9,445 cells VKDNW's published figures rank), so that ours and a published figure are
computed over the same cells.

After every run, ``summary.md`` in the output folder puts every table there side by side, one
row per proxy (:mod:`zcproxy.leaderboard_summary`).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .cli import add_debug_flag, wants_traceback
from .ensemble import EnsembleSpec, average_ranks, ensemble_scores, parse_ensemble
from .published import published_all
from .registry import available_proxies, get_proxy
from .stats import (bootstrap_ci, kendall_tau, paired_difference, partial_rank_correlation,
                    spearman_rho)

def _oriented(frame: pd.DataFrame, proxy: str) -> pd.Series:
    sign = 1.0 if get_proxy(proxy).higher_is_better else -1.0
    return sign * pd.to_numeric(frame[proxy], errors="coerce")


def _ensemble_column(columns: dict[str, pd.Series], name: str, rule: str,
                     members: Sequence[str], *, nan: str = "propagate",
                     rows: pd.Series | None = None) -> pd.Series:
    """The aggregate of already oriented member columns, over the architectures in ``rows``
    (default all; NaN elsewhere).  ``nan="propagate"``: NaN where a member is undefined (NaN or
    ±inf), the others ranked among themselves, as a single proxy's τ drops its undefined
    architectures; ``nan="worst"``: a member's undefined scores rank at its bottom (AZ-NAS's
    own aggregation, and a search's)."""
    missing = [m for m in members if m not in columns]
    if missing:
        raise ValueError(f"ensemble {name}: no scores for {', '.join(missing)} in this table")
    frame = pd.DataFrame({m: columns[m] for m in members})
    chosen = frame if rows is None else frame[rows.reindex(frame.index, fill_value=False)]
    values = pd.Series(ensemble_scores(chosen, list(members), rule, higher_is_better=True,
                                       nan=nan), index=chosen.index)
    return values.reindex(frame.index)


def undefined_last(values: pd.Series) -> pd.Series:
    """Average ranks of oriented scores with every undefined one (NaN, −inf) tied below every
    defined score, and +inf tied above.

    This is how a search that must choose among all architectures uses a proxy, and how a
    published figure over a whole benchmark counts the cells a proxy cannot score (a NATS-tss
    cell whose output does not depend on its input has 10 % accuracy, so ranking it last is
    right); the leaderboard's main τ and ρ drop those cells instead and say how many remain.
    """
    return pd.Series(average_ranks(values.to_numpy(dtype=float)), index=values.index)


def _proxy_columns(scores: pd.DataFrame) -> dict[str, pd.Series]:
    known = set(available_proxies())
    return {p: _oriented(scores, p) for p in scores.columns
            if p in known and f"seconds_{p}" in scores.columns}


def leaderboard(scores: pd.DataFrame, *, bench: str, accuracy: pd.Series, dataset: str,
                ensembles: Sequence[EnsembleSpec] = (), n_boot: int = 1000,
                seed: int = 0, proxy_options: Mapping[str, Mapping] | None = None
                ) -> pd.DataFrame:
    """One row per proxy / ensemble / baseline in ``scores`` against ``accuracy`` (aligned).

    ``needs_data`` marks the rows whose score depends on the real-image batch (a
    data-dependent proxy under the run's ``proxy_options``, or an aggregate with one among its
    members): the rows to label when that batch was not the networks' own dataset.
    """
    columns = _proxy_columns(scores)
    seconds = {p: float(pd.to_numeric(scores[f"seconds_{p}"], errors="coerce").median())
               for p in columns}
    # Scored (with a number or an undefined one) where the run timed it; a blank
    # seconds_<proxy> is an architecture the study has not reached for that proxy.
    scored = {p: pd.to_numeric(scores[f"seconds_{p}"], errors="coerce").notna() for p in columns}
    kinds = {p: "baseline" if get_proxy(p).baseline else "proxy" for p in columns}
    options = proxy_options or {}
    needs_data = {p: get_proxy(p).reads_images(options.get(p)) for p in columns}
    acc = pd.to_numeric(accuracy, errors="coerce")
    worst_first: dict[str, pd.Series] = {}  # each aggregate's "undefined last" ranking
    for name, rule, members in ensembles:
        columns[name] = _ensemble_column(columns, name, rule, members)
        seconds[name] = float(sum(seconds[m] for m in members))
        scored[name] = pd.concat([scored[m] for m in members], axis=1).all(axis=1)
        worst_first[name] = _ensemble_column(columns, name, rule, members, nan="worst",
                                             rows=scored[name] & np.isfinite(acc))
        kinds[name] = f"ensemble ({rule}: {'+'.join(members)})"
        needs_data[name] = any(needs_data[m] for m in members)
    params = pd.to_numeric(scores["n_params"] if "n_params" in scores else scores["params"],
                           errors="coerce")
    rows = []
    for name, values in columns.items():
        keep = np.isfinite(values) & np.isfinite(acc)
        x, y = values[keep].to_numpy(), acc[keep].to_numpy()
        tau, rho = kendall_tau(x, y), spearman_rho(x, y)
        attempted = scored[name] & np.isfinite(acc)
        ranked = undefined_last(worst_first.get(name, values)[attempted])
        y_all = acc[attempted]
        tau_ci = bootstrap_ci(x, y, "kendall", n_boot=n_boot, seed=seed) if n_boot else (math.nan,) * 2
        rho_ci = bootstrap_ci(x, y, "spearman", n_boot=n_boot, seed=seed) if n_boot else (math.nan,) * 2
        partial = (partial_rank_correlation(values, acc, params).value
                   if name not in ("n_params",) else math.nan)
        figures = published_all(bench, name, dataset)
        rows.append({
            "name": name, "kind": kinds[name], "needs_data": needs_data[name], "n": tau.n,
            "kendall": tau.value, "kendall_lo": tau_ci[0], "kendall_hi": tau_ci[1],
            "spearman": rho.value, "spearman_lo": rho_ci[0], "spearman_hi": rho_ci[1],
            "n_all": int(attempted.sum()), "kendall_all": kendall_tau(ranked, y_all).value,
            "spearman_all": spearman_rho(ranked, y_all).value,
            "partial_n_params": partial, "seconds": seconds[name],
            "published": "; ".join(f"{_num(t)}/{_num(r)} ({src})" for t, r, src in figures)})
    table = pd.DataFrame(rows)
    table["_baseline"] = table["kind"] == "baseline"
    table = table.sort_values(["_baseline", "kendall"], ascending=[True, False], kind="stable")
    return table.drop(columns="_baseline").reset_index(drop=True)


def member_contributions(scores: pd.DataFrame, *, accuracy: pd.Series,
                         ensembles: Sequence[EnsembleSpec], n_boot: int = 1000,
                         seed: int = 0) -> pd.DataFrame:
    """What each member adds to its aggregate: τ(aggregate) − τ(aggregate without it).

    One row per (ensemble, member) of every ensemble with at least two members.  The
    difference is paired (:func:`zcproxy.stats.paired_difference`: the same resampled
    architectures for both aggregates), because the two aggregates' own intervals overlap
    even when one of them is better on almost every resample.
    """
    columns = _proxy_columns(scores)
    acc = pd.to_numeric(accuracy, errors="coerce").to_numpy()
    rows = []
    for name, rule, members in ensembles:
        if len(members) < 2:
            continue
        full = _ensemble_column(columns, name, rule, members)
        for member in members:
            rest = [m for m in members if m != member]
            without = _ensemble_column(columns, f"{name} without {member}", rule, rest,
                                       rows=full.notna())
            diff = paired_difference(full.to_numpy(), without.to_numpy(), acc, "kendall",
                                     n_boot=n_boot, seed=seed)
            rows.append({"ensemble": name, "member": member, "n": diff.n,
                         "kendall_with": diff.a_value, "kendall_without": diff.b_value,
                         "delta": diff.value, "delta_lo": diff.lo, "delta_hi": diff.hi,
                         "share_above": diff.share_above})
    return pd.DataFrame(rows, columns=["ensemble", "member", "n", "kendall_with",
                                       "kendall_without", "delta", "delta_lo", "delta_hi",
                                       "share_above"])


def contributions_markdown(table: pd.DataFrame) -> str:
    """The member contributions as a Markdown table."""
    lines = ["| ensemble | member | n | τ with | τ without | Δτ [95 % CI] | resamples with Δτ > 0 |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        share = "–" if math.isnan(r.share_above) else f"{100 * r.share_above:.0f} %"
        lines.append(f"| `{r.ensemble}` | `{r.member}` | {r.n} | {_num(r.kendall_with)} | "
                     f"{_num(r.kendall_without)} | {_signed(r.delta)} [{_signed(r.delta_lo)}, "
                     f"{_signed(r.delta_hi)}] | {share} |")
    return "\n".join(lines)


def _num(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _signed(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:+.3f}"


def to_markdown(table: pd.DataFrame, *, stand_in_images: bool = False) -> str:
    """The leaderboard as a Markdown table (intervals in brackets).

    With ``stand_in_images`` (the networks' own dataset had no images in the data folder) every
    row that depends on the image batch is marked †, for the caption to explain.
    """
    lines = ["| # | proxy | kind | n | τ [95 % CI] | ρ [95 % CI] | τ / ρ, undefined last | "
             "partial ρ given #params | s/arch | published τ/ρ |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(table.itertuples(index=False), 1):
        mark = " †" if stand_in_images and r.needs_data else ""
        lines.append(
            f"| {i} | `{r.name}`{mark} | {r.kind} | {r.n} | {_num(r.kendall)} [{_num(r.kendall_lo)}, "
            f"{_num(r.kendall_hi)}] | {_num(r.spearman)} [{_num(r.spearman_lo)}, "
            f"{_num(r.spearman_hi)}] | {_num(r.kendall_all)} / {_num(r.spearman_all)} | "
            f"{_num(r.partial_n_params)} | {r.seconds:.3f} | "
            f"{r.published or '–'} |")
    return "\n".join(lines)


def _networks_and_images(record: dict, requested: str | None) -> tuple[str, str]:
    """(dataset the run's networks were built for, images its data-dependent proxies saw).

    Both come from the run's settings record; runs written before zcproxy recorded the image
    source saw their own dataset's images (CIFAR-10 was the only dataset they could build).
    """
    recorded = record.get("dataset")
    if requested and recorded and requested != recorded:
        raise ValueError(f"--network-dataset {requested} contradicts the run's run.json, whose "
                         f"networks were built for {recorded}")
    network = requested or recorded or "cifar10"
    return network, record.get("inputs_source") or network


def check_run_is_of(scores: pd.DataFrame, record: dict, bench: str, table: pd.DataFrame,
                    run: str) -> None:
    """ValueError unless the run's scores are of ``bench``'s architectures as ``table`` names
    them: accuracy is looked up by index, so scores of another benchmark (or of another version
    of its table) would otherwise be ranked against the wrong networks' accuracy, silently."""
    recorded = record.get("bench")
    if recorded and recorded != bench:
        raise ValueError(f"{run} holds {recorded} scores (its run.json), not {bench}: pass "
                         f"--bench {recorded}")
    index = scores["index"].to_numpy()
    outside = index[(index < 0) | (index >= len(table))]
    if len(outside):
        raise ValueError(f"{run}: index {int(outside[0])} is outside the {bench} table "
                         f"({len(table):,} architectures): not {bench} scores")
    if "arch" in scores:
        names = table["arch"].astype(str).to_numpy()[index]
        wrong = np.flatnonzero(names != scores["arch"].astype(str).to_numpy())
        if len(wrong):
            at = int(wrong[0])
            raise ValueError(f"{run}: architecture {int(index[at])} is "
                             f"{scores['arch'].iat[at]!r} in scores.csv but {names[at]!r} in the "
                             f"{bench} table ({len(wrong):,} of {len(index):,} differ): another "
                             "benchmark or another version of its data")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zcproxy.leaderboard", description=__doc__.split("\n\n")[0] + "\n\n"
        + __doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m zcproxy.leaderboard --bench nats-tss --run "
               "results/correlate/nats-tss --datasets cifar10,cifar100,ImageNet16-120 "
               "--ensemble aznas=log_rank:az_expressivity,az_progressivity,az_trainability,"
               "az_complexity --out results/leaderboard")
    p.add_argument("--bench", required=True, help="benchmark the run scored (nb101, nats-sss, "
                   "nats-tss)")
    p.add_argument("--run", required=True, help="a correlate output folder (holds scores.csv)")
    p.add_argument("--datasets", default=None,
                   help="comma-separated datasets whose accuracy to rank (default: the one the "
                        "networks were built for)")
    p.add_argument("--network-dataset", default=None,
                   help="the dataset the run's networks were built for (default: the one the "
                        "run's run.json records, else cifar10); a value that contradicts "
                        "run.json is an error")
    p.add_argument("--ensemble", action="append", default=[], metavar="NAME=rule:p1,p2",
                   help="a rank aggregate to add (rules: mean_rank, log_rank = AZ-NAS's Σ log "
                        "rank, max_abs = FreeREA's); repeatable")
    p.add_argument("--population", default="all",
                   help="rank only a named part of the benchmark, to compare with figures "
                        "published over that part (nats-tss: no-dead-ops, the 9,445 cells "
                        "without an operation off every input-output path, which VKDNW's "
                        "Table 1 ranks); the tables' default name gains the suffix")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--data-dir", default=None, help="benchmark data folder")
    p.add_argument("--name", default=None,
                   help="file-name stem of the tables (default: --bench, or "
                        "<bench>-<dataset>-networks for a run of CIFAR-100 / ImageNet16-120 "
                        "networks), so that two studies of one benchmark sit side by side, "
                        "e.g. --name nb101-zoo")
    p.add_argument("--out", default="runs/leaderboard",
                   help="folder for <name>-<dataset>.md/.csv (default: %(default)s)")
    add_debug_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .atomic import write_csv, write_text
    from .nasbench import get_benchmark
    try:
        ensembles = [parse_ensemble(e) for e in args.ensemble]
        if args.bootstrap < 0:
            raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}")
        from .analysis import read_scores, run_record
        scores = read_scores(args.run)
        record = run_record(args.run) or {}
        network_dataset, images = _networks_and_images(record, args.network_dataset)
        options_note = "".join(
            f" Proxy options: `{proxy}` "
            + ", ".join(f"{key}={value}" for key, value in options.items()) + "."
            for proxy, options in (record.get("proxy_options") or {}).items())
        stand_in = images != network_dataset
        bench = get_benchmark(args.bench, data_dir=args.data_dir)
        run_size = len(scores)
        population_note = ""
        if args.population != "all":
            scores = scores[bench.population_mask(args.population, scores["index"])]
            scores = scores.reset_index(drop=True)
            population_note = (f" Population `{args.population}`: "
                               f"{bench.populations[args.population]}; {len(scores)} of the "
                               f"run's {run_size} architectures.")
        out = Path(args.out)
        name = args.name or (args.bench if network_dataset == "cifar10"
                             else f"{args.bench}-{network_dataset}-networks")
        if args.population != "all" and not args.name:
            name += f"-{args.population}"
        datasets = [d.strip() for d in (args.datasets or network_dataset).split(",")
                    if d.strip()]
        for dataset in datasets:  # every table checked before anything is written
            check_run_is_of(scores, record, args.bench, bench.table(dataset), args.run)
        out.mkdir(parents=True, exist_ok=True)
        written: list[str] = []
        for dataset in datasets:
            table = bench.table(dataset)
            accuracy = pd.Series(table["accuracy"].to_numpy()[scores["index"].to_numpy()],
                                 index=scores.index)
            board = leaderboard(scores, bench=args.bench, accuracy=accuracy, dataset=dataset,
                                ensembles=ensembles, n_boot=args.bootstrap,
                                proxy_options=record.get("proxy_options"))
            members = member_contributions(scores, accuracy=accuracy, ensembles=ensembles,
                                           n_boot=args.bootstrap)
            stem = out / f"{name}-{dataset}"
            write_csv(board, stem.with_suffix(".csv"), index=False)
            contributions = ""
            if len(members):
                write_csv(members, out / f"{stem.name}-members.csv", index=False)
                contributions = (
                    "\n## What each member adds to its aggregate\n\nτ of the aggregate minus τ "
                    "of the same aggregate without that member, on the architectures both "
                    "rank; the interval and the share of resamples with Δτ > 0 come from one "
                    "paired bootstrap (the same resampled architectures for both), so an "
                    "interval that excludes 0 means the member helps (or hurts) on this "
                    "sample.\n\n" + contributions_markdown(members) + "\n")
            split = getattr(bench, "accuracy_split", "")
            images_note = (f" † data-dependent (the proxy, or a member of the aggregate): "
                           f"its image batch was {images}, not {network_dataset} images."
                           if stand_in and board["needs_data"].any() else "")
            write_text(stem.with_suffix(".md"), (
                f"# {args.bench}: leaderboard against {dataset} accuracy\n\n"
                f"{len(scores)} architectures of `{args.run}`; networks built for "
                f"{network_dataset}{'; accuracy: ' + split if split else ''}.{population_note}"
                f"{options_note}"
                f"{images_note} "
                "Intervals: bootstrap 95 %. τ and ρ are over the n architectures a row could "
                "score (an aggregate: those every member scores); \"undefined last\" ranks every "
                "architecture the proxy was run on, its NaN and −inf scores tied below the rest "
                "(an aggregate: each member's, AZ-NAS's rule), as a search or a whole-benchmark "
                "figure must. s/arch: median seconds on the machine that scored "
                "them; work shared between proxies (one backward, one traced forward) is charged to the "
                "first proxy that needed it, so a 0.000 means \"free once its partner ran\"; "
                "an ensemble costs the sum of its members.\n\n"
                + to_markdown(board, stand_in_images=stand_in) + "\n"
                + contributions))
            print(f"{stem}.md: {len(board)} rows")
            written.append(stem.name)
        from .leaderboard_summary import write_summary
        summary, read = write_summary(out)
        earlier = [s for s in read if s not in written]
        print(f"{summary}: {len(read)} table{'' if len(read) == 1 else 's'} side by side"
              + (f", {len(earlier)} of them from earlier runs in {out} ({', '.join(earlier)})"
                 if earlier else ""))
    except (ValueError, KeyError, FileNotFoundError) as err:
        if wants_traceback(args.debug):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
