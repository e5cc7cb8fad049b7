"""Score many benchmark architectures with many proxies: resumable, in parallel, on any device.

Each architecture's network is built once (with a seed derived from the run seed and its
index, so a score does not depend on worker count or order) and scored by every proxy still
missing for it; results go to a :class:`~zcproxy.journal.Journal` as they arrive.
"""
from __future__ import annotations

import ctypes
import importlib
import math
import os
import traceback
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from .api import resolve_proxies, score_timed
from .context import ProxyContext
from .journal import Journal


@dataclass(frozen=True)
class ScoringJob:
    """Everything a worker needs to score architectures of one benchmark (picklable)."""

    bench: str
    proxies: tuple[str, ...]
    dataset: str = "cifar10"
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    official_path: str | None = None
    batch_size: int = 64
    threads: int = 0  # torch threads per worker; 0 = leave torch's default
    proxy_options: dict = field(default_factory=dict)
    # Modules every worker imports before looking proxies up, so that proxies registered
    # outside zcproxy also exist in worker processes (spawned or on a Ray cluster).
    plugins: tuple[str, ...] = ()
    # Let workers keep freed memory instead of returning it to the OS (see tune_allocator).
    tune_malloc: bool = True

    def arch_seed(self, index: int) -> int:
        return (self.seed * 1_000_003 + index) % (2 ** 63)


Task = tuple[int, tuple[str, ...]]
Row = tuple[int, str, float, float, str]


class Worker:
    """Per-process state: the benchmark tables and the real-data batch, loaded once."""

    def __init__(self, job: ScoringJob):
        from .nasbench import get_benchmark
        if job.threads:
            torch.set_num_threads(job.threads)
        for module in job.plugins:
            importlib.import_module(module)
        self.job = job
        self.bench = get_benchmark(job.bench, data_dir=job.data_dir,
                                   official_path=job.official_path)
        # Load the tables now: an adapter that reads them lazily inside the first seeded build
        # could draw from the seeded RNG stream (NATS-tss computes its cost tables by building
        # networks), and the first architecture a worker scores would get other weights.
        self.bench.table(job.dataset)
        self.proxies = resolve_proxies({p: job.proxy_options.get(p, {}) for p in job.proxies})
        self.inputs = self.targets = None
        if any(p.needs_data for p, _ in self.proxies):
            from .data import cifar10_batch
            self.inputs, self.targets = cifar10_batch(job.batch_size, seed=job.seed,
                                                      root=job.data_dir, device=job.device)
        if job.tune_malloc:  # after loading: the loaders' big temporaries go back to the OS
            tune_allocator()

    def score(self, task: Task) -> list[Row]:
        index, wanted = task
        rows = []
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.job.arch_seed(index))
                model = self.bench.build(index, self.job.dataset, device=self.job.device)
            ctx = ProxyContext(model=model, device=torch.device(self.job.device),
                               output=self.bench.output_selector, inputs=self.inputs,
                               targets=self.targets, input_shape=self.bench.input_shape(self.job.dataset),
                               # Independent proxy seeds per architecture (ES re-initialisations,
                               # noise input).  One shared seed for all architectures gives
                               # wider networks a superset of the same stem weights, a common-
                               # random-numbers artefact that moved ES's τ on NATS-sss from
                               # ≈0 to -0.41 (float64 draws) or +0.11 (float32 draws).
                               seed=self.job.arch_seed(index))
            todo = [(p, o) for p, o in self.proxies if p.name in wanted]
            for name, value, seconds, reason in score_timed(ctx, todo, nonfinite="keep"):
                error = "" if math.isfinite(value) else (
                    f"undefined ({value}): {reason}" if reason else f"non-finite score {value}")
                rows.append((index, name, value, seconds, error))
        except Exception as err:  # recorded per architecture, never swallowed silently
            done = {r[1] for r in rows}
            message = f"{type(err).__name__}: {err}".replace("\n", " ")[:500]
            rows += [(index, p, math.nan, 0.0, message) for p in wanted if p not in done]
            if os.environ.get("ZCPROXY_DEBUG"):
                traceback.print_exc()
        return rows


