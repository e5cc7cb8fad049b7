"""``trajectory.png``: how each phase's guiding score improved over the search clock.

One panel per proxy (Entropic Score, LogSynflow), because their scales have nothing in common;
a phase is drawn in the panel of each proxy it is guided by (both for the combined score).
Solid: the best score the phase has seen so far; dashed: the median of the population (the
last ``population`` candidates of the phase, which is what ageing keeps).  Everything is read
back from ``log.jsonl``, so the plot can be redrawn for a running or finished search:
``python -m zcproxy.search.trajectory OUT/log.jsonl``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..atomic import save_figure  # noqa: E402
from ..cli import add_debug_flag, run_command  # noqa: E402
from .log import read_events  # noqa: E402

LABELS = {"entropic": "Entropic Score", "logsynflow": "LogSynflow"}
KIND_COLOURS = {"all": "tab:gray", "topology": "tab:blue", "size": "tab:orange"}


def phase_frames(events: list[dict]) -> list[tuple[dict, pd.DataFrame]]:
    """(phase_start event, its candidates as a frame) for every phase with candidates."""
    starts = [e for e in events if e["event"] == "phase_start"]
    candidates = pd.DataFrame([e for e in events if e["event"] == "candidate"])
    out = []
    for start in starts:
        if candidates.empty:
            break
        frame = candidates[candidates["phase"] == start["phase"]].sort_values("id")
        if not frame.empty:
            out.append((start, frame))
    return out


def plot_trajectory(log_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    phases = phase_frames(read_events(log_path))
    if not phases:
        raise ValueError(f"{log_path} has no scored candidates to plot")
    proxies = [p for p in LABELS if any(p in _proxies(start["guide"]) for start, _ in phases)]
    fig, axes = plt.subplots(len(proxies), 1, figsize=(10, 3.2 * len(proxies)), sharex=True,
                             squeeze=False)
    for row, proxy in enumerate(proxies):
        ax = axes[row, 0]
        for i, (start, frame) in enumerate(phases):
            t0 = start.get("search_time", 0.0) / 60
            t1 = frame["search_time"].max() / 60
            colour = KIND_COLOURS.get(start["kind"], "tab:green")
            ax.axvspan(t0, t1, color=colour, alpha=0.06 if i % 2 else 0.12, lw=0)
            if row == 0:
                ax.text((t0 + t1) / 2, 1.01, start["name"], transform=ax.get_xaxis_transform(),
                        rotation=45, fontsize=7, ha="left", va="bottom")
            if proxy not in _proxies(start["guide"]):
                continue
            values = pd.to_numeric(frame["scores"].map(lambda s: s.get(proxy)), errors="coerce")
            minutes = frame["search_time"] / 60
            ax.plot(minutes, values.cummax(), color=colour, lw=1.6)
            ax.plot(minutes, values.rolling(start["population"], min_periods=1).median(),
                    color=colour, lw=1, ls="--")
        ax.set_ylabel(LABELS[proxy])
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("search clock (minutes)")
    handles = [plt.Line2D([], [], color="k", lw=1.6, label="best so far in phase"),
               plt.Line2D([], [], color="k", lw=1, ls="--", label="population median")]
    handles += [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.3, label=f"{k} genes")
                for k, c in KIND_COLOURS.items()]
    axes[0, 0].legend(handles=handles, fontsize=7, loc="lower right")
    fig.tight_layout()
    out = save_figure(fig, out_path, dpi=120)
    plt.close(fig)
    return out


def _proxies(guide: str) -> tuple[str, ...]:
    return tuple(LABELS) if guide == "combined" else (guide,)


def main(argv: list[str] | None = None) -> int:
    """Redraw the plot; a missing or corrupt log ends as one line on stderr, exit status 2."""
    parser = argparse.ArgumentParser(prog="python -m zcproxy.search.trajectory",
                                     description="Redraw trajectory.png from a search log.")
    parser.add_argument("log", help="a search's log.jsonl")
    parser.add_argument("--out", help="image to write (default: trajectory.png beside the log)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    out = args.out or Path(args.log).with_name("trajectory.png")

    def body() -> int:
        print(plot_trajectory(args.log, out))
        return 0
    return run_command(body, prog="trajectory", debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
