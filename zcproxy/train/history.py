"""The per-epoch CSV log of a run and its learning-curve figure.

The log is appended one row per finished epoch.  A run killed after logging an epoch but before
its checkpoint landed would, on resume, train that epoch again; :func:`truncate_log` therefore
drops every row past the checkpoint's epoch so the CSV always matches the resumed state.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Mapping

from ..atomic import atomic_write, save_figure

COLUMNS: tuple[str, ...] = ("epoch", "lr", "train_loss", "val_loss", "top1", "top5",
                            "images_per_s", "seconds")


def append_row(path: str | os.PathLike, row: Mapping[str, float]) -> None:
    path = Path(path)
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"log row lacks {missing}")
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({c: row[c] for c in COLUMNS})
        fh.flush()
        os.fsync(fh.fileno())


def read_log(path: str | os.PathLike) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and list(rows[0]) != list(COLUMNS):
        raise ValueError(f"{path}: columns {list(rows[0])}, expected {list(COLUMNS)}")
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in rows]


def truncate_log(path: str | os.PathLike, completed_epochs: int) -> None:
    """Keep only the rows of epochs 1..completed_epochs (epochs are 1-based in the log)."""
    path = Path(path)
    if not path.exists():
        return
    rows = [r for r in read_log(path) if r["epoch"] <= completed_epochs]
    with atomic_write(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot_curve(log_path: str | os.PathLike, out_path: str | os.PathLike, title: str = "") -> Path:
    """Loss (train and val) and accuracy (top-1, top-5) against epoch, side by side."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    rows = read_log(log_path)
    if not rows:
        raise ValueError(f"{log_path} has no epochs to plot")
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train (recipe loss)")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], "s-", label="val (cross-entropy)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["top1"] for r in rows], "o-", label="top-1")
    ax_acc.plot(epochs, [r["top5"] for r in rows], "s-", label="top-5")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation accuracy (%)")
    ax_acc.set_ylim(0, 100)
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_path, dpi=120)
