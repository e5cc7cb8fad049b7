"""``python -m zcproxy.leaderboard_summary``: every leaderboard table of a folder in one view.

Each leaderboard table (``<name>-<dataset>.csv``, written by :mod:`zcproxy.leaderboard`) ranks
one benchmark against one dataset's accuracy.  A reader choosing a proxy wants the other way
round: one row per proxy, one column per table, to see whether a proxy that leads on one
benchmark holds up on the others (MeCo leads NATS-tss and is reversed on NATS-sss; ES leads
NB101's paper proxies and is near zero on NATS-sss).  This module writes that view,
``summary.md`` / ``summary.csv``: Kendall τ in every table, and each row's *rank inside the
table* (1 = best τ among all of that table's rows, baselines included), so that tables with
different populations and difficulty are compared by position, not by raw τ.  Tables have
different numbers of rows (the NB101 table of the paper's proxies has 15, the zoo's 35), so a
row's place in a table is its rank divided by the table's rows, and rows are sorted by their
median place over the tables they appear in.

Nothing is recomputed: the values are read from the tables, which keep the intervals,
partial correlations, costs and published figures.  Tables in the folder may come from runs of
different sizes (the NB101 zoo has 200 cells); the legend gives each table's architecture count,
and a τ over fewer architectures than the table's largest count carries its own n.
:mod:`zcproxy.leaderboard` rewrites the summary after every run, from every table in its
output folder, and says how many of them it did not write itself.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .cli import add_debug_flag, run_command
from .nasbench.nats import NUM_CLASSES

_BENCH_ORDER = ("nb101", "nats-sss", "nats-tss")  # the order of the README's sections
_DATASET_ORDER = tuple(NUM_CLASSES)  # cifar10, cifar100, ImageNet16-120: the NATS adapter's
_SHORT = (("ImageNet16-120", "IN16"), ("cifar100", "C100"), ("cifar10", "C10"),
          ("nats-tss", "tss"), ("nats-sss", "sss"), ("-networks-", " nets · "), ("-", " "))


def table_files(folder: str | Path) -> list[Path]:
    """The leaderboard tables in ``folder`` (``<name>-<dataset>.csv``; not the members' tables
    or the summary itself), benchmark by benchmark, then the networks' dataset, then the
    accuracy's dataset."""
    def key(path: Path) -> tuple:
        stem = path.stem
        bench = next((i for i, b in enumerate(_BENCH_ORDER) if stem.startswith(b)),
                     len(_BENCH_ORDER))
        dataset = next((i for i, d in enumerate(_DATASET_ORDER) if stem.endswith("-" + d)),
                       None)
        name = stem if dataset is None else stem[:-len(_DATASET_ORDER[dataset]) - 1]
        networks = next((i + 1 for i, d in enumerate(_DATASET_ORDER)
                         if name.endswith(f"-{d}-networks")), 0)  # 0: CIFAR-10's own
        return bench, networks, name, len(_DATASET_ORDER) if dataset is None else dataset
    return sorted((p for p in Path(folder).glob("*.csv")
                   if not p.stem.endswith("-members") and p.name != "summary.csv"), key=key)


def short_label(stem: str) -> str:
    """A column heading short enough for a table of ten columns: ``nats-tss-cifar100`` is
    ``tss C100``, ``nats-tss-cifar100-networks-cifar100`` is ``tss C100 nets · C100``."""
    for long, short in _SHORT:
        stem = stem.replace(long, short)
    return stem


