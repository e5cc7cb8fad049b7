"""Rank aggregation: one score from several proxies, computed over a population.

A proxy sees one network; an ensemble of proxies needs the whole population, because every
rule here puts the members on a common scale *relative to the others*.  This module is the
one place those rules live: ``correlate`` ranks a benchmark table with them
(:func:`ensemble_scores`) and the searches use them as fitness (:func:`combine`).

Rules (higher is better for every result; lower-is-better members are negated first):

``mean_rank`` (alias ``rank``)
    Mean over members of the normalised rank ``(rank - 1) / (n - 1)`` within the population
    (ties averaged), in [0, 1]; 0.5 for a population of one.  The ESFormer search's
    ``combined`` mode.
``log_rank`` (alias ``aznas``)
    AZ-NAS's non-linear aggregation (Lee & Ham, CVPR 2024; cvlab-yonsei/AZ-NAS): ranks
    ascending so the best of N gets rank N, summed as ``Σ log(rank / N)``, in [-k log N, 0].
    A low rank costs much more than a high rank gains, so it favours all-round candidates.
``max_abs`` (alias ``freerea``)
    FreeREA's rule (Cavagnero et al., WACV 2023): each member divided by its largest absolute
    value in the population, then summed, in [-k, k].  Unlike ranks it keeps the spacing of the
    scores (one outlier squeezes everyone else towards 0).  FreeREA adds 1e-9 to the divisor;
    here an all-zero member stays 0 instead.

Missing and non-finite scores.  ``nan="worst"`` (default; what a search needs: a candidate
whose proxy failed must lose on that proxy, not vanish, and AZ-NAS's own aggregation): NaN
ranks at the bottom of its member, tied with -inf (an undefined score's worst value, e.g.
NASWOT's for a cell with no distinct activation pattern; ties averaged), and counts as -1, the
lowest possible value, under ``max_abs``, which normalises by the largest *finite* magnitude
and maps ±inf to ±1.  ``nan="propagate"``: rows where any member is not finite (NaN, or ±inf:
undefined, or beyond every number) get NaN and the others are ranked among themselves only:
complete cases, the rows a correlation table ranks for a single proxy too.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

RULES: tuple[str, ...] = ("mean_rank", "log_rank", "max_abs")
ALIASES: dict[str, str] = {"rank": "mean_rank", "mean-rank": "mean_rank",
                           "aznas": "log_rank", "az-nas": "log_rank", "log-rank": "log_rank",
                           "freerea": "max_abs", "max-abs": "max_abs"}
NAN_POLICIES = ("worst", "propagate")


def canonical_rule(rule: str) -> str:
    """The rule's name in :data:`RULES`, accepting the aliases; ValueError naming the choices."""
    name = ALIASES.get(rule, rule)
    if name not in RULES:
        choices = ", ".join(list(RULES) + sorted(ALIASES))
        raise ValueError(f"unknown ensemble rule {rule!r}; choose one of {choices}")
    return name


def orientation(members: Sequence[str],
                higher_is_better: bool | Mapping[str, bool] | None = None) -> np.ndarray:
    """+1 / -1 per member: +1 where a higher score is better.

    ``None`` asks the proxy registry (every member must then be a registered proxy); a bool
    applies to all members; a mapping must name every member.
    """
    if isinstance(higher_is_better, bool):
        return np.full(len(members), 1.0 if higher_is_better else -1.0)
    signs = []
    for name in members:
        if higher_is_better is None:
            from .registry import get_proxy
            better = get_proxy(name).higher_is_better
        else:
            if name not in higher_is_better:
                raise ValueError(f"higher_is_better does not say which way {name!r} points")
            better = bool(higher_is_better[name])
        signs.append(1.0 if better else -1.0)
    return np.array(signs)


def combine(values: np.ndarray | Sequence[Sequence[float]], rule: str = "mean_rank",
            signs: Sequence[float] | np.ndarray | None = None, *, nan: str = "worst") -> np.ndarray:
    """The ensemble score of each row of ``values`` (n architectures × k members).

    ``signs`` orients each member (+1 higher is better, -1 lower is better; default all +1).
    Returns n floats, higher is better (NaN only with ``nan="propagate"``).
    """
    rule = canonical_rule(rule)
    if nan not in NAN_POLICIES:
        raise ValueError(f"nan={nan!r}; choose one of {NAN_POLICIES}")
    matrix = np.array(values, dtype=np.float64, ndmin=2)
    if matrix.ndim != 2:
        raise ValueError(f"values must be a 2-d table (architectures × members), got shape "
                         f"{matrix.shape}")
    n, k = matrix.shape
    if k == 0:
        raise ValueError("an ensemble needs at least one member")
    signs = np.ones(k) if signs is None else np.asarray(signs, dtype=np.float64)
    if signs.shape != (k,) or not np.isin(signs, (-1.0, 1.0)).all():
        raise ValueError(f"signs must be +1/-1, one per member ({k}), got {signs.tolist()}")
    matrix = matrix * signs
    out = np.full(n, np.nan)
    if nan == "propagate":
        rows = np.isfinite(matrix).all(axis=1)
        if rows.any():
            out[rows] = _RULE_FUNCTIONS[rule](matrix[rows])
        return out
    return _RULE_FUNCTIONS[rule](matrix)


