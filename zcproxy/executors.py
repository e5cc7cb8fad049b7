"""Where scoring runs: this process, a pool of local processes, or a Ray cluster.

:func:`~zcproxy.runner.run_scoring` hands an :class:`Executor` the architectures still missing
from the journal and journals each architecture's rows as the executor yields them; the executors
differ only in where :class:`~zcproxy.runner.Worker` runs.  Whatever the executor, a score does
not depend on it (each network is built from a seed derived from its index), and a worker that
dies costs only the work it had in flight: it is re-submitted, never lost or duplicated, because
nothing reaches the journal before it is finished.
"""
from __future__ import annotations

import abc
import concurrent.futures as cf
import dataclasses
import gc
import multiprocessing as mp
import os
import threading
import time
from collections import deque
from typing import Iterator, Sequence

from .journal import ENVIRONMENT
from .runner import STOPS_THE_RUN, Row, ScoringJob, Task, Worker


def serves(started: ScoringJob, job: ScoringJob) -> bool:
    """Whether workers set up for ``started`` can score ``job``: the same settings and a subset
    of its proxies (a worker scores whichever of its proxies a task asks for), so one pool can
    serve runs of several proxy sets without reloading anything.  Workers that checked their
    images against one batch fingerprint never serve a run that found another (the files
    changed since they loaded theirs), and workers that checked none (started for a job without
    a fingerprint) never serve a run that has one; a run without one asks for no check."""
    return (set(job.proxies) <= set(started.proxies)
            and job.inputs_fingerprint in (None, started.inputs_fingerprint)
            and dataclasses.replace(job, proxies=started.proxies,
                                    inputs_fingerprint=started.inputs_fingerprint) == started)


class Executor(abc.ABC):
    """Runs scoring tasks for a job and yields each architecture's rows as they finish."""

    # How many times workers were set up (loaded, spawned, connected): a timing harness checks
    # that none was set up again inside a timed run.
    starts: int = 0

    def start(self, job: ScoringJob) -> None:
        """Get workers ready for ``job`` (load data, spawn, connect) before any timing starts;
        optional, ``run`` starts them itself.  Give ``job`` the image fingerprint run_scoring
        will find (``inputs_fingerprint=run_settings(job)[0]["inputs_fingerprint"]``): workers
        started without one checked nothing and are replaced by a run that has one."""

    @abc.abstractmethod
    def run(self, job: ScoringJob, tasks: Sequence[Task]) -> Iterator[list[Row]]:
        """Rows of every task, one list per architecture, in completion order."""

    def layout(self, job: ScoringJob) -> dict:
        """How ``job`` is spread out: ``executor``, ``workers`` and ``threads_per_worker``, as
        the journal's session record keeps them (exact scores depend on the threads)."""
        return {"executor": type(self).__name__, "workers": None,
                "threads_per_worker": job.threads or None}

    def close(self) -> None:
        """Release workers; the executor can be started again afterwards."""

    def abort(self) -> None:
        """Stop at once (Ctrl-C, SIGTERM): architectures still in flight are abandoned, not
        waited for.  Nothing of theirs is in the journal yet, so the next run scores them
        again; what finished is already there.  By default the same as ``close``."""
        self.close()

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.abort()
        else:
            self.close()


class InProcessExecutor(Executor):
    """Scores in the calling process, one architecture after the other."""

    def __init__(self):
        self._worker: Worker | None = None

    def start(self, job: ScoringJob) -> None:
        if self._worker is None or not serves(self._worker.job, job):
            self._worker = Worker(job)
            self.starts += 1

    def run(self, job: ScoringJob, tasks: Sequence[Task]) -> Iterator[list[Row]]:
        self.start(job)
        for task in tasks:
            yield self._worker.score(task)

    def layout(self, job: ScoringJob) -> dict:
        import torch
        return {"executor": "in-process", "workers": 1,
                "threads_per_worker": job.threads or torch.get_num_threads()}

    def close(self) -> None:
        self._worker = None


# ----------------------------------------------------------------------- local processes
_POOL_WORKER: Worker | None = None
_POOL_INIT_ERROR: str | None = None


def _exit_with_parent(parent: int) -> None:
    # A pool worker blocks forever on its task queue if the parent is killed (the queue's
    # pipe stays open in the sibling workers); exit instead of lingering with the data loaded.
    while os.getppid() == parent:
        time.sleep(2.0)
    os._exit(1)


