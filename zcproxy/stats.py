"""How well does a zero-cost proxy rank architectures?  Correlation statistics for that question.

Proxy scores are messy: some architectures produce NaN or +-inf (overflowing synflow, a singular
Jacobian), some proxies give many architectures the same score, and some are "lower is better".
Every function here therefore

* takes plain array-likes (positional pairing, pandas indices are ignored),
* drops a pair when either value is NaN or +-inf and *reports* how many it dropped
  (:class:`StatResult.n_dropped`), so a proxy that silently failed on half the space is visible,
* treats ties explicitly: Kendall is scipy's tau-b, Spearman uses average ranks, precision@k
  is the expectation over random tie-breaking (see :func:`precision_at_k`),
* returns NaN (never a made-up number) when a statistic is undefined, e.g. fewer than two
  valid pairs or a constant proxy (the one documented exception: a partial correlation whose
  variable is fully explained by the controls is 0, see :func:`partial_rank_correlation`).

Bootstrap intervals are percentile intervals.  Spearman and Pearson resamples are computed
without re-sorting (a resample is a vector of multiplicities, see :func:`_weighted_ranks`), so
they are cheap; Kendall resamples call scipy's O(n log n) tau-b once per resample.  Measured on
the 2-core development machine, n = 32,768 with ties, 1000 resamples: Kendall ~4 s, Spearman
~2 s, Pearson ~0.5 s (so ~7 s per proxy in :func:`correlation_table`).  Cost grows as
n_boot * n log n (NAS-Bench-101's 423,624 architectures: ~0.17 s per Kendall and ~0.08 s per
Spearman resample, i.e. ~4 min per proxy at 1000 resamples); pass a smaller ``n_boot`` if that
is too slow -- we never reduce it behind the caller's back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import pandas as pd
from scipy import stats as _sps

__all__ = [
    "StatResult", "kendall_tau", "spearman_rho", "pearson_r", "precision_at_k", "bootstrap_ci",
    "PairedDifference", "paired_difference", "partial_rank_correlation", "correlation_table",
    "pairwise_rank_correlation", "to_markdown",
]

StatFn = Callable[[np.ndarray, np.ndarray], float]
StatSpec = Union[str, StatFn]

# Elements per bootstrap chunk (resamples x n); bounds memory at ~32 MB per float64 array.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class StatResult:
    """A statistic together with how much data it was computed from.

    ``n`` is the number of pairs used, ``n_dropped`` the number of pairs discarded because one
    of the two values was NaN/inf.  ``k`` is set by :func:`precision_at_k`; ``note`` explains a
    value that needs explaining (e.g. a degenerate partial correlation).
    """

    value: float
    n: int
    n_dropped: int
    k: int | None = None
    note: str = ""

    def __float__(self) -> float:
        return float(self.value)


# --------------------------------------------------------------------------- input handling

def _as_1d(values: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, could not convert it to floats: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _paired(x: object, y: object, names: tuple[str, str] = ("x", "y")
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """The finite pairs of x and y, and how many pairs were dropped."""
    xa, ya = _as_1d(x, names[0]), _as_1d(y, names[1])
    if len(xa) != len(ya):
        raise ValueError(f"{names[0]} and {names[1]} differ in length: {len(xa)} vs {len(ya)}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep], int(len(xa) - keep.sum())


def _unit_centered(v: np.ndarray) -> np.ndarray:
    """Scale to max |v| = 1 then center: keeps sums of squares finite for scores like 1e200."""
    scale = np.max(np.abs(v)) if len(v) else 0.0
    w = v / scale if scale > 0 else v.astype(float)
    return w - w.mean()


# --------------------------------------------------------------------------- point estimates

def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return math.nan
    xc, yc = _unit_centered(x), _unit_centered(y)
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    if denom == 0.0:
        return math.nan
    return float(np.clip((xc @ yc) / denom, -1.0, 1.0))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return math.nan
    return _pearson(_sps.rankdata(x), _sps.rankdata(y))


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(_sps.kendalltau(x, y, variant="b").statistic)


_POINT: dict[str, StatFn] = {"kendall": _kendall, "spearman": _spearman, "pearson": _pearson}


def kendall_tau(x: object, y: object) -> StatResult:
    """Kendall's tau-b of the finite pairs (tau-b, because proxies produce many ties)."""
    xs, ys, dropped = _paired(x, y)
    return StatResult(_kendall(xs, ys), len(xs), dropped)


