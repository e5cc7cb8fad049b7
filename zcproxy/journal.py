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

A journal also says *where* its scores were computed, because the bit-exact path is exact only
for one device, torch build and number of threads per worker (``benchmarks/THREADS.md``), which
are not settings (a journal may be continued with other ``--workers``/``--threads``, and the
scores agree in rank): each run that appends writes a ``# zcproxy session {...}`` line before
its first row (start time, device, torch version, executor, workers, threads per worker).
:func:`read_sessions` lists them in order; rows below a session line, up to the next one, were
appended by that run, except in a merged journal, which lists its shards' sessions at the top.

The ``error`` column classifies each row (see :func:`error_kind`): empty for a score;
``undefined (...)`` or ``non-finite ...`` for a proxy that is undefined on that network (a
result, kept); ``environment: ...`` for a failure of the machine rather than the architecture
(no GPU, out of memory, a worker killed), which a rerun retries; anything else is the
exception a proxy raised on that architecture, retried only with ``retry_failed``.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .atomic import atomic_write, exclusive_use

COLUMNS = ["index", "arch", "proxy", "version", "score", "seconds", "error"]
LEGACY_COLUMNS = ["index", "proxy", "score", "seconds", "error"]
SETTINGS_PREFIX = "# zcproxy journal "
SESSION_PREFIX = "# zcproxy session "
UNRECORDED_SESSION = {"unrecorded": True}  # rows appended before journals recorded sessions
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
                 session: dict | None = None, sync_interval: float = 1.0):
        self.path = Path(path)
        self.sync_interval = sync_interval
        self.session = session  # written before this open's first appended row
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
        return _read_rows(self.path, self.legacy)[0]

    def sessions(self) -> list[dict]:
        """The runs that appended to this journal, as :func:`read_sessions` gives them."""
        if self._fh is not None:
            self._fh.flush()
        return _read_rows(self.path, self.legacy)[1]

    def append(self, rows: Iterable[Row]) -> None:
        if self.legacy:
            raise JournalError(f"{self.path} was written by zcproxy 0.1 (no settings, no arch "
                               "per row); convert it with `python -m zcproxy.correlate ... "
                               "--adopt` before adding to it")
        if self._fh is None:
            self._fh = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.writer(self._fh)
            if self.session is not None:
                self._fh.write(_session_line(self.session))
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
    """(index, proxy) pairs not to compute again: scores and undefined results, and
    architecture failures unless ``retry_failed``; environment failures never count, nor rows
    of a proxy version other than ``versions`` gives (proxies it lacks: any).  The runner
    passes rows after :func:`zcproxy.runner.carry_over`, so kept older rows count."""
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
    return settings, _read_rows(path, legacy)[0]


def read_sessions(path: str | os.PathLike) -> list[dict]:
    """The session record of every run that appended to the journal at ``path``, oldest first;
    rows written before any session line (journals older than session records) appear as one
    :data:`UNRECORDED_SESSION` entry in their place."""
    path = Path(path)
    settings, legacy = _read_head(path)
    if settings is None and not legacy:
        return []
    return _read_rows(path, legacy)[1]


def write_journal(path: str | os.PathLike, settings: dict, rows: Iterable[Row],
                  sessions: Iterable[dict] = ()) -> Path:
    """Write a whole journal at once, atomically (merging shards, converting a legacy one);
    ``sessions`` (the sources' session records) are listed above the rows."""
    with atomic_write(path, newline="") as fh:
        fh.write(SETTINGS_PREFIX + json.dumps(settings, sort_keys=True) + "\n")
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for session in sessions:
            fh.write(_session_line(session))
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


def _session_line(session: dict) -> str:
    return SESSION_PREFIX + json.dumps(session, sort_keys=True) + "\n"


def csv_part(data: str, skip: int, where: str = "journal"
             ) -> tuple[str | None, list[dict], np.ndarray | None]:
    """Split a journal's text into (the CSV to parse, or None when it holds no session line and
    can be parsed as it is; the session records; the file line of each row, None likewise).

    ``skip`` is the number of lines above the CSV header (1: the settings record; 0: a zcproxy
    0.1 or search journal).  The one place that knows which lines of a journal are records and
    not rows: :func:`read_journal` and a search's tolerant reader
    (:func:`zcproxy.search.bench.sources.read_journal_frame`) both go through it.
    """
    if "\n" + SESSION_PREFIX not in data:
        return None, [], None
    lines = data.splitlines(keepends=True)
    kept, row_lines, sessions = [], [], []
    for number, line in enumerate(lines[skip:], start=skip + 1):
        if line.startswith(SESSION_PREFIX):
            try:
                sessions.append(json.loads(line[len(SESSION_PREFIX):]))
            except json.JSONDecodeError as err:
                raise JournalError(f"{where}, line {number}: the session record is not JSON "
                                   f"({err})") from None
            continue
        if kept and not sessions:  # rows above every session line
            sessions.append(dict(UNRECORDED_SESSION))
        kept.append(line)
        row_lines.append(number)
    return "".join(kept), sessions, np.asarray(row_lines[1:], dtype=np.int64)


def _read_rows(path: Path, legacy: bool) -> tuple[pd.DataFrame, list[dict]]:
    skip = 0 if legacy else 1
    text, sessions, row_lines = csv_part(path.read_text(encoding="utf-8", errors="replace"),
                                         skip, str(path))
    try:
        raw = pd.read_csv(path if text is None else io.StringIO(text), dtype=str, keep_default_na=False,
                          skiprows=skip if row_lines is None else 0)
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
    if row_lines is None and len(raw):
        sessions = [dict(UNRECORDED_SESSION)]
    frame = raw.copy()

    def line_of(at: int) -> int:  # file line of row ``at``
        return int(row_lines[at]) if row_lines is not None else at + 2 + skip

    index = pd.to_numeric(raw["index"], errors="coerce")
    bad = index.isna() | (index != index.round())
    if bad.any():
        at = int(bad.to_numpy().nonzero()[0][0])
        raise JournalError(f"{path}, line {line_of(at)}: index {raw['index'].iat[at]!r} is "
                           "not an integer; the journal is corrupt (fix or remove that line, or "
                           "rescore with --fresh)")
    frame["index"] = index.astype("int64")
    for column in ("score", "seconds"):
        values = pd.to_numeric(raw[column], errors="coerce")
        bad = values.isna() & (raw[column].str.strip().str.lower() != "nan")
        if bad.any():
            at = int(bad.to_numpy().nonzero()[0][0])
            raise JournalError(f"{path}, line {line_of(at)}: {column} "
                               f"{raw[column].iat[at]!r} is not a number; the journal is corrupt "
                               "(fix or remove that line, or rescore with --fresh)")
        frame[column] = values.astype("float64")
    return frame.drop_duplicates(["index", "proxy"], keep="last").reset_index(drop=True), sessions


def _fmt(value: float) -> str:
    # repr round-trips floats exactly; inf/nan are written so pandas reads them back.
    if math.isnan(value):
        return "nan"
    return repr(float(value))