def settle_scoring_process() -> None:
    """Exclude everything loaded so far from garbage collection, in a process that only scores.

    A scoring worker holds a large, permanent heap (torch, the benchmark tables, the batch) and
    creates hundreds of short-lived modules per architecture; every full collection walked the
    permanent heap again: 4 % of a NATS-sss worker's time.  ``gc.freeze`` moves it out of the
    collector's reach.  Not done in the caller's own process (an in-process run), where frozen
    objects that later become garbage could never be freed.
    """
    gc.freeze()


def core_groups(workers: int, threads: int) -> list[list[int]] | None:
    """Disjoint sets of ``threads`` cores, one per worker, when the pool uses exactly the cores
    this process may use; None otherwise.  A pool that leaves cores free is not pinned: two
    such runs side by side would both be bound to the first cores."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if workers * threads != len(cores):
        return None
    return [cores[i * threads:(i + 1) * threads] for i in range(workers)]


def _init_pool_worker(job: ScoringJob, ready, cores=None) -> None:
    global _POOL_WORKER, _POOL_INIT_ERROR
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    if cores is not None:
        try:  # one group per worker: each process takes the next one off the queue
            os.sched_setaffinity(0, cores.get(timeout=60))
        except Exception:  # noqa: BLE001 - pinning is an optimisation, never a failure
            pass
    try:
        _POOL_WORKER = Worker(job)
        settle_scoring_process()
    except BaseException as err:  # reported with the first task; an initializer that raises
        _POOL_INIT_ERROR = f"{type(err).__name__}: {err}"  # would just be restarted forever
    finally:
        if ready is not None:
            try:
                ready.wait(timeout=600)
            except threading.BrokenBarrierError:
                pass


def _score_in_pool(task: Task) -> list[Row]:
    if _POOL_WORKER is None:
        raise WorkerSetupError(f"worker {os.getpid()} could not start: {_POOL_INIT_ERROR}")
    return _POOL_WORKER.score(task)


class WorkerSetupError(RuntimeError):
    """A worker could not load what the job needs (benchmark files, data, a plug-in)."""


class ProcessPoolExecutor(Executor):
    """``workers`` spawned processes on this machine, each with its own copy of the data.

    Spawned rather than forked, so it works with CUDA and with torch's thread pools.  Each
    process gets ``threads`` torch threads (default: the job's, else cores // workers, so that
    the pool never oversubscribes the machine); with ``pin`` and a pool that fills the
    cores, each process is bound to its own cores, so the OS does not move a worker away from
    its warm caches (+1.5 % in one 300-arch measurement on 2 cores, within run-to-run noise).
    If a process dies (killed, out of memory, a crash in native code) the pool is rebuilt and
    the architectures it had in flight are re-submitted, each alone: the pool cannot say which
    of them took it down, so only a death while an architecture is the only one in flight
    counts against it, and one that takes a process down ``max_attempts`` times alone is
    recorded as failed (an environment failure, retried by the next run).  Charging every
    architecture in flight would record innocent neighbours as killers.
    """

    def __init__(self, workers: int, *, threads: int | None = None, max_attempts: int = 3,
                 ready_timeout: float = 600.0, pin: bool = True):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.threads = threads
        self.max_attempts = max_attempts
        self.ready_timeout = ready_timeout
        self.pin = pin
        self._pool: cf.ProcessPoolExecutor | None = None
        self._job: ScoringJob | None = None

    def _worker_job(self, job: ScoringJob) -> ScoringJob:
        threads = self.threads or job.threads or max(1, (os.cpu_count() or 1) // self.workers)
        return dataclasses.replace(job, threads=threads)

    def layout(self, job: ScoringJob) -> dict:
        return {"executor": "process-pool", "workers": self.workers,
                "threads_per_worker": self._worker_job(job).threads}

    def start(self, job: ScoringJob) -> None:
        job = self._worker_job(job)
        if self._pool is not None and serves(self._job, job):
            return
        self.close()
        ctx = mp.get_context("spawn")
        ready = ctx.Barrier(self.workers + 1)
        groups = core_groups(self.workers, job.threads) if self.pin else None
        cores = None
        if groups is not None:
            cores = ctx.Queue()
            for group in groups:
                cores.put(group)
        self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx,
                                            initializer=_init_pool_worker,
                                            initargs=(job, ready, cores))
        self._job = job
        self.starts += 1
        # Processes are spawned on demand: one no-op task each makes all of them start, and
        # the barrier returns once every one has loaded the benchmark and the data.
        pings = [self._pool.submit(os.getpid) for _ in range(self.workers)]
        try:
            ready.wait(timeout=self.ready_timeout)
        except threading.BrokenBarrierError:
            self.close()
            raise WorkerSetupError(f"the {self.workers} worker processes were not ready after "
                                   f"{self.ready_timeout:.0f} s") from None
        cf.wait(pings)

    def run(self, job: ScoringJob, tasks: Sequence[Task]) -> Iterator[list[Row]]:
        self.start(job)
        queue = deque((task, 0) for task in tasks)
        # In flight when the pool died: each runs alone until it finishes or dies alone.
        suspects: deque[tuple[Task, int]] = deque()
        in_flight: dict[cf.Future, tuple[Task, int]] = {}
        window = 2 * self.workers

        def submit(task: Task, attempt: int) -> bool:
            # A pool that lost a worker refuses new work at once (it is marked broken before
            # its futures fail): the caller puts the task back and the pool is rebuilt.
            try:
                in_flight[self._pool.submit(_score_in_pool, task)] = (task, attempt)
            except cf.process.BrokenProcessPool:
                return False
            return True

        while queue or suspects or in_flight:
            broken = False
            if suspects:
                if not in_flight:
                    task, attempt = suspects.popleft()
                    if not submit(task, attempt):
                        suspects.appendleft((task, attempt))
                        broken = True
            else:
                while queue and len(in_flight) < window:
                    task, attempt = queue.popleft()
                    if not submit(task, attempt):
                        queue.appendleft((task, attempt))
                        broken = True
                        break
            if not broken:
                alone = len(in_flight) == 1
                done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    task, attempt = in_flight.pop(future)
                    try:
                        yield future.result()
                    except cf.process.BrokenProcessPool:
                        broken = True
                        if not alone:
                            suspects.append((task, attempt))
                        elif attempt + 1 >= self.max_attempts:
                            yield _died_rows(task, attempt + 1)
                        else:
                            suspects.appendleft((task, attempt + 1))
            if broken:
                # Every task still in the dead pool fails too: each is a suspect.
                for future, (task, attempt) in list(in_flight.items()):
                    try:
                        yield future.result()
                    except cf.process.BrokenProcessPool:
                        suspects.append((task, attempt))
                in_flight.clear()
                job_now = self._job
                self.close()
                self.start(job_now)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._job = None

    def abort(self) -> None:
        # shutdown() alone waits for the architectures in flight: on NAS-Bench-101 with the
        # whole zoo, a minute or more after the user asked to stop.
        if self._pool is not None:
            for process in list((self._pool._processes or {}).values()):
                process.terminate()
        self.close()


def _died_rows(task: Task, attempts: int) -> list[Row]:
    # Marked as an environment failure: the usual cause is the machine (the OOM killer, a
    # kill), so the next run retries it instead of keeping the failure for good.
    index, arch, wanted = task
    message = (f"{ENVIRONMENT}WorkerDied: the worker process died {attempts} times while "
               "scoring this architecture (killed, out of memory, or a crash in native code)")
    return [(index, arch, proxy, "", float("nan"), 0.0, message) for proxy in wanted]


# ----------------------------------------------------------------------------- Ray
_RAY_WORKER: Worker | None = None


def _ray_score_chunk(job: ScoringJob, chunk: list[Task]) -> list[list[Row]]:
    """One Ray task: score a chunk of architectures.  The Worker is cached per Ray worker
    process, so the benchmark and the batch are loaded once per process, not per chunk."""
    global _RAY_WORKER
    if _RAY_WORKER is None or not serves(_RAY_WORKER.job, job):
        _RAY_WORKER = Worker(job)
        settle_scoring_process()
    return [_RAY_WORKER.score(task) for task in chunk]


class RayExecutor(Executor):
    """Scores chunks of architectures as Ray tasks, locally or on a cluster.

    ``address`` is passed to ``ray.init`` (None: a running local instance or a new one;
    ``"auto"`` or ``"ray://host:10001"`` for a cluster; zcproxy and the benchmark data must be
    installed on every node).  Results come back as each chunk finishes (``ray.wait``) and are
    journaled then, so a chunk's scores are never lost once it is done.  A task whose worker
    process dies is retried by Ray (``max_retries``); one that still fails is re-submitted by
    this executor up to ``resubmits`` times before the run stops with the error.  Small chunks
    redo less work after a failure, large ones pay less per-task overhead.
    """

    def __init__(self, address: str | None = None, *, chunk_size: int = 8, max_retries: int = 3,
                 resubmits: int = 2, cpus_per_task: float = 1.0, max_in_flight: int | None = None,
                 init_options: dict | None = None):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.address = address
        self.chunk_size = chunk_size
        self.max_retries = max_retries
        self.resubmits = resubmits
        self.cpus_per_task = cpus_per_task
        self.max_in_flight = max_in_flight
        self.init_options = dict(init_options or {})
        self._ray = None
        self._owns_ray = False
        self._remote = None
        self._in_flight: dict = {}

    def start(self, job: ScoringJob) -> None:
        if self._ray is not None:
            return
        try:
            import ray
        except ImportError as err:
            raise ImportError("the Ray executor needs ray: pip install 'zcproxy[ray]' "
                              "(or pip install ray)") from err
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_options)
            self._owns_ray = True
        self._ray = ray
        self.starts += 1
        self._remote = ray.remote(_ray_score_chunk).options(
            num_cpus=self.cpus_per_task, max_retries=self.max_retries)

    def layout(self, job: ScoringJob) -> dict:
        return {"executor": "ray", "workers": None,  # as many as the cluster runs at once
                "threads_per_worker": self._task_threads(job)}

    def _task_threads(self, job: ScoringJob) -> int:
        return job.threads or max(1, int(self.cpus_per_task))

    def run(self, job: ScoringJob, tasks: Sequence[Task]) -> Iterator[list[Row]]:
        self.start(job)
        ray = self._ray
        job = dataclasses.replace(job, threads=self._task_threads(job))
        job_ref = ray.put(job)
        chunks = deque((list(tasks[i:i + self.chunk_size]), 0)
                       for i in range(0, len(tasks), self.chunk_size))
        limit = self.max_in_flight or max(2, 2 * int(ray.available_resources().get("CPU", 1)))
        pending = self._in_flight = {}
        while chunks or pending:
            while chunks and len(pending) < limit:
                chunk, attempt = chunks.popleft()
                pending[self._remote.remote(job_ref, chunk)] = (chunk, attempt)
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                chunk, attempt = pending.pop(ref)
                try:
                    results = ray.get(ref)
                except ray.exceptions.RayError as err:
                    if isinstance(getattr(err, "cause", None), STOPS_THE_RUN):
                        raise err.cause from err  # the same on every node: never resubmitted
                    if attempt >= self.resubmits:
                        first, last = chunk[0][0], chunk[-1][0]
                        raise RuntimeError(
                            f"a chunk of {len(chunk)} architectures ({first}..{last}) failed "
                            f"{attempt + 1} times; the journal keeps every finished score: "
                            f"{err}") from err
                    chunks.appendleft((chunk, attempt + 1))
                    continue
                yield from results

    def close(self) -> None:
        if self._ray is not None and self._owns_ray:
            self._ray.shutdown()
        self._ray = None
        self._owns_ray = False
        self._remote = None
        self._in_flight = {}

    def abort(self) -> None:
        # On a cluster this executor did not start, close() leaves Ray running, and with it
        # every chunk in flight: cancel them (force: a scoring task never checks for it).
        if self._ray is not None:
            for ref in list(self._in_flight):
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - finished or already gone: nothing to stop
                    pass
        self.close()


def make_executor(kind: str = "local", *, workers: int = 1, threads: int | None = None,
                  ray_address: str | None = None, chunk_size: int = 8,
                  max_retries: int = 3) -> Executor:
    """The executor the CLI's ``--executor``/``--workers`` flags name."""
    if kind == "local":
        if workers <= 1:
            return InProcessExecutor()
        return ProcessPoolExecutor(workers, threads=threads)
    if kind == "ray":
        return RayExecutor(ray_address, chunk_size=chunk_size, max_retries=max_retries)
    raise ValueError(f"executor must be 'local' or 'ray', not {kind!r}")
