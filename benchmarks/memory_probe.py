"""What the per-score memory benchmarks share (``bench_grasp_memory.py``, ``bench_ntk_memory.py``).

Each measured score runs in a fresh spawned process (:func:`in_fresh_process`), on a cell of a
benchmark's seed-0 sample picked by parameter-count quantile (:func:`pick_cells`), built as the
runner builds it and scored on the runner's CIFAR-10 batch (:func:`load_cell`).  Peak memory is
the growth of the resident high-water mark after a reset (:func:`resident_mb`, :func:`peak_mb`),
not ``ru_maxrss``: that keeps any transient peak from loading the tables, which understates a
score's growth.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import platform
import sys
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


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