def average_ranks(column: np.ndarray) -> np.ndarray:
    """Ascending average ranks 1..n, NaN counting as the lowest value.

    ``scipy.stats.rankdata(method="average")``'s algorithm (equal results to the bit: average
    ranks are halves), without its per-call overhead, which dominated a search's fitness."""
    x = np.where(np.isnan(column), -np.inf, column)
    n = len(x)
    if n == 0:
        return np.zeros(0)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.cumsum(starts)
    count = np.r_[np.flatnonzero(starts), n]
    ranks = np.empty(n)
    ranks[order] = 0.5 * (count[dense] + count[dense - 1] + 1)
    return ranks


def _mean_rank(matrix: np.ndarray) -> np.ndarray:
    n, k = matrix.shape
    if n == 1:
        return np.full(1, 0.5)
    # This exact sequence of operations is what the ESFormer search's combined mode has always
    # computed; keep it, so its logged searches replay to the same trajectory.
    total = np.zeros(n)
    for j in range(k):
        total += (average_ranks(matrix[:, j]) - 1) / (n - 1)
    return total / k


def _log_rank(matrix: np.ndarray) -> np.ndarray:
    n, k = matrix.shape
    total = np.zeros(n)
    for j in range(k):
        total += np.log(average_ranks(matrix[:, j]) / n)
    return total


def _max_abs(matrix: np.ndarray) -> np.ndarray:
    n, k = matrix.shape
    total = np.zeros(n)
    for j in range(k):
        column = matrix[:, j]
        finite = np.isfinite(column)
        scale = np.abs(column[finite]).max() if finite.any() else 0.0
        normed = np.where(finite, column / scale if scale > 0 else 0.0, np.sign(column))
        total += np.where(np.isnan(column), -1.0, normed)
    return total


_RULE_FUNCTIONS = {"mean_rank": _mean_rank, "log_rank": _log_rank, "max_abs": _max_abs}


def ensemble_scores(frame: pd.DataFrame, members: Sequence[str], rule: str = "mean_rank",
                    higher_is_better: bool | Mapping[str, bool] | None = None, *,
                    nan: str = "worst") -> pd.Series:
    """One ensemble score per row of ``frame`` (a table with one column per member proxy).

    The population is the whole frame.  Returns a Series on ``frame``'s index named
    ``"<rule>(<member>,<member>,...)"``, higher is better.  ``higher_is_better``: None (ask the
    registry), a bool for all members, or a mapping per member.  ``nan``: see the module doc.
    """
    members = list(members)
    missing = [m for m in members if m not in frame.columns]
    if missing:
        raise KeyError(f"ensemble member(s) {missing} are not columns of the table "
                       f"({', '.join(map(str, frame.columns))})")
    if len(set(members)) != len(members):
        raise ValueError(f"ensemble members repeat: {members}")
    rule = canonical_rule(rule)
    values = frame[members].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    result = combine(values, rule, orientation(members, higher_is_better), nan=nan)
    return pd.Series(result, index=frame.index, name=f"{rule}({','.join(members)})")


EnsembleSpec = tuple[str, str, tuple[str, ...]]  # (name, rule, members)


def parse_ensemble(text: str) -> EnsembleSpec:
    """``NAME=rule:p1,p2,...`` (rule optional, default ``mean_rank``) -> (name, rule, members)."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise ValueError(f"--ensemble takes NAME=[rule:]p1,p2,..., not {text!r}")
    rule, colon, members = rest.partition(":")
    if not colon:
        rule, members = "mean_rank", rest
    names = tuple(m.strip() for m in members.split(",") if m.strip())
    if len(names) < 2:
        raise ValueError(f"--ensemble {name}: needs at least two members, got {names}")
    return name.strip(), canonical_rule(rule.strip()), names


__all__ = ["RULES", "ALIASES", "EnsembleSpec", "canonical_rule", "orientation", "combine",
           "average_ranks", "ensemble_scores", "parse_ensemble"]
