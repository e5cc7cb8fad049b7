"""Score many benchmark architectures with many proxies: resumable, in parallel, on any device.

Each architecture's network is built once (with a seed derived from the run seed and its
index, so a score does not depend on worker count or order) and scored by every proxy still
missing for it, each proxy on its own (one that raises never spoils the others); results go
to a :class:`~zcproxy.journal.Journal` as they arrive.

A journal is only reused for the run it belongs to: its settings record (benchmark, dataset,
seed, batch, fingerprints of the accuracy table and the data batch) must match the run's, and
every row must name the architecture its index has in today's table.  Failures caused by the
machine (no GPU, out of memory, a dead worker) are retried by the next run; failures of an
architecture only with ``retry_failed``.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import math
import os
import time
import traceback
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .api import resolve_proxies, score_timed
from .context import ProxyBatchError, ProxyContext
from .journal import (ENVIRONMENT, Journal, JournalError, Row, done_pairs, error_kind,
                      journal_in_use, read_journal, write_journal)
from .paths import file_version
from .registry import ProxyOptionError, get_proxy, proxy_versions


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
    # True: bit-exact arithmetic; False: the fast path (channels-last), rank-faithful (issue 16).
    exact: bool = True
    # The image batch's fingerprint as run_scoring found it in the data folder (None: not
    # checked).  A worker whose own batch differs (a Ray node with another CIFAR-10 copy, files
    # replaced since a pool was started) records an environment failure instead of scoring.
    inputs_fingerprint: str | None = None

    def arch_seed(self, index: int) -> int:
        return (self.seed * 1_000_003 + index) % (2 ** 63)


Task = tuple[int, str, tuple[str, ...]]  # (index, the arch string it must be, proxies wanted)


def check_device(device: str | torch.device) -> torch.device:
    """The torch device ``device`` names, if this machine has it; ValueError saying why not.

    Checked before any scoring: a run on a device that is not there would otherwise record
    every architecture as failed.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, "
                         f"cuda:1): {err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: this machine has no usable CUDA GPU "
                             "(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"--device {device}: MPS is not available on this machine")
    elif dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except Exception as err:  # noqa: BLE001 - any failure means: not usable here
            raise ValueError(f"--device {device} is not usable here: {err}") from None
    return dev


# ----------------------------------------------------------------------- settings records
# What makes two scores of the same index comparable.  Device, threads, worker count and the
# proxies asked for may change between runs of one study; these may not.
COMPARED_SETTINGS = ("bench", "dataset", "seed", "batch_size", "proxy_options",
                     "data_fingerprint", "inputs_fingerprint", "arithmetic")
# A record written before a setting existed: exact arithmetic (before the fast path), the
# CIFAR-10 networks (live-search records before they named their dataset).
SETTING_DEFAULTS = {"arithmetic": "exact", "dataset": "cifar10"}
# The fast path's arithmetic, revised whenever a proxy's fast computation changes, so that a
# journal never mixes scores of two revisions ("fast": LogSynflow and Synflow still in float64;
# "fast-2": their gradients from the rescaled float32 pass).
FAST_ARITHMETIC = "fast-2"


def arithmetic_of(exact: bool) -> str:
    """The arithmetic a journal or record names for scores made with ``exact``."""
    return "exact" if exact else FAST_ARITHMETIC


class SettingsMismatch(JournalError):
    """Scores recorded with other settings or for other data than the run that wants them."""


def table_fingerprint(table: pd.DataFrame) -> str:
    """SHA-256 of a benchmark table's architecture strings and accuracies, in index order.

    It names the data a score belongs to independently of where the file lies: another data
    folder with the same table gives the same fingerprint, another data version or an edited
    file gives another.
    """
    digest = hashlib.sha256()
    digest.update("\n".join(table["arch"].astype(str)).encode("utf-8"))
    digest.update(np.ascontiguousarray(table["accuracy"].to_numpy(dtype="<f8")).tobytes())
    return "sha256:" + digest.hexdigest()


