"""Figures for proxy evaluation: rank plots, a benchmark x proxy grid, and proxy-proxy heatmaps.

A rank plot puts the architectures on the x axis in the order the proxy would pick them
(rank 1 = the architecture the proxy likes best, i.e. highest score, or lowest for a
lower-is-better proxy) and their trained accuracy on the y axis.  A useful proxy therefore
shows accuracy *falling* from left to right, with the best architectures packed at the left.

Figures are built on :class:`matplotlib.figure.Figure` objects, which render through the Agg
canvas when saved; nothing here imports pyplot, switches the global backend or touches
rcParams, so importing this module (or calling it from a notebook with another backend) has no
side effects.  Library functions never print or read ``sys.argv``; the command line lives in
:func:`main` (``python -m zcproxy.plot --help``).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats as _sps

from zcproxy.atomic import save_figure
from zcproxy.cli import add_debug_flag, run_command
from zcproxy.stats import kendall_tau, pairwise_rank_correlation, spearman_rho

__all__ = ["rank_plot", "rank_grid", "correlation_heatmap", "write_figures", "proxy_columns",
           "default_orientation", "main"]

# Above this many points a scatter is an opaque blob; switch to a log-density hexbin.
HEXBIN_THRESHOLD = 5000

# Columns of a score CSV that describe the architecture rather than score it.
# ("errors" holds failure messages; read back from CSV it is an all-NaN float column.)
META_COLUMNS = ("index", "arch", "accuracy", "params", "flops", "errors", "Unnamed: 0")
TIMING_PREFIX = "seconds_"


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Figure, out_path: str | os.PathLike, dpi: int) -> Path:
    return save_figure(fig, out_path, dpi=dpi)  # whole or not at all (see zcproxy.atomic)


def _numeric(df: pd.DataFrame, column: str) -> np.ndarray:
    if column not in df.columns:
        raise KeyError(f"column {column!r} not in the table; columns are {list(df.columns)}")
    return pd.to_numeric(df[column], errors="raise").to_numpy(dtype=float)


def rank_plot(df: pd.DataFrame, proxy: str, target: str = "accuracy", ax: Axes | None = None,
              title: str | None = None, higher_is_better: bool = True, kind: str = "auto",
              colorbar: bool | None = None) -> Axes:
    """Accuracy against proxy rank (1 = the proxy's favourite), annotated with tau and rho.

    ``kind`` is ``"scatter"``, ``"hexbin"`` (log-density, for tens of thousands of points) or
    ``"auto"`` (hexbin above :data:`HEXBIN_THRESHOLD` points).  Ties in the score share their
    average rank, so a proxy that cannot tell architectures apart shows up as vertical stripes.
    Pairs with a non-finite score or accuracy are left out and their number is printed in the
    annotation.  Returns the axes (``ax.figure`` to save it).
    """
    if kind not in ("auto", "scatter", "hexbin"):
        raise ValueError(f"kind must be 'auto', 'scatter' or 'hexbin', got {kind!r}")
    score = _numeric(df, proxy) * (1.0 if higher_is_better else -1.0)
    acc = _numeric(df, target)
    if ax is None:
        ax = _new_figure(4.5, 3.6).add_subplot()
        colorbar = True if colorbar is None else colorbar
    keep = np.isfinite(score) & np.isfinite(acc)
    n, dropped = int(keep.sum()), int((~keep).sum())
    ax.set_title(proxy if title is None else title, fontsize=10)
    ax.set_xlabel(f"rank by {proxy} (1 = {'highest' if higher_is_better else 'lowest'} score)",
                  fontsize=8)
    ax.set_ylabel(target, fontsize=8)
    ax.tick_params(labelsize=7)
    if n == 0:
        ax.text(0.5, 0.5, f"no finite {proxy} scores\n({dropped} dropped)", transform=ax.transAxes,
                ha="center", va="center", fontsize=9, color="0.3")
        return ax
    rank = _sps.rankdata(-score[keep], method="average")
    y = acc[keep]
    if kind == "hexbin" or (kind == "auto" and n > HEXBIN_THRESHOLD):
        mesh = ax.hexbin(rank, y, gridsize=60, bins="log", mincnt=1, cmap="viridis", linewidths=0)
        if colorbar:
            ax.figure.colorbar(mesh, ax=ax, label="architectures (log)")
    else:
        alpha = float(np.clip(500.0 / n, 0.15, 0.8))
        size = float(np.clip(3000.0 / n, 4.0, 20.0))
        ax.scatter(rank, y, s=size, alpha=alpha, linewidths=0, color="tab:blue", rasterized=n > 1000)
    ax.set_xlim(0, n + 1)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    tau, rho = kendall_tau(score, acc).value, spearman_rho(score, acc).value
    lines = [f"τ = {tau:.3f}", f"ρ = {rho:.3f}",
             f"n = {n}" + (f" ({dropped} dropped)" if dropped else "")]
    # Lower left: for a useful proxy the good architectures sit top-left and the failures
    # bottom-right, so this corner is the one least likely to hide points.
    ax.text(0.03, 0.03, "\n".join(lines), transform=ax.transAxes, ha="left", va="bottom",
            fontsize=8,
            bbox=dict(boxstyle="round,pad=0.3", facecolor="white", alpha=0.8, edgecolor="0.7"))
    return ax


def rank_grid(frames: Mapping[str, pd.DataFrame], proxies: Sequence[str],
              out_path: str | os.PathLike, target: str = "accuracy",
              higher_is_better: Mapping[str, bool] | None = None, kind: str = "auto",
              dpi: int = 120) -> Path:
    """One rank plot per benchmark (rows) x proxy (columns), saved to ``out_path``.

    A single benchmark's panels wrap into rows of at most 4, so wide proxy lists stay legible.
    A proxy missing from a benchmark's table gets a labelled empty panel rather than an error,
    because proxies that do not apply to a search space are routine.
    """
    if not frames:
        raise ValueError("rank_grid needs at least one benchmark table")
    if not proxies:
        raise ValueError("rank_grid needs at least one proxy")
    orientation = dict(higher_is_better or {})
    panels = [(bench, df, proxy) for bench, df in frames.items() for proxy in proxies]
    ncol = len(proxies) if len(frames) > 1 else min(4, len(proxies))
    nrow = -(-len(panels) // ncol)
    fig = _new_figure(3.2 * ncol, 2.8 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, (bench, df, proxy) in zip(axes, panels):
        panel = f"{bench} · {proxy}" if bench else proxy
        if proxy not in df.columns:
            ax.set_title(panel, fontsize=10)
            ax.text(0.5, 0.5, "not computed", transform=ax.transAxes, ha="center",
                    va="center", color="0.4")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        rank_plot(df, proxy, target=target, ax=ax, title=panel,
                  higher_is_better=orientation.get(proxy, True), kind=kind, colorbar=False)
    return _save(fig, out_path, dpi)


def correlation_heatmap(matrix: pd.DataFrame, out_path: str | os.PathLike,
                        title: str | None = None, dpi: int = 120) -> Path:
    """Annotated heatmap of a square correlation matrix (e.g. proxy vs proxy), range [-1, 1]."""
    import seaborn as sns  # heavy import, only needed here

    if matrix.shape[0] != matrix.shape[1] or list(matrix.index) != list(matrix.columns):
        raise ValueError(f"matrix must be square with matching labels, got shape {matrix.shape}")
    if matrix.shape[0] == 0:
        raise ValueError("matrix is empty")
    k = matrix.shape[0]
    side = max(3.5, 0.55 * k + 2.0)
    fig = _new_figure(side + 0.8, side)
    ax = fig.add_subplot()
    with warnings.catch_warnings():  # seaborn 0.13 uses a colormap API matplotlib deprecates
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        sns.heatmap(matrix.astype(float), ax=ax, vmin=-1, vmax=1, center=0, cmap="vlag",
                    square=True, annot=k <= 20, fmt=".2f", annot_kws={"fontsize": 7},
                    cbar_kws={"shrink": 0.8}, linewidths=0.5, linecolor="white")
    ax.tick_params(labelsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, out_path, dpi)


def proxy_columns(df: pd.DataFrame, target: str = "accuracy",
                  exclude: Sequence[str] = ()) -> list[str]:
    """The numeric columns of a score table that are proxy scores.

    Architecture metadata (:data:`META_COLUMNS`, the target) and per-proxy timings
    (``seconds_<proxy>``) are not proxies.
    """
    skip = set(META_COLUMNS) | {target} | set(exclude)
    return [c for c in df.columns
            if c not in skip and not str(c).startswith(TIMING_PREFIX)
            and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def default_orientation(proxies: Sequence[str]) -> dict[str, bool]:
    """higher_is_better per proxy as declared in the proxy registry; True for unknown names
    (columns from elsewhere), since almost every published proxy is higher-is-better."""
    try:
        from zcproxy.registry import UnknownProxyError, get_proxy
    except ImportError:  # registry unavailable: fall back to the common convention
        return {q: True for q in proxies}
    out = {}
    for q in proxies:
        try:
            out[q] = bool(get_proxy(q).higher_is_better)
        except UnknownProxyError:
            out[q] = True
    return out


def write_figures(scores: pd.DataFrame, proxies: Sequence[str], out_dir: str | os.PathLike,
                  title: str | None = None, target: str = "accuracy",
                  higher_is_better: Mapping[str, bool] | None = None, method: str = "spearman",
                  kind: str = "auto", prefix: str = "", grid: bool = True,
                  dpi: int = 120) -> list[Path]:
    """All figures for one score table: ``<prefix>rank_<proxy>.png`` per proxy,
    ``<prefix>pairwise_<method>.png`` and (``grid=True``) ``<prefix>rank_grid.png``.

    ``higher_is_better`` defaults to :func:`default_orientation`.  In the heatmap
    lower-is-better proxies are negated (labelled ``−name``) so agreeing proxies show as
    positive.  Proxies missing from ``scores`` raise a KeyError naming them.
    """
    missing = [q for q in proxies if q not in scores.columns]
    if missing:
        raise KeyError(f"proxies {missing} not in the score table; "
                       f"columns are {list(scores.columns)}")
    if not proxies:
        raise ValueError("write_figures needs at least one proxy")
    orientation = {**default_orientation(proxies), **dict(higher_is_better or {})}
    out = Path(out_dir)
    label = f"{title} · " if title else ""
    written = []
    for proxy in proxies:
        ax = rank_plot(scores, proxy, target=target, higher_is_better=orientation[proxy],
                       kind=kind, title=f"{label}{proxy}")
        written.append(_save(ax.figure, out / f"{prefix}rank_{_safe_name(proxy)}.png", dpi))
    oriented = pd.DataFrame({(q if orientation[q] else f"−{q}"):
                             (1 if orientation[q] else -1) * _numeric(scores, q) for q in proxies})
    matrix = pairwise_rank_correlation(oriented, list(oriented.columns), method=method)
    written.append(correlation_heatmap(
        matrix, out / f"{prefix}pairwise_{method}.png", dpi=dpi,
        title=f"{label}{method} between proxies"))
    if grid:
        written.append(rank_grid({title or "": scores}, proxies,
                                 out / f"{prefix}rank_grid.png", target=target,
                                 higher_is_better=orientation, kind=kind, dpi=dpi))
    return written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zcproxy.plot",
        description="Draw rank plots and proxy-correlation heatmaps from per-architecture score "
                    "CSVs (columns: index, arch, accuracy, params, one column per proxy; "
                    "seconds_<proxy> timing columns and an errors column are ignored).",
        epilog="Writes rank_<proxy>.png per proxy, rank_grid.png and pairwise_<method>.png "
               "(lower-is-better proxies appear negated there, as −name).  With several "
               "--scores files, per-file figures are prefixed by the file's label and the grid "
               "has one row per file.  Example: python -m zcproxy.plot "
               "--scores results/correlate/nats-sss/scores.csv --out runs/nats-sss-figures")
    parser.add_argument("--scores", nargs="+", required=True, metavar="CSV",
                        help="score table(s), one row per architecture")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs")
    parser.add_argument("--labels", nargs="+", metavar="NAME",
                        help="one label per scores file (default: the name of its folder)")
    parser.add_argument("--target", default="accuracy",
                        help="column holding the trained accuracy (default: %(default)s)")
    parser.add_argument("--proxies", nargs="+", metavar="NAME",
                        help="proxy columns to plot (default: every numeric column that is not "
                             "metadata or timing; name 'params' here to plot it as a baseline)")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="NAME",
                        help="further numeric columns that are not proxies")
    parser.add_argument("--lower-is-better", nargs="+", default=[], metavar="NAME",
                        help="proxies whose best architectures have the lowest score (default: "
                             "as declared by the proxy registry; unregistered names: higher "
                             "is better)")
    parser.add_argument("--higher-is-better", nargs="+", default=[], metavar="NAME",
                        help="proxies to treat as higher-is-better whatever the registry says")
    parser.add_argument("--method", choices=("spearman", "kendall"), default="spearman",
                        help="rank correlation for the proxy-vs-proxy heatmap "
                             "(default: %(default)s)")
    parser.add_argument("--kind", choices=("auto", "scatter", "hexbin"), default="auto",
                        help=f"rank plot style; auto = hexbin above {HEXBIN_THRESHOLD} points "
                             "(default: %(default)s)")
    parser.add_argument("--dpi", type=int, default=120,
                        help="resolution of the PNGs in dots per inch (default: %(default)s)")
    add_debug_flag(parser)
    return parser


def read_score_csv(path: Path, proxies: Sequence[str] | None = None) -> pd.DataFrame:
    """A score CSV.  A correlate ``scores.csv`` (its run.json beside it) is read through
    :func:`zcproxy.analysis.read_scores`, so a table cut short, edited, or holding one of
    ``proxies`` (default: any proxy) under an older definition is refused, never plotted."""
    if path.name == "scores.csv" and (path.parent / "run.json").is_file():
        from .analysis import read_scores
        return read_scores(path.parent, proxies=proxies)
    return pd.read_csv(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.scores]
    for p in paths:
        if not p.is_file():
            parser.error(f"scores file not found: {p.resolve()}")
    labels = args.labels or [p.resolve().parent.name or p.stem for p in paths]
    if len(labels) != len(paths):
        parser.error(f"got {len(labels)} --labels for {len(paths)} --scores files")
    if len(set(labels)) != len(labels):
        parser.error(f"labels must be distinct, got {labels}; pass --labels")
    try:
        frames = {label: read_score_csv(p, args.proxies) for label, p in zip(labels, paths)}
    except (ValueError, OSError) as err:  # cut short, edited, an old definition, unreadable
        parser.error(str(err))
    for label, df in frames.items():
        if args.target not in df.columns:
            parser.error(f"{label}: no {args.target!r} column; columns are {list(df.columns)}")
    if args.proxies:
        proxies = list(args.proxies)
        missing = [q for q in proxies if not any(q in df.columns for df in frames.values())]
        if missing:
            parser.error(f"proxies not found in any scores file: {missing}")
    else:
        proxies = []
        for df in frames.values():
            proxies += [q for q in proxy_columns(df, args.target, args.exclude) if q not in proxies]
        if not proxies:
            parser.error("no proxy columns found; name them with --proxies")
    forced = {**{q: False for q in args.lower_is_better},
              **{q: True for q in args.higher_is_better}}
    unknown = set(forced) - set(proxies)
    if unknown:
        parser.error(f"--lower/--higher-is-better name unknown proxies: {sorted(unknown)}")
    if set(args.lower_is_better) & set(args.higher_is_better):
        parser.error("a proxy cannot be both --lower-is-better and --higher-is-better")
    orientation = {**default_orientation(proxies), **forced}

    return run_command(lambda: draw(args, frames, proxies, orientation), prog=parser.prog,
                       debug=args.debug)


def draw(args: argparse.Namespace, frames: dict[str, pd.DataFrame], proxies: list[str],
         orientation: dict[str, bool]) -> int:
    """Write every figure the checked arguments ask for and print their paths."""
    out = Path(args.out)
    written: list[Path] = []
    several = len(frames) > 1
    for label, df in frames.items():
        present = [q for q in proxies if q in df.columns]
        if present:
            written += write_figures(df, present, out, title=label,
                                     target=args.target, higher_is_better=orientation,
                                     method=args.method, kind=args.kind,
                                     prefix=f"{_safe_name(label)}_" if several else "",
                                     grid=not several, dpi=args.dpi)
    if several:
        written.append(rank_grid(frames, proxies, out / "rank_grid.png", target=args.target,
                                 higher_is_better=orientation, kind=args.kind, dpi=args.dpi))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
