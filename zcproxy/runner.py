"""Score many benchmark architectures with many proxies: resumable, in parallel, on any device.

Each architecture's network is built once (with a seed derived from the run seed and its
index, so a score does not depend on worker count or order) and scored by every proxy still
missing for it; results go to a :class:`~zcproxy.journal.Journal` as they arrive.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

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

    def arch_seed(self, index: int) -> int:
        return (self.seed * 1_000_003 + index) % (2 ** 63)


class _Worker:
    """Per-process state: the benchmark tables and the real-data batch, loaded once."""

    def __init__(self, job: ScoringJob):
        from .nasbench import get_benchmark
        if job.threads:
            torch.set_num_threads(job.threads)
        self.job = job
        self.bench = get_benchmark(job.bench, data_dir=job.data_dir,
                                   official_path=job.official_path)
        self.proxies = resolve_proxies({p: job.proxy_options.get(p, {}) for p in job.proxies})
        self.inputs = self.targets = None
        if any(p.needs_data for p, _ in self.proxies):
            from .data import cifar10_batch
            self.inputs, self.targets = cifar10_batch(job.batch_size, seed=job.seed,
                                                      root=job.data_dir, device=job.device)

    def score(self, task: tuple[int, tuple[str, ...]]) -> list[tuple[int, str, float, float, str]]:
        index, wanted = task
        rows = []
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.job.arch_seed(index))
                model = self.bench.build(index, self.job.dataset, device=self.job.device)
            ctx = ProxyContext(model=model, device=torch.device(self.job.device),
                               output=self.bench.output_selector, inputs=self.inputs,
                               targets=self.targets, input_shape=self.bench.input_shape(self.job.dataset),
                               seed=self.job.seed)
            todo = [(p, o) for p, o in self.proxies if p.name in wanted]
            for name, value, seconds in score_timed(ctx, todo, nonfinite="keep"):
                error = "" if math.isfinite(value) else f"non-finite score {value}"
                rows.append((index, name, value, seconds, error))
        except Exception as err:  # recorded per architecture, never swallowed silently
            done = {r[1] for r in rows}
            message = f"{type(err).__name__}: {err}".replace("\n", " ")[:500]
            rows += [(index, p, math.nan, 0.0, message) for p in wanted if p not in done]
            if os.environ.get("ZCPROXY_DEBUG"):
                traceback.print_exc()
        return rows


_WORKER: _Worker | None = None


def _init_worker(job: ScoringJob) -> None:
    global _WORKER
    _WORKER = _Worker(job)


def _score_in_worker(task):
    return _WORKER.score(task)


def pending_tasks(indices: Sequence[int], proxies: Sequence[str],
                  done: set[tuple[int, str]]) -> list[tuple[int, tuple[str, ...]]]:
    """(index, proxies still missing) for every architecture with work left, in order."""
    tasks = []
    for index in indices:
        missing = tuple(p for p in proxies if (int(index), p) not in done)
        if missing:
            tasks.append((int(index), missing))
    return tasks


def run_scoring(job: ScoringJob, indices: Sequence[int], journal_path: str | os.PathLike, *,
                workers: int = 1, progress: bool = True) -> pd.DataFrame:
    """Score ``indices`` into the journal, skipping what it already holds; returns the journal.

    With ``workers > 1`` architectures are spread over processes (spawned, so it works with
    CUDA too); ``job.threads`` sets torch's threads per process.
    """
    with Journal(journal_path) as journal:
        tasks = pending_tasks(indices, job.proxies, journal.done())
        bar = tqdm(total=len(indices), initial=len(indices) - len(tasks), unit="arch",
                   desc=f"{job.bench} {','.join(job.proxies)}", disable=not progress,
                   dynamic_ncols=True)
        for rows in _results(job, tasks, workers):
            journal.append(rows)
            bar.update(1)
        bar.close()
        return journal.read()


def _results(job: ScoringJob, tasks: list, workers: int) -> Iterator[list]:
    if not tasks:
        return
    if workers <= 1:
        worker = _Worker(job)
        for task in tasks:
            yield worker.score(task)
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        yield from pool.imap_unordered(_score_in_worker, tasks, chunksize=1)


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


def job_dict(job: ScoringJob) -> dict:
    return asdict(job)


def journal_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "journal.csv"