def spearman_rho(x: object, y: object) -> StatResult:
    """Spearman's rho (Pearson correlation of average ranks) of the finite pairs."""
    xs, ys, dropped = _paired(x, y)
    return StatResult(_spearman(xs, ys), len(xs), dropped)


def pearson_r(x: object, y: object) -> StatResult:
    """Pearson's r of the finite pairs; only meaningful if the proxy is on a sensible scale."""
    xs, ys, dropped = _paired(x, y)
    return StatResult(_pearson(xs, ys), len(xs), dropped)


def _top_k_membership(v: np.ndarray, k: int) -> np.ndarray:
    """P(item is among the k largest) when ties are broken uniformly at random.

    Items strictly above the k-th largest value are in for sure; the g items tied at that
    value share the m remaining slots, so each is in with probability m/g.
    """
    threshold = np.sort(v)[::-1][k - 1]
    above = v > threshold
    at = v == threshold
    p = above.astype(float)
    p[at] = (k - above.sum()) / at.sum()
    return p


def precision_at_k(scores: object, acc: object, frac: float = 0.1) -> StatResult:
    """Fraction of the top-k architectures by proxy score that are also top-k by accuracy.

    k = ceil(frac * n) over the n finite pairs.  Ties at the cut-off (frequent for proxies that
    saturate) make "the top-k" ambiguous, and ordering by array position would reward whatever
    order the benchmark happens to list architectures in.  We return the *expected* precision
    when ties in both rankings are broken uniformly at random: sum_i P(i in top-k by score) *
    P(i in top-k by acc) / k.  A constant proxy therefore scores exactly k/n, the chance level.
    """
    if not (0.0 < float(frac) <= 1.0):
        raise ValueError(f"frac must be in (0, 1], got {frac!r}")
    xs, ys, dropped = _paired(scores, acc, ("scores", "acc"))
    n = len(xs)
    if n == 0:
        return StatResult(math.nan, 0, dropped, k=0)
    # round() first: 0.1 * 30 is 3.0000000000000004 in floating point, which must give k = 3.
    k = max(1, math.ceil(round(float(frac) * n, 9)))
    overlap = float(_top_k_membership(xs, k) @ _top_k_membership(ys, k))
    return StatResult(overlap / k, n, dropped, k=k)


# --------------------------------------------------------------------------- bootstrap

