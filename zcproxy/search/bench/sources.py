"""Where a benchmark search gets its scores: computed live, or looked up in a score table.

Both sources answer the same question -- the scores of architecture ``index`` for some proxies,
and the seconds charged for them -- so a search cannot tell them apart, and for the same seed
the two give the same trajectory (the tests check it).  That holds because live scoring goes
through the runner's :class:`~zcproxy.runner.Worker`, i.e. exactly what ``python -m
zcproxy.correlate`` ran to fill the tables: the network is built under
``ScoringJob.arch_seed(index)`` and scored with the same real-data batch.

Cached mode (NASLib's zero-cost API works the same way) reads ``correlate`` outputs: a folder
(its ``journal.csv``, else ``scores.csv``), a ``scores.csv`` or a journal file; several may be
given and are merged, later ones filling what earlier ones lack.  A score recorded as a failure
(NaN / -inf with an error) is a score like any other: the live scorer would have produced it
too.  Scores of a proxy's older definition are not: journal rows name their version, a
``scores.csv`` has its run.json's ``proxy_versions``, and :func:`current_definitions` keeps
only the current definition (saying what it left out), as ``correlate`` does for its tables.  If the tables cover only part of the benchmark (a 1,000-cell sample), a search can only
move inside that part: :attr:`ScoreTable.covered` says which architectures it may visit.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd


class ScoresMissing(KeyError):
    """A score table lacks a proxy, or an architecture, that the search needs."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def read_journal_frame(path: str | os.PathLike) -> pd.DataFrame:
    """A score journal (``index,proxy,score,seconds,error``) read without touching the file: a
    journal still being written may end in a torn line, which is dropped here (never cut), and
    the session lines each run appends between rows are skipped."""
    from ...journal import csv_part
    data = Path(path).read_text(encoding="utf-8", errors="replace")
    if data and not data.endswith("\n"):
        data = data[:data.rfind("\n") + 1]
    skip = 1 if data.startswith("#") else 0  # a settings record (journals newer than 0.1)
    text, _sessions, _lines = csv_part(data, skip, str(path))
    frame = pd.read_csv(io.StringIO(data if text is None else text),
                        skiprows=skip if text is None else 0,
                        dtype={"index": "int64", "proxy": str, "error": str,
                               "arch": str, "version": str},
                        keep_default_na=False,
                        na_values={"score": ["nan", "NaN", ""], "seconds": ["nan", "NaN", ""]})
    missing = {"index", "proxy", "score"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} is not a score journal: no column(s) {sorted(missing)}")
    if "seconds" not in frame:
        frame["seconds"] = np.nan
    return frame.drop_duplicates(["index", "proxy"], keep="last")


def current_definitions(frame: pd.DataFrame, source: str, *,
                        unversioned_may_be_current: bool = True
                        ) -> tuple[pd.DataFrame, list[str]]:
    """The rows of a score journal (or of a ``scores.csv`` in its layout, versioned by its
    run.json) that are of each proxy's current definition, and one
    sentence per proxy on what was reused or left out: a search never ranks scores of two
    definitions of a proxy against each other (the rule ``correlate`` applies to its tables).

    Rows of an older version that the current one keeps (:attr:`Proxy.carries_over`) count as
    current.  Rows that record no version (a search's live journal from before they did) are
    kept for proxies that have only ever had one definition (version 1); the others are left
    out, so they are scored again (a ``scores.csv`` written before its run.json recorded
    versions is read by the same rule).  In a journal that records its settings, a row
    without a version is one whose definition ``--adopt`` could not confirm:
    ``unversioned_may_be_current=False`` leaves such rows out, as ``correlate`` rescores them.
    """
    from ...registry import proxy_versions
    from ...runner import carry_over, split_stale
    version = frame["version"] if "version" in frame else pd.Series("", index=frame.index)
    known = proxy_versions(list(dict.fromkeys(frame["proxy"])))
    only_ever_one = frame["proxy"].map(
        lambda p: unversioned_may_be_current and known.get(p) == "1")
    frame = frame.assign(version=version.where((version != "") | ~only_ever_one, "1"))
    frame, said = carry_over(frame)
    frame, stale = split_stale(frame)
    said += [f"left out {what} of {proxy}" for proxy, what in stale.items()]
    return frame, [f"{source}: {sentence}" for sentence in said]


