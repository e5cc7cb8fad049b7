"""An append-only score journal: the resumable record of a long scoring run.

One CSV line per (architecture, proxy) as soon as it is computed, flushed to the operating
system at once, so killing the run (Ctrl-C, SIGKILL, a crash) loses at most the line being
written.  ``fsync`` (which guards against the machine itself going down) runs at most once per
``sync_interval`` seconds and on close: per architecture it cost 7 ms of disk wait on a run that
journals six architectures a second.  On reopening, a torn last line (the process died
mid-write) is cut off and reported; every complete line is kept, and ``done`` tells the runner
what not to recompute.
"""
from __future__ import annotations

import csv
import math
import os
import time
import warnings
from pathlib import Path

import pandas as pd

COLUMNS = ["index", "proxy", "score", "seconds", "error"]


class Journal:
    def __init__(self, path: str | os.PathLike, *, sync_interval: float = 1.0):
        self.path = Path(path)
        self.sync_interval = sync_interval
        self._synced = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._fh = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh)
        if self.path.stat().st_size == 0:
            self._writer.writerow(COLUMNS)
            self._fh.flush()

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
        if data and not data.startswith(",".join(COLUMNS).encode()):
            raise ValueError(f"{self.path} is not a zcproxy score journal (header should be "
                             f"{','.join(COLUMNS)}); use another --out folder")

    def read(self) -> pd.DataFrame:
        self._fh.flush()
        frame = pd.read_csv(self.path, dtype={"index": "int64", "proxy": str, "error": str})
        return frame.drop_duplicates(["index", "proxy"], keep="last")

    def done(self) -> set[tuple[int, str]]:
        """(index, proxy) pairs already recorded, successes and recorded failures alike."""
        frame = self.read()
        return set(zip(frame["index"].tolist(), frame["proxy"].tolist()))

    def append(self, rows: list[tuple[int, str, float, float, str]]) -> None:
        for index, proxy, score, seconds, error in rows:
            self._writer.writerow([index, proxy, _fmt(score), f"{seconds:.6f}", error])
        self._fh.flush()
        if time.monotonic() - self._synced >= self.sync_interval:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._fh.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._sync()
            self._fh.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(value: float) -> str:
    # repr round-trips floats exactly; inf/nan are written so pandas reads them back.
    if math.isnan(value):
        return "nan"
    return repr(float(value))

