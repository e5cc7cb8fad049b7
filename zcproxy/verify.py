"""``python -m zcproxy.verify NEW REFERENCE``: did a fresh run reproduce the committed scores?

Compares two ``correlate`` output folders architecture by architecture: the same index must
name the same architecture string in both, and each proxy's score is compared exactly (how
many of N are bit-for-bit equal), by its largest relative difference, and by the Kendall τ
between the two runs' scores (1.000 = the same ranking).  ``make reproduce`` scores a sample
afresh into ``runs/`` and ends with this verdict against ``results/correlate/<bench>/``.

Two runs with different arithmetic (one ``--exact``, one on the default fast path, as
recorded in each folder's run.json) cannot agree in the last bits; they are judged by the
fidelity gate of issue 16 instead: per proxy, the same architectures without a finite score,
Spearman ρ between the runs ≥ 0.9999, and Kendall τ against the accuracy equal at three
decimals.  The verdict then reads "reproduced in rank".

Each folder's ``scores.csv`` is read through :func:`zcproxy.analysis.read_scores`, so a table
cut short or edited since its run, or holding a compared proxy under another definition than
the current one, is refused rather than compared; so are two folders whose run.json names
different benchmarks or datasets.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .analysis import read_scores, run_record
from .cli import add_debug_flag, run_command
from .stats import kendall_tau, spearman_rho

# The fidelity gate between the exact and the fast path (issue 16).
GATE_SPEARMAN = 0.9999

NOT_PROXIES = {"index", "arch", "accuracy", "params", "flops", "errors"}


@dataclass(frozen=True)
class ProxyComparison:
    """One proxy's scores in two runs, over the architectures both scored."""

    proxy: str
    n: int                 # architectures with a value in at least one run (not NaN in both)
    equal: int             # of them, bit-for-bit equal (-inf = -inf)
    within: int            # of them, equal within the relative tolerance
    max_relative: float    # largest |new - ref| / |ref| over finite pairs (0 if all equal)
    kendall: float         # Kendall τ between the two runs' scores (finite pairs)
    spearman: float = math.nan          # Spearman ρ between the two runs' scores
    same_nonfinite: bool = True         # NaN / ±inf at the same architectures in both
    accuracy_tau: tuple[float, float] = (math.nan, math.nan)  # τ vs accuracy: new, reference

    @property
    def rank_faithful(self) -> bool:
        """Within the fidelity gate: ranks and the reported τ unchanged."""
        new, ref = self.accuracy_tau
        tau_same = (math.isnan(new) and math.isnan(ref)) or round(new, 3) == round(ref, 3)
        return (self.same_nonfinite and tau_same
                and (self.spearman >= GATE_SPEARMAN or self.equal == self.n))