def _journal_from_wide(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A ``scores.csv`` (one row per architecture) in the journal's long layout."""
    if "index" not in frame:
        raise ValueError(f"{path} has no 'index' column: is it a correlate scores.csv?")
    reserved = {"index", "arch", "accuracy", "params", "errors"}
    proxies = [c for c in frame.columns if c not in reserved and not c.startswith("seconds_")]
    parts = []
    arch = frame["arch"].astype(str) if "arch" in frame else ""
    for proxy in proxies:
        seconds = frame.get(f"seconds_{proxy}", pd.Series(np.nan, index=frame.index))
        parts.append(pd.DataFrame({"index": frame["index"].astype("int64"), "arch": arch,
                                   "proxy": proxy,
                                   "score": pd.to_numeric(frame[proxy], errors="coerce"),
                                   "seconds": pd.to_numeric(seconds, errors="coerce")}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["index", "proxy", "score", "seconds"])


def resolve_score_path(path: str | os.PathLike) -> Path:
    """The file a ``--scores`` argument stands for: a folder's journal.csv, else its
    scores.csv; a file as it is."""
    path = Path(path)
    if path.is_dir():
        for name in ("journal.csv", "scores.csv"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds neither journal.csv nor scores.csv: is it a "
                                "`python -m zcproxy.correlate` output folder?")
    if not path.is_file():
        raise FileNotFoundError(f"score table {path} not found")
    return path


def _settings_of(file: Path) -> dict:
    """The ``run.json`` settings recorded beside a correlate output, if any."""
    record = file.parent / "run.json"
    try:
        return json.loads(record.read_text()) if record.is_file() else {}
    except (OSError, ValueError):
        return {}


class ScoreTable:
    """Proxy scores by architecture index, merged from one or more correlate outputs.

    ``values[proxy]`` and ``seconds[proxy]`` are arrays over the whole benchmark (NaN where
    nothing is recorded); ``present[proxy]`` says where a score (possibly a recorded failure)
    exists.
    """

    def __init__(self, size: int, *, bench: str | None = None,
                 arches: Sequence[str] | np.ndarray | None = None):
        self.size, self.bench = int(size), bench
        # The benchmark's architecture strings by index: rows that name their architecture are
        # checked against them, so scores of another table version are never attached.
        self.arches = None if arches is None else np.asarray(arches, dtype=object)
        self.values: dict[str, np.ndarray] = {}
        self.seconds: dict[str, np.ndarray] = {}
        self.present: dict[str, np.ndarray] = {}
        self.sources: list[str] = []
        self.settings: list[dict] = []
        # What reading the files reused or left out (older proxy versions), for the caller to say.
        self.notes: list[str] = []

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike] | str | os.PathLike, size: int, *,
                   bench: str | None = None, arches: Sequence[str] | None = None
                   ) -> "ScoreTable":
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not paths:
            raise ValueError("no score table given")
        table = cls(size, bench=bench, arches=arches)
        for given in paths:
            table.add_file(resolve_score_path(given))
        return table

    def add_file(self, file: Path) -> None:
        settings = _settings_of(file)
        if self.bench and settings.get("bench") not in (None, self.bench):
            raise ValueError(f"{file} holds {settings['bench']} scores, not {self.bench}")
        dataset = settings.get("dataset")
        if dataset is not None and self.dataset not in (None, dataset):
            raise ValueError(f"{file} holds scores of the {dataset} networks, the tables before "
                             f"it of the {self.dataset} networks: a search is guided by the "
                             "scores of one set of networks, never a mixture")
        ensembles, unversioned_may_be_current = {}, True
        if file.name == "scores.csv":  # one definition per proxy, recorded in its run.json
            from ...analysis import read_scores  # refuses a table cut short or edited
            frame = _journal_from_wide(read_scores(file.parent, check_versions=False), file)
            versions = settings.get("proxy_versions")
            versions = versions if isinstance(versions, dict) else {}
            frame["version"] = [str(versions.get(p, "")) for p in frame["proxy"]]
            frame["error"] = ""
            ensembles = settings.get("ensembles") or {}
        else:
            frame = read_journal_frame(file)
            with open(file, "rb") as handle:  # a settings record: every row names its version
                unversioned_may_be_current = handle.read(1) != b"#"
        before = frame["proxy"].value_counts()
        frame, said = current_definitions(frame, str(file),
                                          unversioned_may_be_current=unversioned_may_be_current)
        after = frame["proxy"].value_counts().reindex(before.index, fill_value=0)
        shortened = set(before.index[after < before])
        for name, members in ensembles.items():  # aggregates ranked stale members: left out
            stale = [m for m in members if m in shortened]
            if stale and name in after.index:
                frame = frame[frame["proxy"] != name]
                said.append(f"{file}: left out the aggregate {name}, which ranks "
                            f"{', '.join(stale)} of another definition")
        self.notes += said
        self.add_frame(frame, str(file))
        self.settings.append({"source": str(file), **settings})

    @property
    def dataset(self) -> str | None:
        """The dataset whose networks the tables scored (their run.json's), if recorded."""
        return next((s["dataset"] for s in self.settings if s.get("dataset")), None)

    def add_frame(self, frame: pd.DataFrame, source: str = "<frame>") -> None:
        """Merge a journal-layout frame; scores already held are kept (first source wins)."""
        index = frame["index"].to_numpy(dtype=np.int64)
        if len(index) and (index.min() < 0 or index.max() >= self.size):
            raise ValueError(f"{source}: index {int(index.max())} outside the benchmark "
                             f"(0..{self.size - 1}); is it another benchmark's table?")
        if self.arches is not None and "arch" in frame:
            named = frame["arch"].fillna("").astype(str).to_numpy()
            check = named != ""
            wrong = check & (named != self.arches[index])
            if wrong.any():
                at = int(np.flatnonzero(wrong)[0])
                raise ValueError(f"{source}: index {int(index[at])} is {named[at]!r} there but "
                                 f"{self.arches[index[at]]!r} in the benchmark table: the scores "
                                 "belong to another table version")
        for proxy, rows in frame.groupby("proxy", sort=False):
            where = rows["index"].to_numpy(dtype=np.int64)
            if proxy not in self.values:
                self.values[proxy] = np.full(self.size, np.nan)
                self.seconds[proxy] = np.full(self.size, np.nan)
                self.present[proxy] = np.zeros(self.size, dtype=bool)
            new = ~self.present[proxy][where]
            where = where[new]
            score = pd.to_numeric(rows["score"], errors="coerce").to_numpy()
            seconds = pd.to_numeric(rows["seconds"], errors="coerce").to_numpy()
            self.values[proxy][where] = score[new]
            self.seconds[proxy][where] = seconds[new]
            self.present[proxy][where] = True
        self.sources.append(source)

    @property
    def proxies(self) -> list[str]:
        return list(self.values)

    def covered(self, proxies: Iterable[str]) -> np.ndarray:
        """Sorted indices that have a score for every one of ``proxies``."""
        proxies = list(proxies)
        lacking = [p for p in proxies if p not in self.values]
        if lacking:
            raise ScoresMissing(f"the score table(s) {', '.join(self.sources)} hold no "
                                f"{', '.join(lacking)} scores (they have: "
                                f"{', '.join(self.proxies) or 'none'})")
        mask = np.ones(self.size, dtype=bool)
        for p in proxies:
            mask &= self.present[p]
        return np.flatnonzero(mask)

    def lookup(self, index: int, proxies: Sequence[str]) -> tuple[dict[str, float], float]:
        """(scores, recorded seconds) of one architecture."""
        out, seconds = {}, 0.0
        for p in proxies:
            if p not in self.values or not self.present[p][index]:
                raise ScoresMissing(f"no {p} score for architecture {index} in "
                                    f"{', '.join(self.sources)}")
            out[p] = float(self.values[p][index])
            s = self.seconds[p][index]
            seconds += 0.0 if math.isnan(s) else float(s)
        return out, seconds