def job_batch(job: ScoringJob, bench, device: str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The real-image batch data proxies see in ``job``: the job's dataset's own images when
    the data folder has them, else CIFAR-10 resized to the networks' input (the third value
    says which; see :func:`zcproxy.data.dataset_batch`)."""
    from .data import dataset_batch
    shape = bench.input_shape(job.dataset) if bench is not None else None
    return dataset_batch(job.dataset, job.batch_size, seed=job.seed, root=job.data_dir,
                         device=device, shape=shape)


def _inputs_fingerprint(job: ScoringJob, required: bool, bench=None
                        ) -> tuple[str | None, str | None]:
    """(SHA-256 of the real-image batch data proxies see, where its images come from); (None,
    None) if there is none to find and no proxy needs it."""
    try:
        x, y, source = job_batch(job, bench)
    except Exception:
        if required:
            raise
        return None, None
    return batch_fingerprint(x, y), source


def batch_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of a CPU image batch and its labels: what a settings record calls the batch."""
    digest = hashlib.sha256(x.contiguous().numpy().tobytes())
    digest.update(y.numpy().astype("<i8").tobytes())
    return "sha256:" + digest.hexdigest()


_SETTINGS_CACHE: dict = {}


def run_settings(job: ScoringJob) -> tuple[dict, "object"]:
    """(settings record of ``job``, its loaded benchmark): what a journal and run.json record.

    Loads the benchmark table (and, if found, the data batch) to fingerprint them.  The
    table's record is cached per process for as long as its source file is unchanged; the
    image batch is fingerprinted on every call (its files are read once per version), so a
    CIFAR-10 copy replaced while a process lives is noticed, not vouched for from a cache.
    """
    from . import __version__
    from .nasbench import get_benchmark
    needs_data = any(_reads_images(p, job.proxy_options.get(p)) for p in job.proxies)
    key = (job.bench, job.dataset, job.data_dir, job.official_path, job.seed, job.batch_size,
           os.environ.get("ZCPROXY_DATA"))
    cached = _SETTINGS_CACHE.get(key)
    if cached is not None and cached[0] == _source_stamp(cached[1]):
        bench, table_digest = cached[1], cached[2]
    else:
        bench = get_benchmark(job.bench, data_dir=job.data_dir, official_path=job.official_path)
        table_digest = table_fingerprint(bench.table(job.dataset))
        _SETTINGS_CACHE[key] = (_source_stamp(bench), bench, table_digest)
    inputs_fingerprint, inputs_source = _inputs_fingerprint(job, needs_data, bench)
    record = {"data_fingerprint": table_digest, "inputs_fingerprint": inputs_fingerprint,
              "data_source": str(getattr(bench, "source", "") or "")}
    if inputs_source not in (None, job.dataset):  # said out loud, and recorded
        record["inputs_source"] = inputs_source
    settings = {"bench": job.bench, "dataset": job.dataset, "seed": job.seed,
                "batch_size": job.batch_size, "proxy_options": dict(job.proxy_options),
                "official_path": job.official_path, **record,
                "arithmetic": arithmetic_of(job.exact), "zcproxy": __version__}
    return settings, bench


def _reads_images(name: str, options: dict | None) -> bool:
    # Whether the proxy reads the image batch under its options (grad_norm recipe=zennas reads
    # none).  A proxy from a plug-in may exist only in the workers (a Ray cluster's nodes):
    # unknown here means "fingerprint the batch if there is one", never an error.
    try:
        return get_proxy(name).reads_images(options)
    except KeyError:
        return False


def _source_stamp(bench) -> tuple | None:
    source = getattr(bench, "source", None)
    version = file_version(source) if source else None
    return (str(source), *version) if version else None


