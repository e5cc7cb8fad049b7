"""Many seeds of many guides on one benchmark: per-run CSV, summary table, figure.

``run_study`` writes into its folder (``results/bench-search/<bench>/`` by convention):

``study.json``         the settings (a resumed study must use the same) and the score sources
``runs.csv``           one row per (strategy, guide, seed, budget): evaluations, distinct
                       architectures, wall / CPU / score seconds, the architecture found and its
                       accuracy on every dataset, and the mean and best (oracle) accuracy of what
                       the run evaluated
``trajectories.csv``   the incumbent's index after each checkpoint of every run
``summary.csv/.md``    mean ± std per method, budget and dataset, with the references
``comparisons.csv``    every method against the n_params guide at equal evaluations (Welch 95 %)
``accuracy_vs_evaluations.png``

Runs are appended as they finish, so an interrupted study continues where it stopped when run
again with the same settings.  Budgets below the run length are read from each run's first
evaluations (a k-evaluation run is exactly the first k evaluations of a longer one).
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ...atomic import write_csv, write_text
from .engine import BenchSearchConfig, Guide, accuracy_columns, checkpoints, search_benchmark

BASELINE = "n_params"


@dataclass(frozen=True)
class Method:
    """A (strategy, guide) pair of a study."""

    strategy: str
    guide: Guide

    @property
    def key(self) -> tuple[str, str]:
        return self.strategy, self.guide.label

    @classmethod
    def parse(cls, text: str, combine_rule: str | None = None, strategy: str = "rea") -> "Method":
        """``[random@]GUIDE``; GUIDE as in :meth:`Guide.parse`; ``none`` means random search."""
        if "@" in text:
            strategy, text = text.split("@", 1)
        guide = Guide.parse(text, combine_rule)
        if not guide.proxies:
            strategy = "random"
        return cls(strategy, guide)


def method_label(strategy: str, guide: str) -> str:
    if strategy == "random" and guide == "none":
        return "random search"
    if strategy == "random":
        return f"random sampling, best by {guide}"
    return f"REA · {guide}"


@dataclass
class StudySpec:
    bench: str
    methods: list[Method]
    repeats: int = 30
    evaluations: int = 1000
    budgets: tuple[int, ...] = (100, 1000)
    population: int = 25
    tournament: int = 5
    mutations: int = 1
    first_seed: int = 0
    # The dataset whose networks the guiding scores were computed on (NATS: the head and input
    # size differ per dataset), so a study of the CIFAR-100 networks never resumes one of the
    # CIFAR-10 networks.
    networks: str = "cifar10"

    def __post_init__(self) -> None:
        self.budgets = tuple(sorted({int(b) for b in self.budgets} | {int(self.evaluations)}))
        if self.budgets[0] < 1 or self.budgets[-1] != self.evaluations:
            raise ValueError(f"budgets {self.budgets} must lie in 1..{self.evaluations}")
        keys = [m.key for m in self.methods]
        if len(set(keys)) != len(keys):
            raise ValueError("a method is listed twice")

    def config(self, method: Method, seed: int) -> BenchSearchConfig:
        return BenchSearchConfig(self.bench, method.guide, method.strategy, self.evaluations,
                                 None, seed, self.population, self.tournament, self.mutations)

    def record(self) -> dict:
        return {"bench": self.bench, "methods": [f"{m.strategy}@{m.guide.label}" for m in
                                                  self.methods],
                "repeats": self.repeats, "evaluations": self.evaluations,
                "budgets": list(self.budgets), "population": self.population,
                "tournament": self.tournament, "mutations": self.mutations,
                "first_seed": self.first_seed, "networks": self.networks}


# Settings a study.json written before the setting existed implicitly had (StudySpec's default).
RECORD_DEFAULTS = {"networks": StudySpec.networks}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Appender:
    """Append-only CSV with a fixed header (a torn last line is dropped on reading)."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path, self.columns = path, list(columns)
        fresh = not path.exists() or path.stat().st_size == 0
        if not fresh:
            data = path.read_bytes()
            if not data.endswith(b"\n"):
                with open(path, "r+b") as fh:
                    fh.truncate(data.rfind(b"\n") + 1)
            with open(path, encoding="utf-8") as fh:
                header = fh.readline().rstrip("\r\n").split(",")
            if header != self.columns:
                raise ValueError(f"{path} has columns {header}, this study writes "
                                 f"{self.columns}; use another --out folder")
        self.fh = open(path, "a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.fh)
        if fresh:
            self.writer.writerow(self.columns)
            self.fh.flush()

    def append(self, rows: list[dict]) -> None:
        for row in rows:
            self.writer.writerow([_cell(row.get(c)) for c in self.columns])
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def run_study(spec: StudySpec, bench, scores: Callable, out_dir: str | os.PathLike, *,
              allowed: Sequence[int] | np.ndarray | None = None, sources: dict | None = None,
              progress: bool = True) -> pd.DataFrame:
    """Run every method for ``spec.repeats`` seeds (skipping runs already in ``out_dir``),
    then write the summary, comparisons and figure; returns the per-run table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from ...registry import proxy_versions
    # The definition of each guiding proxy: a study resumed after one changed would compare
    # seeds guided by two definitions under one name.
    versions = proxy_versions(sorted({p for m in spec.methods for p in m.guide.proxies}))
    settings = {**spec.record(), "sources": sources or {}, "proxy_versions": versions}
    record_path = out / "study.json"
    if record_path.exists():
        old = json.loads(record_path.read_text())
        clash = {k: (old.get(k), v) for k, v in settings.items()
                 if k not in ("sources", "cost", "methods", "proxy_versions")
                 and old.get(k, RECORD_DEFAULTS.get(k)) != v}
        if clash:
            differences = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in clash.items())
            raise ValueError(f"{out} holds a study with other settings ({differences}); use "
                             "another --out folder")
        then = old.get("proxy_versions") or {}  # a study.json from before: nothing to compare
        changed = [f"{p} version {then[p]} there, {v} now" for p, v in versions.items()
                   if p in then and str(then[p]) != v]
        if changed:
            raise ValueError(f"{out} holds runs guided by other definitions of their proxies "
                             f"({'; '.join(changed)}); use another --out folder")
        settings["proxy_versions"] = {**then, **versions}
        fingerprint = settings["sources"].get("fingerprint")
        if old.get("sources", {}).get("fingerprint") not in (None, fingerprint):
            raise ValueError(f"{out} was computed from other score tables "
                             f"({old['sources'].get('tables')}); use another --out folder")
        settings["methods"] = list(dict.fromkeys(old.get("methods", []) + settings["methods"]))
        settings["cost"] = old.get("cost", {})
    columns = accuracy_columns(bench)
    datasets = list(columns)
    arches = bench.table(datasets[0])["arch"].to_numpy()
    run_columns = (["bench", "strategy", "guide", "seed", "budget", "evaluations", "distinct",
                    "wall_s", "cpu_s", "score_s", "space", "restricted", "index", "arch"]
                   + [f"acc_{d}" for d in datasets] + [f"sample_mean_{d}" for d in datasets]
                   + [f"oracle_{d}" for d in datasets])
    runs_path, traj_path = out / "runs.csv", out / "trajectories.csv"
    done = set()
    if runs_path.exists() and runs_path.stat().st_size:
        previous = _read_appended(runs_path)
        done = set(zip(previous["strategy"], previous["guide"], previous["seed"].astype(int)))
    traj = _Appender(traj_path, ["strategy", "guide", "seed", "k", "index"])
    runs = _Appender(runs_path, run_columns)
    grid = checkpoints(spec.evaluations, spec.budgets)
    cost = settings.setdefault("cost", {})
    wall0, cpu0 = time.perf_counter(), time.process_time()
    write_text(record_path, json.dumps(settings, indent=2) + "\n")
    try:
        total = len(spec.methods) * spec.repeats
        count = 0
        for method in spec.methods:
            started = time.perf_counter()
            for seed in range(spec.first_seed, spec.first_seed + spec.repeats):
                count += 1
                if (method.strategy, method.guide.label, seed) in done:
                    continue
                run = search_benchmark(spec.config(method, seed), bench, scores, allowed)
                incumbents = run.incumbents(grid)
                traj.append([{"strategy": method.strategy, "guide": method.guide.label,
                              "seed": seed, "k": k, "index": i}
                             for k, i in zip(grid, incumbents) if k <= run.evaluations])
                runs.append([_run_row(spec, method, seed, run, budget, grid, incumbents,
                                      columns, arches) for budget in spec.budgets])
            if progress:
                _say(f"  [{count}/{total}] {method_label(*method.key)}: {spec.repeats} seeds "
                     f"in {time.perf_counter() - started:.1f} s")
    finally:
        traj.close()
        runs.close()
        cost["study_wall_s"] = cost.get("study_wall_s", 0.0) + time.perf_counter() - wall0
        cost["study_cpu_s"] = cost.get("study_cpu_s", 0.0) + time.process_time() - cpu0
        write_text(record_path, json.dumps(settings, indent=2) + "\n")
    table = _read_appended(runs_path)
    write_reports(out, table, bench, spec, allowed=allowed)
    return table


def _run_row(spec: StudySpec, method: Method, seed: int, run, budget: int, grid: list[int],
             incumbents: list, columns: dict, arches: np.ndarray) -> dict:
    k = min(budget, run.evaluations)
    index = incumbents[grid.index(budget)] if budget in grid else run.chosen(k)
    visited = sorted(set(run.indices[:k]))
    row = {"bench": spec.bench, "strategy": method.strategy, "guide": method.guide.label,
           "seed": seed, "budget": budget, "evaluations": k, "distinct": len(visited),
           "wall_s": round(run.wall_seconds(k), 6), "cpu_s": round(run.cpu_seconds(k), 6),
           "score_s": round(run.score_seconds(k), 6), "space": run.space,
           "restricted": run.restricted, "index": index,
           "arch": None if index is None else str(arches[index])}
    for ds, acc in columns.items():
        row[f"acc_{ds}"] = math.nan if index is None else float(acc[index])
        row[f"sample_mean_{ds}"] = float(np.mean(acc[visited]))
        row[f"oracle_{ds}"] = float(np.max(acc[visited]))
    return row


def _read_appended(path: Path) -> pd.DataFrame:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
    import io
    frame = pd.read_csv(io.BytesIO(data))
    keys = [c for c in ("strategy", "guide", "seed", "budget", "k") if c in frame]
    return frame.drop_duplicates(keys, keep="last").reset_index(drop=True)


# ---- reports ------------------------------------------------------------------------------------
def summarize(table: pd.DataFrame, datasets: Sequence[str]) -> pd.DataFrame:
    """Mean ± std per (strategy, guide, budget) and dataset; random search gets two rows, the
    mean accuracy of what it sampled and the best of it by accuracy (an oracle)."""
    rows = []
    for (strategy, guide, budget), runs in table.groupby(["strategy", "guide", "budget"],
                                                          sort=False):
        base = {"strategy": strategy, "guide": guide, "budget": int(budget), "runs": len(runs),
                "evaluations": runs["evaluations"].mean(), "distinct": runs["distinct"].mean(),
                "wall_s": runs["wall_s"].mean(), "cpu_s": runs["cpu_s"].mean(),
                "score_s": runs["score_s"].mean()}
        if guide == "none":
            variants = [("random search: mean of the sampled architectures", "sample_mean_"),
                        ("random search: best sampled by accuracy (oracle)", "oracle_")]
        else:
            variants = [(method_label(strategy, guide), "acc_")]
        for label, prefix in variants:
            row = {"method": label, **base}
            for ds in datasets:
                values = runs[f"{prefix}{ds}"].astype(float)
                row[f"{ds}_mean"], row[f"{ds}_std"] = values.mean(), values.std(ddof=1)
            rows.append(row)
    return pd.DataFrame(rows)


def welch_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean(a) - mean(b), lower, upper): Welch's t interval for the difference of means."""
    from scipy import stats
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    diff = a.mean() - b.mean()
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, dof) * se
    return diff, diff - half, diff + half