class CachedScores:
    """Scores looked up in a :class:`ScoreTable` (``--scores``); costs what the table recorded."""

    live = False

    def __init__(self, table: ScoreTable):
        self.table = table

    def __call__(self, index: int, proxies: Sequence[str]) -> tuple[dict[str, float], float]:
        return self.table.lookup(int(index), proxies)

    def describe(self) -> str:
        return "cached: " + ", ".join(self.table.sources)


class LiveScores:
    """Scores computed now, through the runner's Worker (same per-architecture seed and data
    batch as ``correlate``), optionally journaled so that an interrupted search resumes.

    ``journal``: a score journal to append every computed score to; the scores it already holds
    are served from it (so a resumed search replays its start without rescoring and continues
    where it stopped).  ``stop_after``: raise :class:`StopScoring` before the (n+1)-th fresh
    architecture (tests, splitting work).
    """

    live = True

    def __init__(self, bench: str, proxies: Sequence[str], *, dataset: str = "cifar10",
                 seed: int = 0, batch_size: int = 64, device: str = "cpu",
                 data_dir: str | None = None, official_path: str | None = None,
                 threads: int = 0, journal: str | os.PathLike | None = None,
                 stop_after: int | None = None, exact: bool = False):
        from ...runner import ScoringJob
        self.job = ScoringJob(bench=bench, proxies=tuple(dict.fromkeys(proxies)),
                              dataset=dataset, seed=seed, device=device, data_dir=data_dir,
                              official_path=official_path, batch_size=batch_size,
                              threads=threads, tune_malloc=False, exact=exact)
        self._worker = None
        self.cache: dict[tuple[int, str], tuple[float, float]] = {}
        self.journal_path = Path(journal) if journal is not None else None
        self._journal = None  # file handle, opened on the first fresh score
        self.notes: list[str] = []  # what the journal's reading reused or left out
        if self.journal_path is not None and self.journal_path.exists():
            frame, self.notes = current_definitions(read_journal_frame(self.journal_path),
                                                    str(self.journal_path))
            for i, p, s, sec in frame[["index", "proxy", "score", "seconds"]].itertuples(
                    index=False, name=None):
                self.cache[(int(i), str(p))] = (float(s), float(sec))
        self.fresh = 0
        self.stop_after = stop_after

    @property
    def worker(self):
        if self._worker is None:
            from ...runner import Worker
            self._worker = Worker(self.job)
        return self._worker

    def __call__(self, index: int, proxies: Sequence[str]) -> tuple[dict[str, float], float]:
        index = int(index)
        missing = tuple(p for p in proxies if (index, p) not in self.cache)
        if missing:
            unknown = set(missing) - set(self.job.proxies)
            if unknown:
                raise ValueError(f"live scoring was set up for {self.job.proxies}, not "
                                 f"{sorted(unknown)}")
            if self.stop_after is not None and self.fresh >= self.stop_after:
                raise StopScoring(f"stopped after {self.fresh} freshly scored architectures")
            rows = worker_rows(self.worker, index, missing)
            self.fresh += 1
            if self.journal_path is not None:
                self._append(rows)
            for i, p, value, seconds, _error in rows:
                self.cache[(int(i), p)] = (float(value), float(seconds))
        scores = {p: self.cache[(index, p)][0] for p in proxies}
        return scores, float(sum(self.cache[(index, p)][1] for p in proxies))

    def _append(self, rows: list[tuple]) -> None:
        """Append rows to the search's own score journal (``LIVE_COLUMNS``, with each proxy's
        definition version; flushed per architecture; a torn last line is dropped by the
        reader).  A journal from before versions were recorded is first rewritten, atomically,
        with an empty version on its old rows."""
        if self._journal is None:
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.journal_path.exists() or self.journal_path.stat().st_size == 0
            if not new:
                _add_version_column(self.journal_path)
            self._journal = open(self.journal_path, "a", newline="", encoding="utf-8")
            if new:
                self._journal.write(",".join(LIVE_COLUMNS) + "\n")
        writer = csv.writer(self._journal)
        versions = self.worker.versions
        for index, proxy, value, seconds, error in rows:
            writer.writerow([index, proxy, versions.get(proxy, ""),
                             "nan" if math.isnan(value) else repr(float(value)),
                             f"{seconds:.6f}", error])
        self._journal.flush()

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def describe(self) -> str:
        return (f"live: {self.job.bench}, seed {self.job.seed}, batch {self.job.batch_size}, "
                f"{self.job.device}")