def settings_differences(recorded: dict, current: dict) -> list[str]:
    """Human-readable differences in the settings that make scores comparable.

    A fingerprint absent on either side (no data batch found) is not a difference.
    """
    out = []
    for key in COMPARED_SETTINGS:
        old = recorded.get(key, SETTING_DEFAULTS.get(key))
        new = current.get(key, SETTING_DEFAULTS.get(key))
        if key == "proxy_options":
            old, new = old or {}, new or {}
        if key.endswith("_fingerprint") and (old is None or new is None):
            continue
        if old != new:
            if key == "data_fingerprint":
                out.append(f"the benchmark table differs (fingerprint {str(old)[7:19]}... there, "
                           f"{str(new)[7:19]}... now: another data folder, version or an "
                           f"edited file; now read from {current.get('data_source') or '?'})")
            elif key == "inputs_fingerprint":
                out.append("the real-image batch differs (another CIFAR-10 copy)")
            elif key == "arithmetic":
                how = ("pass --exact to continue that journal" if old == "exact" else
                       "pass no --exact to continue that journal" if old == FAST_ARITHMETIC else
                       "an earlier revision of the fast path: --fresh rescores it")
                out.append(f"arithmetic: {old} there, {new} now (scores of the two paths "
                           f"differ in the last bits; {how})")
            else:
                out.append(f"{key}: {old!r} there, {new!r} now")
    return out


def check_architectures(frame: pd.DataFrame, table: pd.DataFrame, where: object) -> None:
    """Every row's ``arch`` must be the architecture its index has in ``table``: a score is
    never attached to whatever architecture an index names today.  SettingsMismatch if not."""
    if frame.empty:
        return
    index = frame["index"].to_numpy()
    outside = (index < 0) | (index >= len(table))
    if outside.any():
        bad = int(index[outside][0])
        raise SettingsMismatch(f"{where}: index {bad} is outside the benchmark (0.."
                               f"{len(table) - 1}); these scores are for another benchmark")
    expected = table["arch"].to_numpy()[index].astype(str)
    wrong = frame["arch"].to_numpy().astype(str) != expected
    if wrong.any():
        at = int(wrong.nonzero()[0][0])
        n = len(set(index[wrong].tolist()))
        raise SettingsMismatch(
            f"{where}: {n:,} scored architecture(s) are not what their index names in the "
            f"current table (e.g. index {int(index[at])}: {frame['arch'].iat[at]!r} there, "
            f"{expected[at]!r} now); the data changed since they were scored")


def adopt_journal(path: str | os.PathLike, job: ScoringJob, *,
                  scores_path: str | os.PathLike | None = None,
                  recorded: dict | None = None) -> str:
    """Convert a zcproxy 0.1 journal (no settings record, no arch per row) for ``job``, after
    checking that every score belongs to the architecture its index names today.

    0.1 journals do not say which architecture a row was for, so the evidence is the
    ``scores.csv`` written beside it (index, arch, accuracy per architecture): every journal
    index must be there, with the current table's architecture string and accuracy.
    ``recorded`` is the folder's old run.json, whose benchmark, dataset, seed and batch size
    must be ``job``'s; without one, ``job``'s settings are assumed, and the report says so.
    On success the journal is rewritten atomically with the settings line and an arch column
    (scores unchanged, byte for byte); returns what was done, one line.  A journal that
    already records its settings is only checked.
    """
    path = Path(path)
    with journal_in_use(path):
        return _adopt(path, job, scores_path, recorded)