def _chunks(n: int, n_boot: int):
    size = max(1, min(n_boot, _CHUNK_ELEMENTS // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(size, n_boot - done)
        yield b
        done += b


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Multiplicity of every original point in each resample row of ``idx``."""
    b = idx.shape[0]
    flat = (idx + (np.arange(b)[:, None] * n)).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


class _TieGroups:
    """Sorted tie structure of one variable, reused for every resample."""

    def __init__(self, v: np.ndarray):
        self.order = np.argsort(v, kind="stable")
        sv = v[self.order]
        is_start = np.r_[True, sv[1:] != sv[:-1]]
        self.starts = np.flatnonzero(is_start)
        self.has_ties = len(self.starts) < len(v)
        self.gid = np.empty(len(v), dtype=np.intp)
        self.gid[self.order] = np.cumsum(is_start) - 1


def _weighted_ranks(w: np.ndarray, groups: _TieGroups) -> np.ndarray:
    """Average rank of each original point inside each resample, given multiplicities ``w``.

    A resample's ranks only depend on how many copies of each tie group it holds: the group's
    average rank is (copies of all smaller values) + (copies of this group + 1) / 2.  This
    replaces a sort per resample by a cumulative sum.
    """
    per_group = w[:, groups.order]
    if groups.has_ties:
        per_group = np.add.reduceat(per_group, groups.starts, axis=1)
    before = np.cumsum(per_group, axis=1) - per_group
    return (before + (per_group + 1.0) / 2.0)[:, groups.gid]


def _weighted_corr(a: np.ndarray, b: np.ndarray, w: np.ndarray,
                   centered: bool = False) -> np.ndarray:
    """Row-wise Pearson correlation of a and b with multiplicity weights w (all shape (B, n)).

    ``centered=True`` promises that every row of a and b already has weighted mean 0.
    """
    constant = np.zeros(len(a), dtype=bool)
    if not centered:
        # A resample that drew one value only has no correlation; centring it leaves rounding
        # noise (1e-33, not 0), so it is recognised before.
        drawn = w > 0
        for v in (a, b):
            constant |= np.where(drawn, v, np.inf).min(axis=1) == np.where(drawn, v, -np.inf).max(axis=1)
        tot = w.sum(axis=1)
        a = a - (np.einsum("ij,ij->i", w, a) / tot)[:, None]
        b = b - (np.einsum("ij,ij->i", w, b) / tot)[:, None]
    wa = w * a
    cov = np.einsum("ij,ij->i", wa, b)
    var = np.einsum("ij,ij->i", wa, a) * np.einsum("ij,ij->i", w * b, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where((var > 0) & ~constant, cov / np.sqrt(var), np.nan)
    return np.clip(r, -1.0, 1.0)


def _bootstrap_replicates(xs: np.ndarray, ys: np.ndarray, stat: StatSpec, n_boot: int,
                          rng: np.random.Generator) -> np.ndarray:
    n = len(xs)
    out = []
    if stat == "pearson":
        xc, yc = _unit_centered(xs), _unit_centered(ys)
    elif stat == "spearman":
        gx, gy = _TieGroups(xs), _TieGroups(ys)
    elif stat == "kendall":
        # Dense integer ranks leave tau-b unchanged and sort faster than floats.
        xs = _sps.rankdata(xs, method="dense").astype(np.int64)
        ys = _sps.rankdata(ys, method="dense").astype(np.int64)
    for b in _chunks(n, n_boot):
        idx = rng.integers(0, n, size=(b, n))
        if stat == "pearson":
            w = _counts(idx, n)
            out.append(_weighted_corr(np.broadcast_to(xc, w.shape),
                                      np.broadcast_to(yc, w.shape), w))
        elif stat == "spearman":
            w = _counts(idx, n)
            # Ranks within a resample of size n always average (n + 1) / 2.
            mid = (n + 1) / 2.0
            out.append(_weighted_corr(_weighted_ranks(w, gx) - mid, _weighted_ranks(w, gy) - mid,
                                      w, centered=True))
        else:
            fn = _kendall if stat == "kendall" else stat
            out.append(np.array([float(fn(xs[i], ys[i])) for i in idx]))
    return np.concatenate(out)


def _check_bootstrap(n_boot: int, level: float, allow_zero: bool = False) -> None:
    least = 0 if allow_zero else 1
    if int(n_boot) != n_boot or n_boot < least:
        raise ValueError(f"n_boot must be a {'non-negative' if allow_zero else 'positive'} "
                         f"integer, got {n_boot!r}")
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def bootstrap_ci(x: object, y: object, stat: StatSpec, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a paired statistic over the finite pairs.

    ``stat`` is ``"kendall"``, ``"spearman"``, ``"pearson"`` (fast paths) or any callable
    ``f(x, y) -> float`` on two 1-D arrays.  The same ``seed`` draws the same resamples whatever
    the statistic, so intervals of different statistics are paired.  Resamples on which the
    statistic is undefined (e.g. all-equal draws from tiny samples) are ignored; if the point
    estimate itself is undefined the interval is (nan, nan).
    """
    if isinstance(stat, str):
        if stat not in _POINT:
            raise ValueError(f"unknown statistic {stat!r}; "
                             f"use one of {sorted(_POINT)} or a callable")
        point_fn = _POINT[stat]
    elif callable(stat):
        point_fn = stat
    else:
        raise TypeError(f"stat must be a name or a callable, got {type(stat).__name__}")
    _check_bootstrap(n_boot, level)
    xs, ys, _ = _paired(x, y)
    if len(xs) < 2 or not np.isfinite(float(point_fn(xs, ys))):
        return (math.nan, math.nan)
    reps = _bootstrap_replicates(xs, ys, stat, int(n_boot), np.random.default_rng(seed))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(reps, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class PairedDifference:
    """stat(a, y) − stat(b, y) on the same rows, with a paired bootstrap interval.

    ``a_value`` and ``b_value`` are the two statistics on those rows (``value`` their
    difference); ``share_above`` is the fraction of resamples in which the difference is > 0 (beyond
    rounding: > 1e-12): near 1 or 0
    the sign is settled, near 0.5 it is not.
    """

    value: float
    lo: float
    hi: float
    share_above: float
    n: int
    n_dropped: int
    a_value: float
    b_value: float


def paired_difference(a: object, b: object, y: object, stat: str = "kendall",
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95
                      ) -> PairedDifference:
    """How much better ``a`` ranks ``y`` than ``b`` does, resampling rows *jointly*.

    Two rankings scored on the same architectures are correlated, so their separate intervals
    overlap even when one is better on nearly every resample; the question "does adding a
    member to an aggregate help?" needs the interval of the difference.  Rows where any of the
    three values is not finite are dropped (and counted), so both statistics see the same rows.
    ``n_boot=0`` gives the difference alone (NaN interval and share).
    """
    if stat not in _POINT:
        raise ValueError(f"unknown statistic {stat!r}; use one of {sorted(_POINT)}")
    _check_bootstrap(n_boot, level, allow_zero=True)
    aa, ba, ya = _as_1d(a, "a"), _as_1d(b, "b"), _as_1d(y, "y")
    if not len(aa) == len(ba) == len(ya):
        raise ValueError(f"a, b and y differ in length: {len(aa)}, {len(ba)}, {len(ya)}")
    keep = np.isfinite(aa) & np.isfinite(ba) & np.isfinite(ya)
    aa, ba, ya = aa[keep], ba[keep], ya[keep]
    n, dropped = len(aa), int((~keep).sum())
    fn = _POINT[stat]
    a_value, b_value = (fn(aa, ya), fn(ba, ya)) if n >= 2 else (math.nan, math.nan)
    value = a_value - b_value
    if not math.isfinite(value) or n_boot == 0:
        nan = math.nan
        return PairedDifference(value, nan, nan, nan, n, dropped, a_value, b_value)
    if stat == "kendall":  # dense integer ranks leave tau-b unchanged and sort faster
        aa, ba, ya = (_sps.rankdata(v, method="dense").astype(np.int64) for v in (aa, ba, ya))
    rng = np.random.default_rng(seed)
    reps = np.array([fn(aa[i], ya[i]) - fn(ba[i], ya[i])
                     for i in rng.integers(0, n, size=(int(n_boot), n))])
    reps = reps[np.isfinite(reps)]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha]) if len(reps) else (math.nan, math.nan)
    # A difference within rounding of 0 (two statistics equal in exact arithmetic) is not > 0.
    share = float(np.mean(reps > 1e-12)) if len(reps) else math.nan
    return PairedDifference(float(value), float(lo), float(hi), share, n, dropped,
                            float(a_value), float(b_value))


# --------------------------------------------------------------------------- partial correlation

def _controls_matrix(controls: object, n: int) -> np.ndarray:
    try:
        c = np.asarray(controls, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"controls must be numeric: {exc}") from None
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2 or c.shape[0] != n:
        transposed = c.ndim == 2 and c.shape[1] == n
        hint = " (pass one row per observation; transpose it?)" if transposed else ""
        raise ValueError(f"controls must have shape ({n},) or ({n}, k), got {c.shape}{hint}")
    return c


def partial_rank_correlation(x: object, y: object, controls: object,
                             method: str = "spearman") -> StatResult:
    """Rank correlation of x and y after removing what the controls explain about both.

    The question it answers: does a proxy know anything about accuracy beyond, say, the
    parameter count?  ``method="spearman"``: rank-transform x, y and every control, regress the
    ranks of x and of y on the control ranks (least squares with intercept) and correlate the
    residuals.  ``method="kendall"``: Kendall's partial tau from the tau-b values, defined for a
    single control only.  ``controls`` is shape (n,) or (n, k) (a DataFrame works); rows with a
    non-finite value anywhere are dropped and counted.

    If the controls explain x (or y) completely -- e.g. the proxy *is* the parameter count --
    the residual is zero and the correlation is 0/0.  We return 0.0 with a ``note``: the proxy
    carries no information beyond the controls, which is the answer the caller asked for.
    """
    if method not in ("spearman", "kendall"):
        raise ValueError(f"method must be 'spearman' or 'kendall', got {method!r}")
    xa, ya = _as_1d(x, "x"), _as_1d(y, "y")
    if len(xa) != len(ya):
        raise ValueError(f"x and y differ in length: {len(xa)} vs {len(ya)}")
    c = _controls_matrix(controls, len(xa))
    keep = np.isfinite(xa) & np.isfinite(ya) & np.isfinite(c).all(axis=1)
    xa, ya, c = xa[keep], ya[keep], c[keep]
    n, dropped = len(xa), int((~keep).sum())
    if method == "kendall":
        if c.shape[1] != 1:
            raise ValueError(f"partial Kendall supports one control, got {c.shape[1]}")
        txy, txz, tyz = _kendall(xa, ya), _kendall(xa, c[:, 0]), _kendall(ya, c[:, 0])
        if 1 - abs(txz) <= 1e-12 or 1 - abs(tyz) <= 1e-12:  # |τ| = 1 up to rounding
            return StatResult(0.0, n, dropped,
                              note="a variable is a monotone function of the control")
        denom = math.sqrt((1 - txz ** 2) * (1 - tyz ** 2))
        return StatResult(float(np.clip((txy - txz * tyz) / denom, -1, 1)), n, dropped)
    if n < c.shape[1] + 3:
        return StatResult(math.nan, n, dropped, note="too few observations for the controls")
    rx, ry = _sps.rankdata(xa), _sps.rankdata(ya)
    design = np.column_stack([np.ones(n)] + [_sps.rankdata(col) for col in c.T])
    if np.ptp(rx) == 0.0 or np.ptp(ry) == 0.0:
        return StatResult(math.nan, n, dropped, note="x or y is constant")
    residuals = []
    for r in (rx, ry):
        coef, *_ = np.linalg.lstsq(design, r, rcond=None)
        res = r - design @ coef
        spread = np.linalg.norm(r - r.mean())
        if np.linalg.norm(res) <= 1e-9 * spread:
            return StatResult(0.0, n, dropped, note="x or y is fully explained by the controls")
        residuals.append(res)
    return StatResult(_pearson(*residuals), n, dropped)


def within_group_correlation(x: object, y: object, groups: object, method: str = "kendall",
                             min_size: int = 3) -> StatResult:
    """Rank correlation of x and y *inside* groups of equal ``groups`` value, pooled.

    Answers "does a proxy rank architectures of the same depth?": with ``groups`` the number of
    activation layers, a proxy that is only a depth count scores 0 here however well it
    correlates overall.  Each group with at least ``min_size`` finite pairs (and x, y not
    constant in it) contributes its coefficient, weighted by its number of pairs
    (m·(m−1)/2), the weight each group has in an overall Kendall τ.  ``n`` counts the pairs of
    rows used, ``note`` how many groups.
    """
    if method not in _POINT:
        raise ValueError(f"method must be one of {sorted(_POINT)}, got {method!r}")
    xa, ya, ga = _as_1d(x, "x"), _as_1d(y, "y"), np.asarray(groups)
    if not len(xa) == len(ya) == len(ga):
        raise ValueError(f"x, y and groups differ in length: {len(xa)}, {len(ya)}, {len(ga)}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    total = weight = 0.0
    used = n_groups = 0
    for g in pd.unique(ga[keep]):
        mask = keep & (ga == g)
        m = int(mask.sum())
        if m < min_size:
            continue
        value = _POINT[method](xa[mask], ya[mask])
        if not math.isfinite(value):
            continue
        w = m * (m - 1) / 2
        total, weight, used, n_groups = total + w * value, weight + w, used + m, n_groups + 1
    value = total / weight if weight else math.nan
    return StatResult(value, used, int((~keep).sum()), note=f"{n_groups} groups")


# --------------------------------------------------------------------------- tables

def _column(df: pd.DataFrame, name: str) -> np.ndarray:
    if name not in df.columns:
        raise KeyError(f"column {name!r} not in the table; columns are {list(df.columns)}")
    return _as_1d(pd.to_numeric(df[name], errors="raise"), name)


def correlation_table(df: pd.DataFrame, proxies: Sequence[str], target: str = "accuracy",
                      higher_is_better: Mapping[str, bool] | None = None, n_boot: int = 1000,
                      seed: int = 0, level: float = 0.95, frac: float = 0.1,
                      controls: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per proxy: how well it ranks ``target``, with bootstrap intervals.

    Proxies listed as ``False`` in ``higher_is_better`` (missing ones default to True) are
    negated first, so a positive correlation always means "the proxy points the right way".
    ``n_boot=0`` skips the intervals (NaN columns).  With ``controls`` (column names, e.g.
    ``["params"]``) a ``partial_spearman`` column is added.  Columns: ``n``, ``n_dropped``,
    ``higher_is_better``, ``kendall``/``_lo``/``_hi``, ``spearman``/..., ``pearson``/...,
    ``precision@<frac>%`` and optionally ``partial_spearman``; indexed by proxy name.
    """
    orientation = dict(higher_is_better or {})
    unknown = set(orientation) - set(proxies)
    if unknown:
        raise ValueError(f"higher_is_better names proxies not in the list: {sorted(unknown)}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot!r}")
    acc = _column(df, target)
    ctrl = np.column_stack([_column(df, c) for c in controls]) if controls else None
    prec_col = f"precision@{round(frac * 100, 6):g}%"
    rows = []
    for proxy in proxies:
        hib = bool(orientation.get(proxy, True))
        score = _column(df, proxy) * (1.0 if hib else -1.0)
        xs, ys, dropped = _paired(score, acc, (proxy, target))
        row: dict[str, object] = {"proxy": proxy, "n": len(xs), "n_dropped": dropped,
                                  "higher_is_better": hib}
        for name, fn in _POINT.items():
            row[name] = fn(xs, ys)
            row[f"{name}_lo"], row[f"{name}_hi"] = (
                bootstrap_ci(xs, ys, name, n_boot=n_boot, seed=seed, level=level)
                if n_boot > 0 else (math.nan, math.nan))
        row[prec_col] = precision_at_k(xs, ys, frac).value
        if ctrl is not None:
            row["partial_spearman"] = partial_rank_correlation(score, acc, ctrl).value
        rows.append(row)
    return pd.DataFrame(rows).set_index("proxy")


def pairwise_rank_correlation(df: pd.DataFrame, columns: Sequence[str],
                              method: str = "spearman") -> pd.DataFrame:
    """Square matrix of rank correlations between columns (e.g. between proxies).

    Each pair uses the rows where both columns are finite, so one proxy's failures do not
    shrink every other pair's sample.
    """
    if method not in ("spearman", "kendall"):
        raise ValueError(f"method must be 'spearman' or 'kendall', got {method!r}")
    fn = _POINT[method]
    data = {c: _column(df, c) for c in columns}
    out = pd.DataFrame(np.nan, index=list(columns), columns=list(columns))
    for i, a in enumerate(columns):
        for b in columns[i:]:
            xs, ys, _ = _paired(data[a], data[b], (a, b))
            out.loc[a, b] = out.loc[b, a] = fn(xs, ys)
    return out


def _fmt_cell(value: object, floatfmt: str) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else format(float(value), floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: pd.DataFrame, floatfmt: str = ".3f", index: bool = True) -> str:
    """GitHub-flavoured Markdown table, without depending on the ``tabulate`` package."""
    frame = table.reset_index() if index else table
    header = [_fmt_cell(str(c), floatfmt) for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if num else ":---" for num in numeric) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt_cell(v, floatfmt) for v in row) + " |")
    return "\n".join(lines) + "\n"