def summarize(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (name, kind) over ``tables`` (label → a leaderboard table with ``name``,
    ``kind``, ``n``, ``kendall``): ``tau:<label>``, ``n:<label>`` and ``rank:<label>`` for every
    table, ``tables`` (how many rank the row) and ``median_place`` (the median over those tables
    of rank ÷ the table's rows, in (0, 1]); sorted by median place, then by the number of tables
    (more first), then by name.

    A row is keyed by its kind too, so two aggregates of one name but different members (in two
    tables) stay two rows instead of one row that mixes them.
    """
    rows: dict[tuple[str, str], dict] = {}
    for label, table in tables.items():
        missing = {"name", "kind", "n", "kendall"} - set(table.columns)
        if missing:
            raise ValueError(f"{label}: not a leaderboard table (no {', '.join(sorted(missing))})")
        tau = pd.to_numeric(table["kendall"], errors="coerce")
        ranks = tau.rank(ascending=False, method="min")
        for r, t, rank in zip(table.itertuples(index=False), tau, ranks):
            row = rows.setdefault((r.name, r.kind), {"name": r.name, "kind": r.kind})
            row[f"tau:{label}"], row[f"n:{label}"] = t, int(r.n)
            row[f"rank:{label}"], row[f"place:{label}"] = rank, rank / len(table)
    frame = pd.DataFrame(list(rows.values()))
    for kind in ("tau", "n", "rank", "place"):
        for label in tables:
            if f"{kind}:{label}" not in frame:
                frame[f"{kind}:{label}"] = np.nan
    places = frame[[f"place:{label}" for label in tables]]
    frame["tables"] = places.notna().sum(axis=1)
    frame["median_place"] = places.median(axis=1, skipna=True)
    frame = frame.sort_values(["median_place", "tables", "name"], ascending=[True, False, True],
                              kind="stable", na_position="last")
    columns = ["name", "kind", "tables", "median_place"] + [
        f"{kind}:{label}" for label in tables for kind in ("tau", "n", "rank")]
    return frame[columns].reset_index(drop=True)


def to_markdown(summary: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> str:
    """The summary as Markdown: a legend of the tables, then τ (rank) per table."""
    labels = list(tables)
    largest = {label: int(pd.to_numeric(t["n"], errors="coerce").max()) for label, t in
               tables.items()}
    legend = [f"- **{short_label(label)}**: `{label}.md`, {largest[label]:,} architectures, "
              f"{len(tables[label])} rows" for label in labels]
    head = ["| proxy | kind | median place | " + " | ".join(short_label(l) for l in labels) + " |",
            "|---|---|---|" + "---|" * len(labels)]
    for r in summary.to_dict("records"):
        cells = []
        for label in labels:
            if pd.isna(r[f"rank:{label}"]):  # not in this table, or no finite τ there
                cells.append("")
                continue
            n = int(r[f"n:{label}"])
            fewer = f", n {n:,}" if n < largest[label] else ""
            cells.append(f"{r[f'tau:{label}']:.3f} ({int(r[f'rank:{label}'])}/"
                         f"{len(tables[label])}{fewer})")
        kind = str(r["kind"]).replace("+", " + ")  # an aggregate's members, readable
        median = "–" if pd.isna(r["median_place"]) else f"{r['median_place']:.2f}"
        head.append(f"| `{r['name']}` | {kind} | {median} | " + " | ".join(cells) + " |")
    return ("# Every leaderboard table side by side\n\n"
            "Kendall τ against each table's accuracy, and in brackets the row's rank inside that "
            "table out of its rows (1 = best τ; the structural baselines are ranked too).  A "
            "row's place in a table is rank ÷ rows; rows are sorted by their median place over "
            "the tables that have them (0.10: in the top tenth), so a benchmark with more tables "
            "weighs more in that order.  Read a column's "
            "intervals, costs and published figures in its own table; the populations differ "
            "(legend), so compare positions, not raw τ, across columns.\n\n"
            + "\n".join(legend) + "\n\n" + "\n".join(head) + "\n")


def write_summary(folder: str | Path) -> tuple[Path, list[str]]:
    """Write ``summary.md`` and ``summary.csv`` in ``folder`` from every leaderboard table in it;
    (path of summary.md, the stems of the tables it read)."""
    from .atomic import write_csv, write_text
    folder = Path(folder)
    files = table_files(folder)
    if not files:
        raise FileNotFoundError(f"no leaderboard tables (<name>-<dataset>.csv) in {folder}")
    tables = {p.stem: pd.read_csv(p) for p in files}
    summary = summarize(tables)
    write_csv(summary, folder / "summary.csv", index=False)
    return write_text(folder / "summary.md", to_markdown(summary, tables)), list(tables)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m zcproxy.leaderboard_summary",
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m zcproxy.leaderboard_summary results/leaderboard")
    p.add_argument("folder", nargs="?", default="results/leaderboard",
                   help="folder of leaderboard tables; summary.md/.csv are written there "
                        "(default results/leaderboard)")
    add_debug_flag(p)
    args = p.parse_args(argv)

    def body() -> int:
        path, stems = write_summary(args.folder)
        print(f"{path}: {len(stems)} tables ({', '.join(stems)})")
        return 0
    return run_command(body, prog=p.prog, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