def _adopt(path: Path, job: ScoringJob, scores_path: str | os.PathLike | None,
           recorded: dict | None) -> str:
    if not path.exists():
        raise JournalError(f"--adopt: {path} does not exist; there is nothing to adopt")
    settings, bench = run_settings(job)
    table = bench.table(job.dataset)
    old_settings, frame = read_journal(path)
    if old_settings is not None:
        clash = settings_differences(old_settings, settings)
        if clash:
            raise SettingsMismatch(f"{path} holds scores made with other settings "
                                   f"({'; '.join(clash)}); it cannot be adopted for this run")
        check_architectures(frame, table, path)
        return f"--adopt: {path} already records its settings and architectures; nothing to do"
    if recorded is not None:
        clash = settings_differences(recorded, settings)
        if clash:
            raise SettingsMismatch(f"--adopt: the run.json beside {path.name} records other "
                                   f"settings ({'; '.join(clash)}); these scores are not for "
                                   "this run")
        assumed = "its run.json agrees with this command"
    else:
        assumed = (f"no run.json: assumed it was scored as this command says (bench "
                   f"{job.bench}, dataset {job.dataset}, seed {job.seed}, batch "
                   f"{job.batch_size})")
    scores_path = Path(scores_path) if scores_path is not None else path.with_name("scores.csv")
    if not scores_path.exists():
        raise JournalError(f"--adopt: {path} does not say which architecture each score is for, "
                           f"and there is no {scores_path.name} beside it that does; it cannot "
                           "be checked, so it cannot be adopted (--fresh rescores)")
    try:
        evidence = pd.read_csv(scores_path, usecols=["index", "arch", "accuracy"])
    except (ValueError, pd.errors.ParserError) as err:
        raise JournalError(f"--adopt: cannot read index, arch and accuracy from "
                           f"{scores_path}: {err}") from None
    evidence = evidence.drop_duplicates("index").set_index("index")
    unknown = sorted(set(frame["index"]) - set(evidence.index))
    if unknown:
        raise JournalError(f"--adopt: {len(unknown):,} scored indices of {path} are not in "
                           f"{scores_path} (e.g. {unknown[0]}), so their architecture cannot be "
                           "checked; --fresh rescores")
    frame["arch"] = evidence["arch"].astype(str).reindex(frame["index"]).to_numpy()
    check_architectures(frame, table, scores_path)
    index = evidence.index.to_numpy()
    if (index < 0).any() or (index >= len(table)).any():
        check_architectures(evidence.reset_index(), table, scores_path)
    now = table["accuracy"].to_numpy()[index]
    then = evidence["accuracy"].to_numpy(dtype=float)
    differ = ~np.isclose(then, now, rtol=1e-12, atol=0, equal_nan=True)
    if differ.any():
        at = int(differ.nonzero()[0][0])
        raise SettingsMismatch(f"--adopt: the accuracy {scores_path} records differs from the "
                               f"current table at {int(differ.sum()):,} architecture(s) (e.g. "
                               f"index {int(index[at])}: {then[at]!r} there, {now[at]!r} now); "
                               "the data changed since; --fresh rescores")
    versions, checked = _check_definitions(frame, job)
    frame["version"] = frame["proxy"].map(versions).fillna("")
    rows = frame[["index", "arch", "proxy", "version", "score", "seconds", "error"]]
    write_journal(path, settings, rows.itertuples(index=False, name=None))
    return (f"--adopt: converted {path} ({len(frame):,} scores of "
            f"{frame['index'].nunique():,} architectures, unchanged); every index checked "
            f"against the current {job.bench} table through {scores_path.name} (architecture "
            f"and accuracy equal); {assumed}; {checked}; it now records its settings and data "
            f"fingerprint {settings['data_fingerprint'][:19]}...")


def _check_definitions(frame: pd.DataFrame, job: ScoringJob,
                       per_proxy: int = 2) -> tuple[dict[str, str], str]:
    """Which definition each proxy's legacy scores are of, found by rescoring a few.

    A 0.1 journal does not say which version of a proxy it holds.  ``per_proxy`` of its scored
    architectures are scored again here; a proxy whose scores come out the same (relative
    1e-6: thread counts may move the last bits) gets its current version, any other gets none,
    so the run rescores it instead of mixing two definitions.  Returns (versions, one phrase).
    """
    known = proxy_versions(list(dict.fromkeys(frame["proxy"])))
    scored = frame[(frame["error"] == "") & frame["proxy"].isin(known)]
    chosen = {p: rows["index"].head(per_proxy).tolist()
              for p, rows in scored.groupby("proxy", sort=False)}
    if not chosen:
        return {}, "no score to check the proxies' definitions with"
    worker = Worker(replace(job, proxies=tuple(chosen), proxy_options={
        p: o for p, o in job.proxy_options.items() if p in chosen}))
    recorded = scored.set_index(["index", "proxy"])["score"]
    arch = scored.drop_duplicates("index").set_index("index")["arch"]
    again = {}
    for index in sorted({i for idx in chosen.values() for i in idx}):
        wanted = tuple(p for p, idx in chosen.items() if index in idx)
        for _, _, proxy, _, value, _, _ in worker.score((index, arch[index], wanted)):
            again[(index, proxy)] = value
    versions, differ = {}, []
    for proxy, idx in chosen.items():
        pairs = [(again[(i, proxy)], recorded[(i, proxy)]) for i in idx]
        if all(np.isclose(a, b, rtol=1e-6, atol=0) for a, b in pairs):
            versions[proxy] = known[proxy]
        else:
            new, old = next((a, b) for a, b in pairs if not np.isclose(a, b, rtol=1e-6, atol=0))
            differ.append(f"{proxy} ({old!r} there, {new!r} now)")
    phrase = (f"rescored {len(again):,} scores to check each proxy's definition: "
              f"{len(versions)} match their current version")
    if differ:
        phrase += (f", {len(differ)} do not and will be rescored: {', '.join(differ)}")
    return versions, phrase