LIVE_COLUMNS = ["index", "proxy", "version", "score", "seconds", "error"]


def _add_version_column(path: Path) -> None:
    """Rewrite a live score journal of the layout without versions in ``LIVE_COLUMNS``'s."""
    with open(path, newline="", encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
        if "version" in header:
            return
        rows = list(csv.reader(fh))
    if rows and len(rows[-1]) != len(header):  # a torn last line, as the reader drops it
        rows.pop()
    from ...atomic import atomic_write
    with atomic_write(path, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(LIVE_COLUMNS)
        for row in rows:
            record = dict(zip(header, row))
            writer.writerow([record.get(c, "") for c in LIVE_COLUMNS])


def worker_rows(worker, index: int, proxies: Sequence[str]) -> list[tuple]:
    """``worker.score`` for one architecture, as (index, proxy, score, seconds, error) rows.

    Workers that check the architecture string a task names (their rows carry it too) get it
    from their own table: the search asks by index, and index and table are the worker's.
    """
    arches = getattr(worker, "arches", None)
    task = (index, str(arches[index]), tuple(proxies)) if arches is not None else (
        index, tuple(proxies))
    from ... import journal
    names = [list(getattr(journal, "COLUMNS", ())), list(getattr(journal, "LEGACY_COLUMNS", ())),
             ["index", "proxy", "score", "seconds", "error"]]
    out = []
    for row in worker.score(task):
        fields = next((dict(zip(n, row)) for n in names if len(n) == len(row)), None)
        if fields is None or not {"index", "proxy", "score", "seconds"} <= set(fields):
            raise TypeError(f"unexpected scoring row layout {row!r}")
        out.append((int(fields["index"]), str(fields["proxy"]), float(fields["score"]),
                    float(fields["seconds"]), str(fields.get("error", ""))))
    return out


class StopScoring(RuntimeError):
    """Raised by :class:`LiveScores` when ``stop_after`` fresh architectures were scored."""




class HybridScores:
    """Cached scores where a table has them, live scores (journaled) for the proxies it lacks
    (``--live-missing``: e.g. structural baselines a score table was computed without)."""

    def __init__(self, cached: CachedScores, live: LiveScores | None):
        self.cached, self.live = cached, live
        self.live_proxies: set[str] = set()

    def split(self, proxies: Sequence[str]) -> tuple[list[str], list[str]]:
        have = set(self.cached.table.proxies)
        return [p for p in proxies if p in have], [p for p in proxies if p not in have]

    def __call__(self, index: int, proxies: Sequence[str]) -> tuple[dict[str, float], float]:
        cached, missing = self.split(proxies)
        scores, seconds = self.cached(index, cached) if cached else ({}, 0.0)
        if missing:
            if self.live is None:
                raise ScoresMissing(f"the score table(s) hold no {', '.join(missing)} scores; "
                                    "pass --live-missing to compute them live")
            self.live_proxies.update(missing)
            more, extra = self.live(index, missing)
            scores.update(more)
            seconds += extra
        return {p: scores[p] for p in proxies}, seconds

    def close(self) -> None:
        if self.live is not None:
            self.live.close()

    def describe(self) -> str:
        text = self.cached.describe()
        if self.live is not None:
            text += f"; live for proxies the tables lack ({self.live.describe()})"
        return text


__all__ = ["ScoreTable", "CachedScores", "LiveScores", "HybridScores", "ScoresMissing",
           "StopScoring", "current_definitions", "read_journal_frame", "resolve_score_path",
           "worker_rows"]