def comparisons(table: pd.DataFrame, datasets: Sequence[str],
                baseline: tuple[str, str] = ("rea", BASELINE)) -> pd.DataFrame:
    """Every guided method minus the baseline guide, per budget and dataset (Welch 95 %)."""
    rows = []
    for budget, at in table.groupby("budget"):
        ref = at[(at["strategy"] == baseline[0]) & (at["guide"] == baseline[1])]
        if ref.empty:
            continue
        for (strategy, guide), runs in at.groupby(["strategy", "guide"], sort=False):
            if guide == "none" or (strategy, guide) == baseline:
                continue
            for ds in datasets:
                diff, lo, hi = welch_interval(runs[f"acc_{ds}"], ref[f"acc_{ds}"])
                rows.append({"budget": int(budget), "method": method_label(strategy, guide),
                             "strategy": strategy, "guide": guide, "kind": guide_kind(guide),
                             "dataset": ds,
                             "mean": runs[f"acc_{ds}"].mean(),
                             "baseline_mean": ref[f"acc_{ds}"].mean(),
                             "difference": diff, "ci_low": lo, "ci_high": hi,
                             "better": lo > 0, "worse": hi < 0})
    return pd.DataFrame(rows)


def guide_kind(label: str) -> str:
    """``"baseline"`` if every member of a guide is a structural baseline, else ``"proxy"``."""
    from ...registry import available_proxies, get_proxy
    names = label[label.index("(") + 1:-1].split("+") if "(" in label else [label]
    known = set(available_proxies())
    return "baseline" if all(n in known and get_proxy(n).baseline for n in names) else "proxy"