# ----------------------------------------------------------------------- workers
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
        self.arches = self.bench.table(job.dataset)["arch"].to_numpy()
        self.proxies = resolve_proxies({p: job.proxy_options.get(p, {}) for p in job.proxies})
        self.versions = {p.name: p.version for p, _ in self.proxies}
        self.inputs = self.targets = None
        # Only proxies that read images under their options need the batch: a run of
        # grad_norm recipe=zennas alone works without any image folder.
        self.refusal = None  # set when this worker's images are not the run's
        if any(p.reads_images(options) for p, options in self.proxies):
            # Loaded on the CPU (where the batch is made), checked, then moved to the device.
            x, y, self.inputs_source = job_batch(job, self.bench)
            expected = job.inputs_fingerprint
            mine = batch_fingerprint(x, y) if expected else None
            if mine != expected:
                self.refusal = (f"{ENVIRONMENT}this worker's image batch ({mine[:19]}...) is not "
                                f"the run's ({expected[:19]}...): another data folder, or image "
                                "files replaced since the run began")
            self.inputs, self.targets = x.to(job.device), y.to(job.device)
        if job.tune_malloc:  # after loading: the loaders' big temporaries go back to the OS
            tune_allocator()

    def score(self, task: Task) -> list[Row]:
        """One row per proxy wanted.  Each proxy is scored on its own: one that raises is
        recorded with its error and never marks the others failed."""
        index, arch, wanted = task
        if self.refusal is not None:
            return [(index, arch, p, self.versions.get(p, ""), math.nan, 0.0, self.refusal)
                    for p in wanted]
        mine = str(self.arches[index]) if 0 <= index < len(self.arches) else None
        if mine != arch:  # e.g. a Ray node or a spawned worker reading another data folder
            return [(index, arch, p, self.versions.get(p, ""), math.nan, 0.0,
                     f"{ENVIRONMENT}this worker's {self.job.bench} table names index {index} "
                     f"{mine!r}, not {arch!r} (another data folder or version)") for p in wanted]
        start = time.perf_counter()
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
                               seed=self.job.arch_seed(index), exact=self.job.exact)
        except Exception as err:  # no network, no proxy: each is recorded with the reason
            message = describe_failure(err)
            return [(index, arch, p, self.versions.get(p, ""), math.nan,
                     time.perf_counter() - start, message) for p in wanted]
        rows = []
        for proxy, options in self.proxies:
            if proxy.name not in wanted:
                continue
            start = time.perf_counter()
            try:
                (result,) = score_timed(ctx, [(proxy, options)], nonfinite="keep")
            except STOPS_THE_RUN as err:  # the same on every network: stop, name the proxy
                raise type(err)(f"{proxy.name}: {err}"
                                + (f" (options {options})" if options else "")) from err
            except Exception as err:  # this proxy only; the next one still runs
                rows.append((index, arch, proxy.name, proxy.version, math.nan,
                             time.perf_counter() - start, describe_failure(err)))
                continue
            value, reason = result.value, result.reason
            error = "" if math.isfinite(value) else (
                f"undefined ({value}): {reason}" if reason else f"non-finite score {value}")
            rows.append((index, arch, proxy.name, proxy.version, value, result.seconds, error))
        return rows