@dataclass(frozen=True)
class Comparison:
    """Two runs side by side: what they share, and how each shared proxy compares."""

    new: str
    reference: str
    common: int                      # architectures in both runs
    only_new: int                    # scored by the new run, absent from the reference
    arch_mismatches: list[int] = field(default_factory=list)  # indices naming other archs
    proxies: list[ProxyComparison] = field(default_factory=list)
    rtol: float = 1e-5
    arithmetic: tuple[str, str] = ("exact", "exact")  # of the new run, of the reference

    @property
    def reproduced(self) -> bool:
        """Every shared score equal within ``rtol``, on the same architectures."""
        return (self.common > 0 and not self.arch_mismatches and bool(self.proxies)
                and all(p.within == p.n for p in self.proxies))

    @property
    def reproduced_in_rank(self) -> bool:
        """Runs of different arithmetic: every shared proxy within the fidelity gate."""
        return (self.arithmetic[0] != self.arithmetic[1] and self.common > 0
                and not self.arch_mismatches and bool(self.proxies)
                and all(p.rank_faithful for p in self.proxies))

    @property
    def passed(self) -> bool:
        return self.reproduced or self.reproduced_in_rank

    def summary(self) -> str:
        """The verdict as printed by the command line: a table, then one line."""
        lines = [f"{self.new} vs {self.reference}: {self.common:,} architectures in common"
                 f" ({self.only_new:,} only in {self.new})"]
        if self.arch_mismatches:
            lines.append(f"  {len(self.arch_mismatches):,} indices name other architectures "
                         f"(e.g. {self.arch_mismatches[0]}): the runs used different data")
        if self.proxies:
            width = max(12, *(len(p.proxy) for p in self.proxies))
            lines.append(f"  {'proxy':{width}s} {'equal':>13s} {'max rel diff':>13s} "
                         f"{'Kendall tau':>12s} {'Spearman':>9s} {'tau vs acc (new|ref)':>21s}")
            for p in self.proxies:
                acc = "{:.3f} | {:.3f}".format(*p.accuracy_tau)
                lines.append(f"  {p.proxy:{width}s} {f'{p.equal:,}/{p.n:,}':>13s} "
                             f"{p.max_relative:13.3g} {p.kendall:12.4f} {p.spearman:9.6f} "
                             f"{acc:>21s}")
        n = sum(p.n for p in self.proxies)
        equal = sum(p.equal for p in self.proxies)
        worst = max((p.max_relative for p in self.proxies), default=float("nan"))
        if not self.proxies or self.common == 0:
            verdict = "nothing to compare (no shared proxy or architecture): NOT reproduced"
        else:
            if self.reproduced:
                outcome = "reproduced"
            elif self.reproduced_in_rank:
                outcome = (f"reproduced in rank ({self.arithmetic[0]} vs {self.arithmetic[1]} "
                           f"arithmetic: Spearman >= {GATE_SPEARMAN} and every tau vs accuracy "
                           "equal at three decimals)")
            elif self.arithmetic[0] != self.arithmetic[1]:
                outcome = "NOT reproduced (outside the fidelity gate)"
            else:
                outcome = f"NOT reproduced (tolerance {self.rtol:g})"
            verdict = (f"{equal:,} of {n:,} scores equal, max relative difference {worst:.3g}: "
                       + outcome)
        lines.append("verdict: " + verdict)
        return "\n".join(lines)


def compare_scores(new: pd.DataFrame, reference: pd.DataFrame, *,
                   proxies: Sequence[str] | None = None, rtol: float = 1e-5,
                   names: tuple[str, str] = ("new", "reference"),
                   arithmetic: tuple[str, str] = ("exact", "exact")) -> Comparison:
    """Compare two ``scores.csv`` tables (one row per architecture, one column per proxy).

    ``proxies`` defaults to every proxy column both tables have (``seconds_*`` columns are
    timings, not scores, and are skipped).
    """
    for frame, name in ((new, names[0]), (reference, names[1])):
        if "index" not in frame or frame["index"].duplicated().any():
            raise ValueError(f"{name}: a score table needs one row per architecture 'index'")
    a = new.set_index("index")
    b = reference.set_index("index")
    common = a.index.intersection(b.index)
    mismatches: list[int] = []
    if "arch" in a and "arch" in b:
        differs = a.loc[common, "arch"].astype(str) != b.loc[common, "arch"].astype(str)
        mismatches = [int(i) for i in common[differs.to_numpy()]]
    if proxies is None:
        proxies = [c for c in a.columns if c in b.columns and c not in NOT_PROXIES
                   and not c.startswith("seconds_")]
    missing = [p for p in proxies if p not in a.columns or p not in b.columns]
    if missing:
        raise ValueError(f"proxy column(s) {missing} are not in both tables")
    same = common.difference(pd.Index(mismatches))
    accuracy = (a.loc[same, "accuracy"].to_numpy(float), b.loc[same, "accuracy"].to_numpy(float)
                ) if "accuracy" in a and "accuracy" in b else None
    results = [_compare_proxy(p, a.loc[same, p].to_numpy(float), b.loc[same, p].to_numpy(float),
                              rtol, accuracy) for p in proxies]
    return Comparison(names[0], names[1], len(common), len(a.index.difference(b.index)),
                      mismatches, results, rtol, arithmetic)