_MALLOC_TUNED = False


def tune_allocator() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it (once per process).

    glibc serves every block above 128 KiB with a fresh ``mmap`` and unmaps it on free, so each
    of the dozens of multi-megabyte activations a forward pass allocates costs page faults and
    zeroing by the kernel: 10-25 % of a scoring worker's CPU time (most on NAS-Bench-101).
    Disabling mmap for allocations and never trimming the heap turns that into plain reuse.
    Only the allocator's policy changes, never a value, so scores are bit-for-bit the same;
    peak RSS stays the high-water mark it was.  Returns False where there is no glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    ok = (mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, 2 ** 31 - 1) == 1
          and mallopt(m_top_pad, 64 << 20) == 1)
    _MALLOC_TUNED = ok
    return ok


def pending_tasks(indices: Sequence[int], proxies: Sequence[str],
                  done: set[tuple[int, str]]) -> list[Task]:
    """(index, proxies still missing) for every architecture with work left, in order."""
    tasks = []
    for index in indices:
        missing = tuple(p for p in proxies if (int(index), p) not in done)
        if missing:
            tasks.append((int(index), missing))
    return tasks


def run_scoring(job: ScoringJob, indices: Sequence[int], journal_path: str | os.PathLike, *,
                workers: int = 1, progress: bool = True, executor=None) -> pd.DataFrame:
    """Score ``indices`` into the journal, skipping what it already holds; returns the journal.

    Where the work runs is an :class:`~zcproxy.executors.Executor`: by default this process
    (``workers=1``) or a pool of ``workers`` spawned processes (so it works with CUDA too;
    ``job.threads`` torch threads each, default ``cores // workers``); pass
    ``executor=RayExecutor(...)`` for a Ray cluster.  Rows are journaled as each architecture
    (or chunk, on Ray) comes back, so an interrupted run loses at most the work in flight.
    An executor passed in is left open for reuse; one made here is closed.
    """
    from .executors import make_executor
    own = executor is None
    if own:
        executor = make_executor("local", workers=workers)
    try:
        with Journal(journal_path) as journal:
            tasks = pending_tasks(indices, job.proxies, journal.done())
            bar = tqdm(total=len(indices), initial=len(indices) - len(tasks), unit="arch",
                       desc=f"{job.bench} {','.join(job.proxies)}", disable=not progress,
                       dynamic_ncols=True)
            if tasks:
                for rows in executor.run(job, tasks):
                    journal.append(rows)
                    bar.update(1)
            bar.close()
            return journal.read()
    finally:
        if own:
            executor.close()


def wide_scores(journal: pd.DataFrame, bench, dataset: str, proxies: Sequence[str],
                indices: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per architecture: index, arch, accuracy, params, one column per proxy and a
    ``seconds_<proxy>`` column per proxy; failures are NaN and listed in ``errors``."""
    table = bench.table(dataset)
    scores = journal.pivot(index="index", columns="proxy", values="score")
    seconds = journal.pivot(index="index", columns="proxy", values="seconds")
    errors = journal[journal["error"].fillna("") != ""].groupby("index")["error"].agg(
        lambda e: "; ".join(sorted(set(e))))
    order = list(indices) if indices is not None else sorted(scores.index)
    order = [i for i in order if i in scores.index]
    out = pd.DataFrame({"index": order})
    out["arch"] = table["arch"].to_numpy()[order]
    out["accuracy"] = table["accuracy"].to_numpy()[order]
    out["params"] = table["params"].to_numpy()[order]
    for p in proxies:
        out[p] = scores[p].reindex(order).to_numpy() if p in scores else math.nan
    for p in proxies:
        out[f"seconds_{p}"] = seconds[p].reindex(order).to_numpy() if p in seconds else math.nan
    out["errors"] = errors.reindex(order).fillna("").to_numpy()
    return out