def references(bench, allowed: Sequence[int] | np.ndarray | None) -> pd.DataFrame:
    """The benchmark's optimum per dataset (and the sample's, for a restricted study)."""
    columns = accuracy_columns(bench)
    rows = [{"method": "optimum of the benchmark",
             **{f"{ds}_mean": float(np.nanmax(acc)) for ds, acc in columns.items()}}]
    if allowed is not None and len(allowed) < len(bench):
        idx = np.asarray(allowed, dtype=np.int64)
        rows.append({"method": f"optimum of the {len(idx):,}-architecture sample searched",
                     **{f"{ds}_mean": float(np.nanmax(acc[idx])) for ds, acc in columns.items()}})
    return pd.DataFrame(rows)


DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
                  "ImageNet16-120": "ImageNet16-120"}


def markdown_summary(summary: pd.DataFrame, refs: pd.DataFrame, datasets: Sequence[str],
                     bench_note: str = "", sort_by: str | None = None) -> str:
    """One table per budget: method, accuracy mean ± std per dataset, cost columns; rows best
    first by ``sort_by`` (default: the first dataset)."""
    sort_by = sort_by or datasets[0]
    lines = []
    for budget, rows in summary.groupby("budget", sort=True):
        lines.append(f"### {int(budget):,} evaluations\n")
        head = (["method", "runs"] + [DATASET_LABELS.get(d, d) for d in datasets]
                + ["distinct", "score s", "wall s", "CPU s"])
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        order = rows.assign(_kind=rows["method"].map(_method_order)).sort_values(
            ["_kind", f"{sort_by}_mean"], ascending=[True, False], kind="stable")
        for _, r in order.iterrows():
            cells = [r["method"], f"{int(r['runs'])}"]
            cells += [f"{r[f'{d}_mean']:.2f} ± {r[f'{d}_std']:.2f}" for d in datasets]
            cells += [f"{r['distinct']:.0f}", f"{r['score_s']:.1f}", f"{r['wall_s']:.2f}",
                      f"{r['cpu_s']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        for _, r in refs.iterrows():
            cells = [r["method"], ""] + [f"{r[f'{d}_mean']:.2f}" for d in datasets] + [""] * 4
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if bench_note:
        lines.insert(0, bench_note + "\n")
    return "\n".join(lines)


def _method_order(label: str) -> int:
    if label.startswith("REA"):
        return 0
    if label.startswith("random sampling"):
        return 1
    return 2


def write_reports(out: Path, table: pd.DataFrame, bench, spec: StudySpec,
                  allowed: Sequence[int] | np.ndarray | None = None) -> pd.DataFrame:
    datasets = list(bench.datasets)
    summary = summarize(table, datasets)
    refs = references(bench, allowed)
    write_csv(pd.concat([summary, refs], ignore_index=True), out / "summary.csv", index=False)
    comp = comparisons(table, datasets)
    write_csv(comp, out / "comparisons.csv", index=False)
    restricted = bool(table["restricted"].astype(str).str.lower().eq("true").any())
    note = (f"**Restricted search**: the score tables cover {int(table['space'].iloc[0]):,} of "
            f"{len(bench):,} architectures; every search moved inside that sample only."
            if restricted else "")
    accuracy_note = getattr(bench, "accuracy_split", "")
    sort_by = spec.networks if spec.networks in datasets else datasets[0]
    head = (f"# {spec.bench}: training-free search, {spec.repeats} seeds\n\n"
            f"Accuracy: {accuracy_note or 'test'} split (mean ± std over seeds) of the "
            "architecture each search returns. Guided by the scores of the "
            f"{spec.networks} networks; rows best first on {sort_by}.\n\n")
    write_text(out / "summary.md", head + markdown_summary(summary, refs, datasets, note,
                                                           sort_by=sort_by) + "\n")
    try:
        plot_study(out, bench, spec)
    except Exception as err:  # noqa: BLE001 -- the tables are written; a plot must not hide them
        _say(f"accuracy_vs_evaluations.png not written: {type(err).__name__}: {err}")
    return summary


def curves(traj: pd.DataFrame, bench) -> pd.DataFrame:
    """Mean and std over seeds of the incumbent's accuracy at every checkpoint."""
    columns = accuracy_columns(bench)
    frame = traj.dropna(subset=["index"]).copy()
    idx = frame["index"].astype(np.int64).to_numpy()
    for ds, acc in columns.items():
        frame[ds] = acc[idx]
    long = frame.melt(id_vars=["strategy", "guide", "seed", "k"], value_vars=list(columns),
                      var_name="dataset", value_name="accuracy")
    return (long.groupby(["strategy", "guide", "dataset", "k"])["accuracy"]
            .agg(["mean", "std", "count"]).reset_index())


def plot_study(out: Path, bench, spec: StudySpec) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ...atomic import save_figure

    traj = _read_appended(out / "trajectories.csv")
    curve = curves(traj, bench)
    write_csv(curve, out / "curves.csv", index=False)
    runs = _read_appended(out / "runs.csv")
    datasets = list(bench.datasets)
    columns = accuracy_columns(bench)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.6), squeeze=False)
    methods = [k for k in dict.fromkeys(zip(curve["strategy"], curve["guide"]))]
    colours = plt.get_cmap("tab20")
    for col, ds in enumerate(datasets):
        ax = axes[0, col]
        for m, (strategy, guide) in enumerate(methods):
            c = curve[(curve["strategy"] == strategy) & (curve["guide"] == guide)
                      & (curve["dataset"] == ds)].sort_values("k")
            if c.empty:
                continue
            style = "-" if strategy == "rea" else "--"
            ax.plot(c["k"], c["mean"], style, color=colours(m % 20), lw=1.4,
                    label=method_label(strategy, guide))
        rnd = runs[runs["guide"] == "none"]
        for prefix, style, label in (("sample_mean_", ":", "random search: mean sampled"),
                                     ("oracle_", "-.", "random search: oracle")):
            if rnd.empty:
                continue
            level = rnd.groupby("budget")[f"{prefix}{ds}"].mean()
            ax.plot(level.index, level.values, style, color="k", lw=1, marker="o", ms=3,
                    label=label)
        ax.axhline(float(np.nanmax(columns[ds])), color="k", lw=0.8, alpha=0.5,
                   label="optimum")
        ax.set_xscale("log")
        ax.set_xlabel("evaluations")
        ax.set_ylabel(f"{DATASET_LABELS.get(ds, ds)} accuracy of the incumbent (%)")
        low = np.nanpercentile(curve.loc[(curve["dataset"] == ds) & (curve["k"] >= 10), "mean"],
                               2) if (curve["k"] >= 10).any() else None
        if low is not None and np.isfinite(low):
            ax.set_ylim(bottom=low - 1)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"{spec.bench}: mean over {spec.repeats} seeds of the incumbent's accuracy")
    fig.tight_layout()
    path = out / "accuracy_vs_evaluations.png"
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["Method", "StudySpec", "run_study", "summarize", "comparisons", "references",
           "welch_interval", "markdown_summary", "write_reports", "plot_study", "curves",
           "method_label"]