def _compare_proxy(proxy: str, x: np.ndarray, y: np.ndarray, rtol: float,
                   accuracy: tuple[np.ndarray, np.ndarray] | None = None) -> ProxyComparison:
    # NaN in both tables is "no score" in both (never scored, or undefined in both): it is
    # left out of n and of the equal count alike; same_nonfinite checks where NaNs fall.
    present = ~(np.isnan(x) & np.isnan(y))
    x, y = x[present], y[present]
    if accuracy is not None:
        accuracy = (accuracy[0][present], accuracy[1][present])
    equal = x == y
    finite = np.isfinite(x) & np.isfinite(y)
    scale = np.maximum(np.abs(y), np.finfo(float).tiny)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where not finite: unused
        relative = np.where(finite, np.abs(x - y) / scale, np.where(equal, 0.0, np.inf))
    within = equal | (finite & (relative <= rtol))
    worst = float(relative.max()) if len(relative) else 0.0
    tau = kendall_tau(x[finite], y[finite]).value if finite.sum() > 1 else math.nan
    rho = spearman_rho(x[finite], y[finite]).value if finite.sum() > 1 else math.nan
    same_nonfinite = bool(np.array_equal(np.isfinite(x), np.isfinite(y))
                          and np.array_equal(x[~finite], y[~finite], equal_nan=True))
    acc_tau = (math.nan, math.nan) if accuracy is None else tuple(
        float(kendall_tau(v, acc).value) for v, acc in ((x, accuracy[0]), (y, accuracy[1])))
    return ProxyComparison(proxy, len(x), int(equal.sum()), int(within.sum()),
                           worst, float(tau), float(rho), same_nonfinite, acc_tau)


def compare_runs(new: str | os.PathLike, reference: str | os.PathLike, *,
                 proxies: Sequence[str] | None = None, rtol: float = 1e-5) -> Comparison:
    """Compare the ``scores.csv`` of two correlate output folders (see :func:`compare_scores`).

    Folders of two benchmarks, or of one benchmark's networks for two datasets, are refused
    before any score is read: their indices name other architectures or their networks have
    other heads, and a verdict of "NOT reproduced" would hide why."""
    records = [run_record(folder) or {} for folder in (new, reference)]
    for key, what in (("bench", "benchmarks"), ("dataset", "datasets")):
        mine, theirs = (record.get(key) for record in records)
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(f"{new} is a {mine} run and {reference} a {theirs} run: runs of "
                             f"different {what} cannot reproduce each other")
    return compare_scores(read_scores(new, proxies=proxies),
                          read_scores(reference, proxies=proxies), proxies=proxies, rtol=rtol,
                          names=(str(new), str(reference)),
                          # the arithmetic each run recorded ("exact" before runs recorded it)
                          arithmetic=tuple(r.get("arithmetic", "exact") for r in records))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zcproxy.verify", description=__doc__.split("\n\n")[0] + "\n\n"
        + __doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m zcproxy.verify runs/nats-sss-sample1000-seed0 "
               "results/correlate/nats-sss\nexit status: 0 reproduced (exactly, or in rank "
               "for runs of different arithmetic), 1 not, 2 a usage error")
    p.add_argument("new", help="folder of the fresh run (holds scores.csv)")
    p.add_argument("reference", help="folder to compare with, e.g. results/correlate/nats-sss")
    p.add_argument("--proxies", default=None,
                   help="comma-separated proxies to compare (default: every one both have)")
    p.add_argument("--rtol", type=float, default=1e-5,
                   help="relative difference still counted as reproduced (default 1e-5; "
                        "bit-for-bit equality is reported beside it)")
    add_debug_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if not args.rtol >= 0:
            raise ValueError(f"--rtol {args.rtol} must be at least 0")
        proxies = None
        if args.proxies is not None:
            proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
            if not proxies:
                raise ValueError(f"--proxies {args.proxies!r} names no proxy")
        result = compare_runs(Path(args.new), Path(args.reference), proxies=proxies,
                              rtol=args.rtol)
        print(result.summary())
        return 0 if result.passed else 1
    return run_command(body, prog="verify", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