# Errors a proxy raises for the call, not the network (an option or a batch no network can
# take): a batch run stops on them instead of journaling every architecture's failure.
STOPS_THE_RUN = (ProxyOptionError, ProxyBatchError)


# Messages of failures that come from the machine, not from the architecture being scored.
_ENVIRONMENT_PATTERNS = ("out of memory", "cuda", "gpu", "not compiled with", "mps backend",
                         "can't allocate memory", "cannot allocate memory", "allocator",
                         "nccl", "cudnn", "driver")


def is_environment_failure(err: BaseException) -> bool:
    """Whether ``err`` says the machine could not score (no device, out of memory, a file
    system error) rather than that this architecture cannot be scored: such failures are
    retried on the next run instead of being recorded for good."""
    if isinstance(err, (MemoryError, OSError)):
        return True
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    text = f"{type(err).__name__} {err}".lower()
    return any(p in text for p in _ENVIRONMENT_PATTERNS)


def describe_failure(err: BaseException) -> str:
    """The journal's one-line record of an exception, marked if the machine caused it."""
    if os.environ.get("ZCPROXY_DEBUG"):
        traceback.print_exception(err)
    message = f"{type(err).__name__}: {err}".replace("\n", " ")[:500]
    return ENVIRONMENT + message if is_environment_failure(err) else message
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
                  done: set[tuple[int, str]], arches: Sequence[str]) -> list[Task]:
    """(index, its arch, proxies still missing) for every architecture with work left, in
    order; ``arches`` is the benchmark's arch column."""
    tasks = []
    for index in indices:
        missing = tuple(p for p in proxies if (int(index), p) not in done)
        if missing:
            tasks.append((int(index), str(arches[int(index)]), missing))
    return tasks


