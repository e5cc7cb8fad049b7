"""Reading committed results back for analysis (notebooks, reports): one place, no copies.

Every function takes the per-architecture score tables that ``python -m zcproxy.correlate``
writes (``results/correlate/<bench>/scores.csv``) and returns plain DataFrames.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .atomic import sha256_file
from .published import PUBLISHED
from .registry import get_proxy, proxy_versions
from .stats import kendall_tau, spearman_rho

RESULTS = Path(__file__).resolve().parents[1] / "results"


class IncompleteTable(ValueError):
    """A score table that is not the one its folder's run.json describes (cut short by a
    kill, edited, or left from another run)."""


class StaleTable(ValueError):
    """A score table whose run.json records a column under another definition of its proxy
    than the current one: showing it under the proxy's name would be a silent wrong result."""


def load_scores(bench: str, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The committed per-architecture scores of one benchmark (folder ``root/bench``)."""
    return read_scores(Path(root or RESULTS / "correlate") / bench)


def read_scores(folder: str | os.PathLike, *, proxies: Sequence[str] | None = None,
                check_versions: bool = True) -> pd.DataFrame:
    """``folder/scores.csv``, checked against the row count and SHA-256 that ``run.json``
    records for it, so a table cut at a row boundary is an error, never a smaller study.

    Folders written before zcproxy recorded them (no ``outputs`` in run.json) are read as
    they are.  A column that run.json records under another definition of its proxy than the
    current one is a :class:`StaleTable` error (only the columns in ``proxies``, when given;
    none with ``check_versions=False``, for a caller that leaves such columns out itself).
    A run.json written before zcproxy recorded versions is read as it is (the folder's
    journal.csv still names each row's version).
    """
    folder = Path(folder)
    path = folder / "scores.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python -m zcproxy.correlate --bench "
                                f"<bench> --out {folder}` first")
    expected = _recorded_output(folder, "scores.csv")
    if expected is not None and expected.get("sha256") and sha256_file(path) != expected["sha256"]:
        rows = sum(1 for _ in open(path, "rb")) - 1
        raise IncompleteTable(f"{path} is not the table {folder / 'run.json'} records "
                              f"({rows:,} rows, {expected.get('rows', '?'):,} recorded; cut short "
                              "or edited); rerun the correlate command on that folder to rewrite "
                              "it from journal.csv")
    frame = pd.read_csv(path)
    if expected is not None and expected.get("rows") not in (None, len(frame)):
        raise IncompleteTable(f"{path} has {len(frame):,} rows, run.json records "
                              f"{expected['rows']:,}; rerun the correlate command on that folder")
    stale = stale_columns(recorded_versions(folder)) if check_versions else {}
    if proxies is not None:
        stale = {p: what for p, what in stale.items() if p in proxies}
    if stale:
        raise StaleTable(f"{path} holds scores of another definition than the current one: "
                         f"{'; '.join(f'{p} {what}' for p, what in stale.items())}; rerun the "
                         "correlate command on that folder with those proxies in --proxies (it "
                         "reuses what the new definition keeps and rescores the rest)")
    return frame


def recorded_versions(folder: str | os.PathLike) -> dict[str, str] | None:
    """The definition version of each proxy column that a correlate folder's run.json records
    (``None`` for a folder written before zcproxy recorded them)."""
    versions = (run_record(folder) or {}).get("proxy_versions")
    return {str(p): str(v) for p, v in versions.items()} if isinstance(versions, dict) else None


def stale_columns(versions: Mapping[str, str] | None) -> dict[str, str]:
    """{proxy: "version X there, Y now"} for every recorded column whose proxy has another
    definition now (proxies this process does not know, plug-ins, are left alone)."""
    versions = versions or {}
    now = proxy_versions(list(versions))
    return {proxy: f"(definition version {version} there, {now[proxy]} now)"
            for proxy, version in versions.items() if proxy in now and now[proxy] != version}


def run_record(folder: str | os.PathLike) -> dict | None:
    """The settings record (``run.json``) of a correlate output folder, None if it has none;
    IncompleteTable if it is there but is not a JSON object (empty, cut short, edited)."""
    path = Path(folder) / "run.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IncompleteTable(f"{path} is not a settings record (empty or not JSON: {err}); "
                              "restore it, or rerun the correlate command on that folder with "
                              "--fresh") from None
    if not isinstance(record, dict):
        raise IncompleteTable(f"{path} is not a settings record (a JSON {type(record).__name__}, "
                              "not an object); restore it, or rerun with --fresh")
    return record


def _recorded_output(folder: Path, name: str) -> dict | None:
    outputs = (run_record(folder) or {}).get("outputs")
    return outputs.get(name) if isinstance(outputs, dict) else None


def oriented(frame: pd.DataFrame, proxy: str) -> pd.Series:
    """Scores with lower-is-better proxies negated, so "higher" always means "better"."""
    sign = 1.0 if get_proxy(proxy).higher_is_better else -1.0
    return sign * frame[proxy]


def versus_published(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Our τ/ρ beside every published figure we have, one row per (benchmark, proxy)."""
    rows = []
    for (bench, proxy), (tau, rho, source) in PUBLISHED.items():
        if bench not in frames or proxy not in frames[bench]:
            continue
        frame = frames[bench]
        ours_tau = kendall_tau(oriented(frame, proxy), frame["accuracy"])
        ours_rho = spearman_rho(oriented(frame, proxy), frame["accuracy"])
        rows.append({"benchmark": bench, "proxy": proxy, "n": ours_tau.n,
                     "kendall": ours_tau.value, "published_kendall": tau,
                     "spearman": ours_rho.value, "published_spearman": rho,
                     "difference_kendall": ours_tau.value - tau, "source": source})
    return pd.DataFrame(rows)


def tau_vs_sample_size(frame: pd.DataFrame, proxies: Sequence[str], sizes: Sequence[int],
                       repeats: int = 50, seed: int = 0) -> pd.DataFrame:
    """Kendall τ on random sub-samples of each size: how much a small study can be trusted.

    Returns one row per (proxy, size) with the mean, standard deviation and the 2.5/97.5
    percentiles over ``repeats`` sub-samples drawn without replacement.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        if size > len(frame):
            continue
        draws = [rng.choice(len(frame), size=size, replace=False) for _ in range(repeats)]
        for proxy in proxies:
            x, y = oriented(frame, proxy).to_numpy(), frame["accuracy"].to_numpy()
            taus = np.array([kendall_tau(x[d], y[d]).value for d in draws])
            rows.append({"proxy": proxy, "size": size, "mean": np.nanmean(taus),
                         "std": np.nanstd(taus), "lo": np.nanpercentile(taus, 2.5),
                         "hi": np.nanpercentile(taus, 97.5)})
    return pd.DataFrame(rows)


def top_k_overlap(frame: pd.DataFrame, a: str, b: str, frac: float = 0.1) -> float:
    """Share of the top-``frac`` architectures by ``a`` that are also top by ``b``."""
    k = max(1, int(np.ceil(frac * len(frame))))
    top_a = set(oriented(frame, a).nlargest(k).index)
    top_b = set(oriented(frame, b).nlargest(k).index)
    return len(top_a & top_b) / k
