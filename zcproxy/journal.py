"""An append-only score journal: the resumable record of a long scoring run.

One CSV line per (architecture, proxy) as soon as it is computed, flushed to the operating
system at once, so killing the run (Ctrl-C, SIGKILL, a crash) loses at most the line being
written.  ``fsync`` (which guards against the machine itself going down) runs at most once per
``sync_interval`` seconds and on close: per architecture it cost 7 ms of disk wait on a run that
journals six architectures a second.  On reopening, a torn last line (the process died
mid-write) is cut off and reported; every complete line is kept, and ``done`` tells the runner
what not to recompute.

A journal says what its scores mean, so that they are never attached to the wrong thing:

* its first line is the settings record it was scored with (``# zcproxy journal {...}``: the
  benchmark, dataset, seed, batch size, and fingerprints of the accuracy table and the data
  batch), so a journal copied elsewhere, or a shard merged with others, can be checked against
  the run that wants to reuse it;
* every row names the architecture string it was computed for, beside the index, so a changed
  benchmark table (another data folder or version) is noticed row by row, and the version of
  the proxy's definition (:attr:`zcproxy.registry.Proxy.version`), so a score of an older
  definition is scored again instead of being mixed with the current one.

Journals of zcproxy 0.1 (header ``index,proxy,score,seconds,error``) stay readable, but a run
never appends to one: ``python -m zcproxy.correlate --adopt`` checks and converts it first.

The ``error`` column classifies each row (see :func:`error_kind`): empty for a score;
``undefined (...)`` or ``non-finite ...`` for a proxy that is undefined on that network (a
result, kept); ``environment: ...`` for a failure of the machine rather than the architecture
(no GPU, out of memory, a worker killed), which a rerun retries; anything else is the
exception a proxy raised on that architecture, retried only with ``retry_failed``.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Iterable

import pandas as pd

from .atomic import atomic_write, exclusive_use

COLUMNS = ["index", "arch", "proxy", "version", "score", "seconds", "error"]
LEGACY_COLUMNS = ["index", "proxy", "score", "seconds", "error"]
SETTINGS_PREFIX = "# zcproxy journal "
ENVIRONMENT = "environment: "

Row = tuple[int, str, str, str, float, float, str]  # index, arch, proxy, version, score, s, error


class JournalError(ValueError):
    """A journal that cannot be used as it is: not a journal, corrupt, legacy, or foreign."""


def error_kind(error: str) -> str:
    """``"ok"``, ``"undefined"`` (a result: the proxy is undefined there), ``"environment"``
    (retried on every rerun) or ``"failed"`` (the architecture made a proxy raise)."""
    if not error:
        return "ok"
    if error.startswith(("undefined (", "non-finite score")):
        return "undefined"
    if error.startswith(ENVIRONMENT):
        return "environment"
    return "failed"


class Journal:
    """Open (or create, recording ``settings``) the journal at ``path`` for appending.

    One process at a time (:func:`journal_in_use`, held until :meth:`close`): a second run on
    the same journal stops with :class:`~zcproxy.atomic.FileInUse` before it reads anything,
    instead of scoring the same architectures twice and interleaving its rows, or repairing
    a "torn" line the first one is still writing.
    """

    def __init__(self, path: str | os.PathLike, settings: dict | None = None, *,
                 sync_interval: float = 1.0):
        self.path = Path(path)
        self.sync_interval = sync_interval
        self._synced = time.monotonic()
        self._fh = None
        self._writer = None
        self._lock = contextlib.ExitStack()
        try:
            self._lock.enter_context(journal_in_use(self.path))
            self._repair()
            self.settings, self.legacy = _read_head(self.path)
            if self.settings is None and not self.legacy:  # a new (or empty) journal
                if settings is None:
                    raise JournalError(f"{self.path}: a new journal needs the settings it is "
                                       "scored with")
                write_journal(self.path, settings, [])  # atomic: never a head without header
                self.settings = dict(settings)
        except BaseException:
            self._lock.close()
            raise

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            warnings.warn(f"{self.path}: dropped an incomplete last line "
                          f"({len(data) - cut} bytes) left by an interrupted run", RuntimeWarning)
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)

    def read(self) -> pd.DataFrame:
        """Every row (the last one of each (index, proxy) pair), checked column by column."""
        if self._fh is not None:
            self._fh.flush()
        return _read_rows(self.path, self.legacy)

    def done(self, retry_failed: bool = False,
             versions: dict[str, str] | None = None) -> set[tuple[int, str]]:
        """(index, proxy) pairs not to compute again: scores and undefined results, and
        architecture failures unless ``retry_failed``; environment failures never count, nor
        rows of a proxy version other than ``versions`` gives (proxies it lacks: any)."""
        return done_pairs(self.read(), retry_failed, versions)

    def append(self, rows: Iterable[Row]) -> None:
        if self.legacy:
            raise JournalError(f"{self.path} was written by zcproxy 0.1 (no settings, no arch "
                               "per row); convert it with `python -m zcproxy.correlate ... "
                               "--adopt` before adding to it")
        if self._fh is None:
            self._fh = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.writer(self._fh)
        for index, arch, proxy, version, score, seconds, error in rows:
            self._writer.writerow([index, arch, proxy, version, _fmt(score), f"{seconds:.6f}",
                                   error])
        self._fh.flush()
        if time.monotonic() - self._synced >= self.sync_interval:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._fh.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        try:
            if self._fh is not None and not self._fh.closed:
                self._fh.flush()
                self._sync()
                self._fh.close()
        finally:
            self._lock.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def journal_in_use(path: str | os.PathLike) -> contextlib.AbstractContextManager:
    """Hold the journal at ``path`` against other processes for the block (re-entrant within
    this one): scoring into it, merging shards into it, converting it or discarding it."""
    return exclusive_use(path, "a correlate run or --merge on the same journal")


def done_pairs(frame: pd.DataFrame, retry_failed: bool = False,
               versions: dict[str, str] | None = None) -> set[tuple[int, str]]:
    """What :meth:`Journal.done` says, for rows already read."""
    kinds = frame["error"].map(error_kind)
    keep = kinds.isin(("ok", "undefined") if retry_failed else ("ok", "undefined", "failed"))
    if versions:
        current = frame["proxy"].map(versions)
        keep &= current.isna() | (frame["version"] == current)
    frame = frame[keep]
    return set(zip(frame["index"].tolist(), frame["proxy"].tolist()))


def read_journal(path: str | os.PathLike) -> tuple[dict | None, pd.DataFrame]:
    """(settings record or None for a zcproxy 0.1 journal, rows) without changing the file.

    Rows are as :meth:`Journal.read` returns them; a legacy journal's ``arch`` and
    ``version`` are empty.
    """
    path = Path(path)
    settings, legacy = _read_head(path)
    if settings is None and not legacy:
        raise JournalError(f"{path} is empty: not a score journal")
    return settings, _read_rows(path, legacy)


def write_journal(path: str | os.PathLike, settings: dict, rows: Iterable[Row]) -> Path:
    """Write a whole journal at once, atomically (merging shards, converting a legacy one)."""
    with atomic_write(path, newline="") as fh:
        fh.write(SETTINGS_PREFIX + json.dumps(settings, sort_keys=True) + "\n")
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for index, arch, proxy, version, score, seconds, error in rows:
            writer.writerow([index, arch, proxy, version, _fmt(score), f"{seconds:.6f}", error])
    return Path(path)


def _read_head(path: Path) -> tuple[dict | None, bool]:
    """(settings, legacy) from the first lines; (None, False) for a missing or empty file."""
    if not path.exists() or path.stat().st_size == 0:
        return None, False
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().rstrip("\r\n")
        second = fh.readline().rstrip("\r\n")
    if first == ",".join(LEGACY_COLUMNS):
        return None, True
    if first.startswith(SETTINGS_PREFIX):
        try:
            settings = json.loads(first[len(SETTINGS_PREFIX):])
        except json.JSONDecodeError as err:
            raise JournalError(f"{path}: the settings line is not JSON ({err})") from None
        if not isinstance(settings, dict) or second not in ("", ",".join(COLUMNS)):
            raise JournalError(f"{path}: malformed journal head; expected the settings line, "
                               f"then {','.join(COLUMNS)}")
        return settings, False
    raise JournalError(f"{path} is not a zcproxy score journal (it begins {first[:60]!r}); "
                       "use another --out folder")


def _read_rows(path: Path, legacy: bool) -> pd.DataFrame:
    skip = 0 if legacy else 1
    try:
        raw = pd.read_csv(path, skiprows=skip, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise JournalError(f"{path} is corrupt: {' '.join(str(err).split())}") from None
    except pd.errors.EmptyDataError:
        raw = pd.DataFrame(columns=LEGACY_COLUMNS if legacy else COLUMNS)
    expected = LEGACY_COLUMNS if legacy else COLUMNS
    if list(raw.columns) != expected:
        raise JournalError(f"{path}: columns {list(raw.columns)}, expected {expected}")
    if legacy:
        raw.insert(1, "arch", "")
        raw.insert(3, "version", "")
    frame = raw.copy()
    first_line = 2 + skip  # file line of the first row
    index = pd.to_numeric(raw["index"], errors="coerce")
    bad = index.isna() | (index != index.round())
    if bad.any():
        at = int(bad.to_numpy().nonzero()[0][0])
        raise JournalError(f"{path}, line {at + first_line}: index {raw['index'].iat[at]!r} is "
                           "not an integer; the journal is corrupt (fix or remove that line, or "
                           "rescore with --fresh)")
    frame["index"] = index.astype("int64")
    for column in ("score", "seconds"):
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = values.isna() & (raw[column].str.strip().str.lower() != "nan")
        if bad.any():
            at = int(bad.to_numpy().nonzero()[0][0])
            raise JournalError(f"{path}, line {at + first_line}: {column} "
                               f"{raw[column].iat[at]!r} is not a number; the journal is corrupt "
                               "(fix or remove that line, or rescore with --fresh)")
        frame[column] = values.astype("float64")
    return frame.drop_duplicates(["index", "proxy"], keep="last").reset_index(drop=True)


def _fmt(value: float) -> str:
    # repr round-trips floats exactly; inf/nan are written so pandas reads them back.
    if math.isnan(value):
        return "nan"
    return repr(float(value))