def run_scoring(job: ScoringJob, indices: Sequence[int], journal_path: str | os.PathLike, *,
                workers: int = 1, progress: bool = True, executor=None,
                retry_failed: bool = False,
                notify: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Score ``indices`` into the journal, skipping what it already holds; returns the journal.

    Where the work runs is an :class:`~zcproxy.executors.Executor`: by default this process
    (``workers=1``) or a pool of ``workers`` spawned processes (so it works with CUDA too;
    ``job.threads`` torch threads each, default ``cores // workers``); pass
    ``executor=RayExecutor(...)`` for a Ray cluster.  Rows are journaled as each architecture
    (or chunk, on Ray) comes back, so an interrupted run loses at most the work in flight.
    An executor passed in is left open for reuse; one made here is closed.

    An existing journal is reused only if it was scored with the same settings and for the
    same data (:class:`SettingsMismatch` otherwise, naming the difference) and each of its rows
    names the architecture its index has now.  Environment failures are scored again, and
    architecture failures too with ``retry_failed``.  ``notify`` receives one line saying what
    was reused or retried.
    """
    from .executors import make_executor
    settings, bench = run_settings(job)
    # Workers check their own image batch against the one the journal will record.
    job = replace(job, inputs_fingerprint=settings["inputs_fingerprint"])
    table = bench.table(job.dataset)
    indices = [int(i) for i in indices]
    own = executor is None
    if own:
        executor = make_executor("local", workers=workers)
    session = session_record(job, executor)
    with executor if own else contextlib.nullcontext():  # one passed in is left open
        with Journal(journal_path, settings, session=session) as journal:
            if journal.legacy:
                raise JournalError(
                    f"{journal.path} was written by zcproxy 0.1: it has no settings record and "
                    "no architecture per row, so its scores cannot be checked against the "
                    "current data; `--adopt` checks and converts it, `--fresh` rescores")
            clash = settings_differences(journal.settings, settings)
            if clash:
                raise SettingsMismatch(f"{journal.path} holds scores made with other settings "
                                       f"({'; '.join(clash)}); use another --out folder, or "
                                       "--fresh to rescore")
            frame, carried = carry_over(journal.read())
            check_architectures(frame, table, journal.path)
            versions = proxy_versions(job.proxies)
            done = done_pairs(frame, retry_failed, versions)
            tasks = pending_tasks(indices, job.proxies, done, table["arch"].to_numpy())
            if notify is not None:
                for sentence in carried:
                    notify(sentence)
                _note_reuse(notify, frame, indices, tasks, journal.path, retry_failed, versions)
                if tasks:
                    _note_other_sessions(notify, journal.sessions(), session)
            bar = tqdm(total=len(indices), initial=len(indices) - len(tasks), unit="arch",
                       desc=f"{job.bench} {','.join(job.proxies)}", disable=not progress,
                       dynamic_ncols=True)
            if tasks:
                for rows in executor.run(job, tasks):
                    journal.append(rows)
                    bar.update(1)
            bar.close()
            return carry_over(journal.read())[0]


# What a bit-exact score depends on beyond the settings (``benchmarks/THREADS.md``).
EXACTNESS_KEYS = ("device", "torch", "threads_per_worker")


def session_record(job: ScoringJob, executor) -> dict:
    """The journal's record of this run: when, and the device, torch build, executor and
    threads per worker its scores were computed with. ``run`` is a random id: two shards
    started in the same second on one machine are otherwise equal records, and a merge, which
    lists each run once, must not take them for one run."""
    return {"run": uuid.uuid4().hex[:12],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": str(job.device), "torch": torch.__version__, **executor.layout(job)}


def scored_with(sessions: Sequence[dict]) -> list[dict]:
    """The distinct (device, torch, threads per worker) of a journal's sessions, in order;
    ``{"unrecorded": True}`` for rows older than session records."""
    seen: list[dict] = []
    for session in sessions:
        entry = ({"unrecorded": True} if session.get("unrecorded")
                 else {key: session.get(key) for key in EXACTNESS_KEYS})
        if entry not in seen:
            seen.append(entry)
    return seen


def _note_other_sessions(notify: Callable[[str], None], sessions: Sequence[dict],
                         now: dict) -> None:
    mine = {key: now.get(key) for key in EXACTNESS_KEYS}
    other = [s for s in scored_with(sessions) if s != mine and not s.get("unrecorded")]
    if other:
        then = "; ".join(", ".join(f"{k} {s[k]}" for k in EXACTNESS_KEYS) for s in other)
        notify(f"this journal also holds scores computed with {then}; this run uses "
               f"{', '.join(f'{k} {mine[k]}' for k in EXACTNESS_KEYS)}: the new scores may "
               "differ from those in the last bits, never in rank (benchmarks/THREADS.md)")


def carry_over(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(``frame`` with every row of an older proxy version that the current definition keeps
    unchanged relabelled as the current version, one sentence per proxy saying so).

    A proxy declares such rows in :attr:`zcproxy.registry.Proxy.carries_over` (e.g. a looser
    undefined-limit keeps every finite score): they are reused instead of rescored, out loud;
    the file keeps the version they were computed under.
    """
    versions = proxy_versions(list(dict.fromkeys(frame["proxy"])))
    said, relabel = [], pd.Series(False, index=frame.index)
    for proxy, version in versions.items():
        for older, unchanged in get_proxy(proxy).carries_over.items():
            mine = (frame["proxy"] == proxy) & (frame["version"] == older)
            if not mine.any():
                continue
            rows = frame[mine]  # the predicate is asked of this proxy's old rows only
            keep = pd.Series([bool(unchanged(float(v), str(e))) for v, e in zip(
                rows["score"], rows["error"].fillna(""))], index=rows.index).reindex(
                frame.index, fill_value=False)
            if keep.any():
                relabel |= keep
                others = int((mine & ~keep).sum())
                said.append(f"reusing {int(keep.sum()):,} {proxy} scores of definition version "
                            f"{older} as version {version}, which gives them unchanged"
                            + (f" ({others:,} other version-{older} row(s) it may not)"
                               if others else ""))
    if not relabel.any():
        return frame, said
    frame = frame.copy()
    frame.loc[relabel, "version"] = frame.loc[relabel, "proxy"].map(versions)
    return frame, said


def split_stale(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """(rows of the current definition of their proxy, {proxy: what was left out}).

    A table must not show scores of an old definition under a proxy's name, nor mix two: rows
    of another version (of a proxy this run did not rescore) are left out, and said so.
    """
    versions = proxy_versions(list(dict.fromkeys(frame["proxy"])))
    current = frame["proxy"].map(versions)
    old = current.notna() & (frame["version"] != current)
    stale = {}
    for proxy, rows in frame[old].groupby("proxy"):
        found = ", ".join(sorted(set(rows["version"].replace("", "unknown"))))
        stale[proxy] = (f"{len(rows):,} scores of definition version {found}, now "
                        f"{versions[proxy]}")
    return frame[~old].reset_index(drop=True), stale


def _note_reuse(notify: Callable[[str], None], frame: pd.DataFrame, indices: list[int],
                tasks: list[Task], path: os.PathLike, retry_failed: bool,
                versions: dict[str, str]) -> None:
    touched = {i for i, _, _ in tasks}
    journaled = {int(i) for i in frame["index"]} & set(indices)
    reused, partly = len(journaled - touched), len(journaled & touched)
    lacking = (f"{partly:,} journaled architectures are scored now only for what they lack"
               if partly else "")
    if reused:
        notify(f"reusing {reused:,} scored architectures from {path}"
               + (f" ({len(touched):,} still to score)" if touched else "")
               + (f"; {lacking}" if lacking else ""))
    elif lacking:  # said even when every journaled architecture lacks some proxy
        notify(f"reusing {path}: {lacking}")
    kinds = frame["error"].map(error_kind)
    retried = frame[kinds.isin(("environment", "failed") if retry_failed else ("environment",))
                    & frame["index"].isin(touched)]
    if len(retried):
        notify(f"retrying {retried['index'].nunique():,} architectures whose scoring failed "
               f"(e.g. index {int(retried['index'].iat[0])}: {retried['error'].iat[0][:120]})")
    current = frame["proxy"].map(versions)
    outdated = frame[current.notna() & (frame["version"] != current)
                     & frame["index"].isin(touched)]
    for proxy, rows in outdated.groupby("proxy"):
        notify(f"rescoring {len(rows):,} {proxy} scores recorded under definition version "
               f"{', '.join(sorted(set(rows['version'].replace('', 'unknown'))))} (now "
               f"{versions[proxy]})")


ERRORS_SEPARATOR = " | "


def wide_scores(journal: pd.DataFrame, bench, dataset: str, proxies: Sequence[str],
                indices: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per architecture: index, arch, accuracy, params, one column per proxy and a
    ``seconds_<proxy>`` column per proxy.  A failed score is NaN, an undefined one ±inf or NaN,
    and ``errors`` gives the reason for each, as ``proxy: reason`` in column order separated
    by ``" | "`` (for reading: a reason may hold any text)."""
    table = bench.table(dataset)
    scores = journal.pivot(index="index", columns="proxy", values="score")
    seconds = journal.pivot(index="index", columns="proxy", values="seconds")
    failed = journal[(journal["error"].fillna("") != "") & journal["proxy"].isin(proxies)]
    rank = {p: at for at, p in enumerate(proxies)}
    failed = failed.assign(at=failed["proxy"].map(rank)).sort_values(["index", "at"])
    # Each message names its proxy: the same reason ("the NTK is singular") reads differently
    # under different proxies, and a reader of one row must know which columns are not finite
    # and why.  Reasons contain "; " themselves, hence " | " between proxies.
    errors = (failed["proxy"] + ": " + failed["error"]).groupby(failed["index"]).agg(
        ERRORS_SEPARATOR.join)
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

