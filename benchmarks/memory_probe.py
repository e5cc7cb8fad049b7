"""What the per-score memory benchmarks share (``bench_grasp_memory.py``, ``bench_ntk_memory.py``).

Each measured score runs in a fresh spawned process (:func:`in_fresh_process`), on a cell of a
benchmark's seed-0 sample picked by parameter-count quantile (:func:`pick_cells`), built as the
runner builds it and scored on the runner's CIFAR-10 batch (:func:`load_cell`).  Peak memory is
the growth of the resident high-water mark after a reset (:func:`resident_mb`, :func:`peak_mb`),
not ``ru_maxrss``: that keeps any transient peak from loading the tables, which understates a
score's growth.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def add_cell_arguments(ap: argparse.ArgumentParser, *, quantiles: str, largest: str,
                       report: str) -> None:
    """The options every memory benchmark takes: which cells (benchmark, sample, quantiles),
    torch threads, data folder and report.  ``largest`` says what the largest cell costs."""
    ap.add_argument("--bench", default="nb101", choices=["nb101", "nats-tss", "nats-sss"],
                    help="benchmark whose cells to measure (default nb101)")
    ap.add_argument("--sample", type=int, default=1000,
                    help="the seed-0 sample the cells are picked from (default 1000)")
    ap.add_argument("--quantiles", default=quantiles,
                    help=f"parameter-count quantiles of the cells to measure (default "
                         f"{quantiles}; 1 is the largest cell{largest})")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per score (default 1)")
    ap.add_argument("--data-dir", default=None, help="benchmark data folder (default: zcproxy's)")
    ap.add_argument("--out", default=str(HERE / report),
                    help=f"report to write (default benchmarks/{report})")


def chosen_cells(args: argparse.Namespace) -> list[int]:
    """The cells :func:`add_cell_arguments`' options name (see :func:`pick_cells`)."""
    quantiles = [float(q) for q in args.quantiles.split(",")]
    return pick_cells(args.bench, args.sample, quantiles, args.data_dir)


def machine_line(threads: int, batch: int, started: datetime,
                 load: tuple[float, float, float]) -> str:
    """The report's first line: machine, time, threads, batch and the load around the run."""
    return (f"- Machine: {cpu_name()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; {started:%Y-%m-%d %H:%M} UTC; {threads} torch "
            f"thread(s) per score, batch {batch}; load average at start {load[0]:.2f}, at end "
            f"{os.getloadavg()[0]:.2f} (times are wall clock: compare them within a run).")


def measure_peak(score: Callable[[], Any]) -> tuple[Any, float, float]:
    """``score()``, its wall-clock seconds and the growth of the resident high-water mark
    during it (reset just before, so what the process did earlier is not counted)."""
    before = resident_mb(reset_peak=True)
    start = time.perf_counter()
    value = score()
    seconds = time.perf_counter() - start
    return value, seconds, peak_mb() - before


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a newly spawned process, so its peak memory belongs to that call."""
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def load_cell(bench: str, index: int, threads: int, batch: int, data_dir: str | None):
    """(benchmark, network, images, labels): cell ``index`` built under the runner's seed and
    ``batch`` images of its CIFAR-10 batch, with ``threads`` torch threads."""
    import torch

    from zcproxy.data import cifar10_batch
    from zcproxy.nasbench import get_benchmark

    torch.set_num_threads(threads)
    b = get_benchmark(bench, data_dir=data_dir)
    torch.manual_seed(index)
    model = b.build(index)
    x, y = cifar10_batch(batch, seed=0, root=data_dir)
    return b, model, x, y


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pick_cells(bench: str, sample: int, quantiles: list[float], data_dir: str | None) -> list[int]:
    """The sample's cells whose parameter counts lie nearest the given quantiles."""
    import numpy as np

    from zcproxy.nasbench import get_benchmark

    b = get_benchmark(bench, data_dir=data_dir)
    indices = b.sample(sample, seed=0)
    params = np.array([b.params(i) for i in indices])
    order = np.argsort(params)
    picked = [int(indices[order[min(len(order) - 1, int(round(q * (len(order) - 1))))]])
              for q in quantiles]
    return list(dict.fromkeys(picked))


class NoPeakReset(RuntimeError):
    """This system cannot reset and read the resident high-water mark (Linux /proc)."""


def _status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError as err:
        raise NoPeakReset(f"cannot read /proc/self/status ({err}): the memory benchmarks need "
                          "Linux; ru_maxrss elsewhere keeps the loading peak") from err
    raise NoPeakReset(f"/proc/self/status has no {field}: the memory benchmarks need Linux")


def resident_mb(reset_peak: bool = False) -> float:
    """The process's resident memory now; with ``reset_peak`` its high-water mark is reset to
    it first, so a transient peak while loading the tables is not taken for the score's
    (``ru_maxrss`` keeps it, and would understate the score's growth).  Raises NoPeakReset
    where that cannot be done, rather than report a biased figure."""
    if reset_peak:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError as err:
            raise NoPeakReset(f"cannot reset the resident high-water mark through "
                              f"/proc/self/clear_refs ({err})") from err
    return _status_mb("VmRSS")


def peak_mb() -> float:
    """The resident high-water mark since the last reset."""
    return _status_mb("VmHWM")
