"""The search log (``log.jsonl``): one JSON event per line, and its replay on resume.

Events, in the order they happen:

``start``        the configuration (a resumed run must use the same one)
``phase_start``  index, name, kind of genes mutated, guiding score, population/tournament sizes
``candidate``    every evaluated candidate: id, phase, generation, origin, parents (ids),
                 genes, params, MACs, scores, scoring seconds, cached?, phase clock, search
                 clock, wall time
``phase_end``    how many candidates the phase evaluated and its clock when it stopped
``done``         the chosen architecture

Why a resumed run equals an uninterrupted one: the search is a deterministic function of its
seed, the scores and *when each phase stopped*.  On resume the whole search is re-run from
the start; every candidate it proposes is checked against the logged one and takes the logged
scores (nothing is recomputed), and every phase the log saw end stops at the logged candidate
count rather than by the clock.  Once the log is exhausted, the run continues live, its phase
clock starting where the log's stopped.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from ..atomic import lock_exclusively


class ResumeMismatch(RuntimeError):
    """The log was written by a different search than the one being resumed."""


class SearchLog:
    """Append-only JSON-lines file; flushed after every event so a kill loses at most one.

    One process at a time: the log is locked before it is read (:func:`lock_exclusively`), so
    a second search on the same folder stops with :class:`~zcproxy.atomic.FileInUse` instead
    of interleaving its events with the first one's.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        try:
            lock_exclusively(self._fh, self.path, "a search with the same output folder")
            self.events = read_events(self.path, repair=True)
        except BaseException:
            self._fh.close()
            raise

    def append(self, event: dict[str, Any]) -> None:
        self._fh.write(json.dumps(event, sort_keys=True, allow_nan=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_events(path: str | os.PathLike, repair: bool = False) -> list[dict[str, Any]]:
    """Every complete event of a log.  A torn last line (killed mid-write) is dropped, and cut
    from the file when ``repair`` is set; a corrupt line elsewhere is an error naming it."""
    path = Path(path)
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        warnings.warn(f"{path}: dropped an incomplete last line ({len(data) - cut} bytes) left "
                      "by an interrupted run", RuntimeWarning)
        data = data[:cut]
        if repair:
            with open(path, "r+b") as fh:
                fh.truncate(cut)
    events = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not a JSON event ({err}); is this a search "
                             "log?") from err
        if not isinstance(event, dict) or "event" not in event:
            raise ValueError(f"{path}:{number} has no 'event' field; is this a search log?")
        events.append(event)
    if events and events[0]["event"] != "start":
        raise ValueError(f"{path} does not begin with a 'start' event; is this a search log?")
    return events


class Replay:
    """What a previous run logged, served to the re-running search in order."""

    def __init__(self, events: list[dict[str, Any]]):
        self.config = events[0]["config"] if events else None
        # The definition version of each proxy the search scored with (None: a log from before
        # they were recorded).
        self.proxy_versions = events[0].get("proxy_versions") if events else None
        self.started: set[int] = set()
        self.ended: dict[int, dict[str, Any]] = {}
        self.done = any(e["event"] == "done" for e in events)
        self._candidates: dict[int, deque[dict[str, Any]]] = defaultdict(deque)
        for e in events:
            if e["event"] == "phase_start":
                self.started.add(e["phase"])
            elif e["event"] == "phase_end":
                self.ended[e["phase"]] = e
            elif e["event"] == "candidate":
                self._candidates[e["phase"]].append(e)
        self.total = sum(len(q) for q in self._candidates.values())

    def pending(self, phase: int) -> bool:
        return bool(self._candidates.get(phase))

    def next_candidate(self, phase: int) -> dict[str, Any] | None:
        queue = self._candidates.get(phase)
        return queue.popleft() if queue else None

    def remaining(self) -> int:
        return sum(len(q) for q in self._candidates.values())
