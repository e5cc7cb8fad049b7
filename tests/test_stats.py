"""Correlation statistics checked against hand computations and independent implementations."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from zcproxy import stats as zs


# ----------------------------------------------------------------------------- helpers

def kendall_tau_b_by_counting(x: np.ndarray, y: np.ndarray) -> float:
    """O(n^2) tau-b straight from the definition: (C - D) / sqrt((n0 - n1)(n0 - n2)).

    n0 = number of pairs, n1 / n2 = pairs tied in x / in y.
    """
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    upper = np.triu(np.ones_like(sx, dtype=bool), k=1)
    prod = (sx * sy)[upper]
    concordant, discordant = np.sum(prod > 0), np.sum(prod < 0)
    n0 = upper.sum()
    n1 = np.sum(sx[upper] == 0)
    n2 = np.sum(sy[upper] == 0)
    return (concordant - discordant) / math.sqrt((n0 - n1) * (n0 - n2))


def first_order_partial(rxy: float, rxz: float, ryz: float) -> float:
    return (rxy - rxz * ryz) / math.sqrt((1 - rxz ** 2) * (1 - ryz ** 2))


# ------------------------------------------------------------- Kendall / Spearman / Pearson

def test_kendall_four_points_by_hand():
    """x = 1 2 3 4, y = 1 3 2 4.  Of the 6 pairs only (2,3) is discordant: C = 5, D = 1,
    tau = (5 - 1) / 6 = 2/3."""
    assert zs.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]).value == pytest.approx(2 / 3)


def test_kendall_tau_b_with_ties_by_hand():
    """x = 1 2 2 3, y = 1 2 3 3.  Pairs: (1,2) C, (1,3) C, (1,4) C, (2,3) tied in x, (2,4) C,
    (3,4) tied in y.  C = 4, D = 0, n0 = 6, n1 = n2 = 1: tau_b = 4 / sqrt(5 * 5) = 0.8.
    (tau-a would give 4/6, so this distinguishes the variants.)"""
    assert zs.kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]).value == pytest.approx(0.8)


def test_spearman_four_points_by_hand():
    """Rank differences 0 1 1 0: rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8."""
    assert zs.spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]).value == pytest.approx(0.8)


@pytest.mark.parametrize("fn", [zs.kendall_tau, zs.spearman_rho, zs.pearson_r])
def test_identical_and_reversed(fn):
    x = np.arange(20.0) ** 1.0
    assert fn(x, x).value == pytest.approx(1.0)
    assert fn(x, -x).value == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kendall_matches_pair_counting_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 8, size=150).astype(float)  # heavy ties
    y = x + rng.integers(-3, 4, size=150)
    assert zs.kendall_tau(x, y).value == pytest.approx(kendall_tau_b_by_counting(x, y), abs=1e-12)


def test_spearman_and_pearson_match_scipy_with_ties():
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=500), 1)
    y = np.round(x + rng.normal(size=500), 1)
    assert zs.spearman_rho(x, y).value == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)
    assert zs.pearson_r(x, y).value == pytest.approx(sps.pearsonr(x, y).statistic, abs=1e-12)


def test_pearson_survives_huge_scores():
    """Scores like synflow reach 1e200; naive sums of squares would overflow to inf."""
    x = np.array([1e200, 2e200, 3e200, 5e200])
    y = np.array([1.0, 2.0, 3.0, 5.0])
    assert zs.pearson_r(x, y).value == pytest.approx(1.0)


@pytest.mark.parametrize("fn", [zs.kendall_tau, zs.spearman_rho, zs.pearson_r])
def test_nonfinite_pairs_dropped_and_counted(fn):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=50), rng.normal(size=50)
    xd, yd = x.copy(), y.copy()
    xd[[3, 7]] = [np.nan, np.inf]
    yd[[7, 11, 20]] = [np.nan, -np.inf, np.nan]  # index 7 bad in both: counted once
    keep = np.ones(50, bool)
    keep[[3, 7, 11, 20]] = False
    res = fn(xd, yd)
    assert (res.n, res.n_dropped) == (46, 4)
    assert res.value == pytest.approx(fn(x[keep], y[keep]).value, abs=1e-14)


def test_undefined_is_nan_not_a_number():
    assert math.isnan(zs.kendall_tau([1, 1, 1], [1, 2, 3]).value)
    assert math.isnan(zs.spearman_rho([1, 1, 1], [1, 2, 3]).value)
    assert math.isnan(zs.pearson_r([np.nan, 1], [1, 2]).value)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="3 vs 4"):
        zs.kendall_tau([1, 2, 3], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="numeric"):
        zs.spearman_rho(["a", "b"], [1, 2])
    with pytest.raises(ValueError, match="one-dimensional"):
        zs.pearson_r(np.ones((2, 2)), np.ones((2, 2)))


# ----------------------------------------------------------------------------- precision@k

def test_precision_at_k_by_hand():
    """n = 10, frac = 0.3 -> k = 3.  Top-3 by score: items 0 1 2.  Top-3 by accuracy: 0 2 5.
    Overlap {0, 2}: precision 2/3."""
    scores = np.arange(10.0)[::-1]
    acc = np.zeros(10)
    acc[[0, 2, 5]] = [0.9, 0.8, 0.7]
    res = zs.precision_at_k(scores, acc, frac=0.3)
    assert res.k == 3
    assert res.value == pytest.approx(2 / 3)


def test_precision_k_is_ceil_without_float_fuzz():
    # 0.1 * 30 == 3.0000000000000004 in floating point; k must still be 3, and 0.1 * 31 -> 4.
    assert zs.precision_at_k(np.arange(30.0), np.arange(30.0), 0.1).k == 3
    assert zs.precision_at_k(np.arange(31.0), np.arange(31.0), 0.1).k == 4
    with pytest.raises(ValueError, match="frac"):
        zs.precision_at_k([1, 2], [1, 2], frac=0)


def _brute_force_precision(scores, acc, k):
    """Average over every tie-breaking order of both rankings (each order equally likely)."""
    n = len(scores)
    perms = list(itertools.permutations(range(n)))

    def top(values, perm):
        key = sorted(range(n), key=lambda i: (values[i], perm[i]), reverse=True)
        return set(key[:k])

    tops_s = [top(scores, p) for p in perms]
    tops_a = [top(acc, p) for p in perms]
    return np.mean([len(a & b) / k for a in tops_s for b in tops_a])


def test_precision_ties_equal_expectation_over_tie_breaking():
    """Three items tie for the top-2 by score (each in with probability 2/3); accuracy top-2 is
    items {0, 3} (no ties).  Expected overlap = 2/3 (item 0 only): precision = 1/3."""
    scores = [1.0, 1.0, 1.0, 0.0, 0.0]
    acc = [5.0, 1.0, 2.0, 4.0, 3.0]
    res = zs.precision_at_k(scores, acc, frac=0.4)
    assert res.k == 2
    assert res.value == pytest.approx(1 / 3)
    assert res.value == pytest.approx(_brute_force_precision(scores, acc, 2))
    # ties in both rankings
    scores2 = [3.0, 2.0, 2.0, 2.0, 1.0]
    acc2 = [1.0, 4.0, 4.0, 2.0, 2.0]
    assert zs.precision_at_k(scores2, acc2, frac=0.6).value == pytest.approx(
        _brute_force_precision(scores2, acc2, 3))


def test_constant_proxy_gets_chance_precision():
    acc = np.random.default_rng(0).normal(size=40)
    res = zs.precision_at_k(np.zeros(40), acc, frac=0.1)
    assert res.value == pytest.approx(res.k / 40)


# ----------------------------------------------------------------------------- bootstrap

def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=n), 1)
    return x, x + rng.normal(size=n)


@pytest.mark.parametrize("stat", ["kendall", "spearman", "pearson"])
def test_bootstrap_ci_contains_estimate_and_shrinks_with_n(stat):
    point = {"kendall": zs.kendall_tau, "spearman": zs.spearman_rho, "pearson": zs.pearson_r}[stat]
    widths = []
    for n in (100, 2000):
        x, y = _data(n)
        lo, hi = zs.bootstrap_ci(x, y, stat, n_boot=300, seed=1)
        assert lo < point(x, y).value < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # width ~ 1/sqrt(n): expect ~ 1/4.5


@pytest.mark.parametrize("stat, reference", [
    ("spearman", lambda a, b: sps.spearmanr(a, b).statistic),
    ("pearson", lambda a, b: sps.pearsonr(a, b).statistic),
    ("kendall", lambda a, b: sps.kendalltau(a, b).statistic),
])
def test_fast_bootstrap_equals_explicit_resampling(stat, reference):
    """The multiplicity-weighted fast paths must reproduce scipy on the explicit resamples
    (same seed -> same resamples, whatever the statistic)."""
    x, y = _data(300, seed=4)
    fast = zs.bootstrap_ci(x, y, stat, n_boot=200, seed=7)
    slow = zs.bootstrap_ci(x, y, reference, n_boot=200, seed=7)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_bootstrap_level_seed_and_nan_handling():
    x, y = _data(400)
    wide = zs.bootstrap_ci(x, y, "spearman", n_boot=300, level=0.99)
    narrow = zs.bootstrap_ci(x, y, "spearman", n_boot=300, level=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    assert zs.bootstrap_ci(x, y, "kendall", n_boot=50, seed=3) == zs.bootstrap_ci(
        x, y, "kendall", n_boot=50, seed=3)
    xn = x.copy()
    xn[::10] = np.nan
    keep = np.isfinite(xn)
    assert zs.bootstrap_ci(xn, y, "pearson", n_boot=100) == zs.bootstrap_ci(
        x[keep], y[keep], "pearson", n_boot=100)
    assert all(math.isnan(v) for v in zs.bootstrap_ci(np.ones(10), y[:10], "kendall"))
    with pytest.raises(ValueError, match="unknown statistic"):
        zs.bootstrap_ci(x, y, "tau")
    with pytest.raises(ValueError, match="level"):
        zs.bootstrap_ci(x, y, "pearson", level=95)


# ----------------------------------------------------------------------------- partial correlation

def test_partial_removes_a_shared_cause():
    rng = np.random.default_rng(0)
    n = 2000
    depth = rng.integers(1, 20, size=n).astype(float)
    acc = depth + rng.normal(size=n)
    # A proxy that *is* depth: high plain correlation, nothing left after controlling for depth.
    assert zs.spearman_rho(depth, acc).value > 0.9
    exact = zs.partial_rank_correlation(depth, acc, depth)
    assert abs(exact.value) < 0.05 and exact.note
    # A proxy that is depth plus tiny independent noise: the residual is well defined.
    proxy = depth + 0.01 * rng.normal(size=n)
    assert zs.spearman_rho(proxy, acc).value > 0.9
    assert abs(zs.partial_rank_correlation(proxy, acc, depth).value) < 0.05
    # ...while a proxy that sees the noise in acc keeps a clear partial correlation.
    informed = acc + 0.5 * rng.normal(size=n)
    assert zs.partial_rank_correlation(informed, acc, depth).value > 0.3


def test_partial_matches_closed_form_first_order():
    rng = np.random.default_rng(1)
    z = rng.normal(size=300)
    x = z + rng.normal(size=300)
    y = np.round(z + x + rng.normal(size=300), 1)  # ties in y
    rxy, rxz, ryz = (sps.spearmanr(a, b).statistic for a, b in ((x, y), (x, z), (y, z)))
    got = zs.partial_rank_correlation(x, y, z).value
    assert got == pytest.approx(first_order_partial(rxy, rxz, ryz), abs=1e-10)
    # partial Kendall is defined by the same formula on tau-b
    txy, txz, tyz = (kendall_tau_b_by_counting(a, b) for a, b in ((x, y), (x, z), (y, z)))
    assert zs.partial_rank_correlation(x, y, z, method="kendall").value == pytest.approx(
        first_order_partial(txy, txz, tyz), abs=1e-10)


def test_partial_two_controls_matches_precision_matrix():
    """With k controls, the partial correlation is -P_xy / sqrt(P_xx P_yy), P = inverse of the
    (rank) correlation matrix -- an independent route to the same number."""
    rng = np.random.default_rng(2)
    z1, z2 = rng.normal(size=(2, 400))
    x = z1 - z2 + rng.normal(size=400)
    y = z1 + 0.5 * x + rng.normal(size=400)
    ranks = np.column_stack([sps.rankdata(v) for v in (x, y, z1, z2)])
    p = np.linalg.inv(np.corrcoef(ranks, rowvar=False))
    expected = -p[0, 1] / math.sqrt(p[0, 0] * p[1, 1])
    controls = pd.DataFrame({"z1": z1, "z2": z2})
    assert zs.partial_rank_correlation(x, y, controls).value == pytest.approx(expected, abs=1e-10)


def test_partial_drops_nonfinite_rows_and_checks_shapes():
    rng = np.random.default_rng(3)
    z = rng.normal(size=100)
    x, y = z + rng.normal(size=100), z + rng.normal(size=100)
    zn = z.copy()
    zn[5] = np.nan
    res = zs.partial_rank_correlation(x, y, zn)
    assert (res.n, res.n_dropped) == (99, 1)
    keep = np.arange(100) != 5
    assert res.value == pytest.approx(zs.partial_rank_correlation(x[keep], y[keep], z[keep]).value)
    with pytest.raises(ValueError, match="transpose"):
        zs.partial_rank_correlation(x, y, np.vstack([z, z]))
    with pytest.raises(ValueError, match="one control"):
        zs.partial_rank_correlation(x, y, np.column_stack([z, z]), method="kendall")


# ----------------------------------------------------------------------------- tables

def _score_frame(n=300, seed=0):
    rng = np.random.default_rng(seed)
    acc = rng.normal(size=n)
    params = acc + rng.normal(size=n)
    return pd.DataFrame({
        "accuracy": acc,
        "params": params,
        "good": acc + 0.3 * rng.normal(size=n),
        "loss_like": -acc + 0.3 * rng.normal(size=n),  # lower is better
        "broken": np.where(np.arange(n) % 3 == 0, np.nan, rng.normal(size=n)),
    })


def test_correlation_table_values_and_orientation():
    df = _score_frame()
    table = zs.correlation_table(df, ["good", "loss_like", "broken"], n_boot=100,
                                 higher_is_better={"loss_like": False}, controls=["params"])
    assert list(table.index) == ["good", "loss_like", "broken"]
    for col in ("n", "n_dropped", "kendall", "kendall_lo", "kendall_hi", "spearman", "spearman_lo",
                "spearman_hi", "pearson", "pearson_lo", "pearson_hi", "precision@10%",
                "partial_spearman"):
        assert col in table.columns, col
    assert table.loc["loss_like", "kendall"] == pytest.approx(
        kendall_tau_b_by_counting(-df["loss_like"].to_numpy(), df["accuracy"].to_numpy()))
    assert table.loc["loss_like", "kendall"] > 0.5
    assert not table.loc["loss_like", "higher_is_better"]
    assert table.loc["good", "spearman"] == pytest.approx(
        sps.spearmanr(df["good"], df["accuracy"]).statistic)
    assert table.loc["broken", "n_dropped"] == 100 and table.loc["broken", "n"] == 200
    row = table.loc["good"]
    assert row["kendall_lo"] < row["kendall"] < row["kendall_hi"]
    assert row["precision@10%"] == pytest.approx(
        zs.precision_at_k(df["good"], df["accuracy"], 0.1).value)


def test_correlation_table_errors_and_no_bootstrap():
    df = _score_frame()
    with pytest.raises(ValueError, match="goood"):
        zs.correlation_table(df, ["good"], higher_is_better={"goood": True})
    with pytest.raises(KeyError, match="missing"):
        zs.correlation_table(df, ["missing"])
    table = zs.correlation_table(df, ["good"], n_boot=0)
    assert math.isnan(table.loc["good", "spearman_lo"]) and table.loc["good", "spearman"] > 0.8


def test_pairwise_rank_correlation():
    df = _score_frame()
    cols = ["good", "loss_like", "broken"]
    mat = zs.pairwise_rank_correlation(df, cols, method="kendall")
    assert list(mat.index) == cols and list(mat.columns) == cols
    assert np.allclose(mat.to_numpy(), mat.to_numpy().T)
    assert np.allclose(np.diag(mat.to_numpy()), 1.0)
    both = df[["good", "broken"]].dropna()
    assert mat.loc["good", "broken"] == pytest.approx(
        kendall_tau_b_by_counting(both["good"].to_numpy(), both["broken"].to_numpy()))
    spear = zs.pairwise_rank_correlation(df, cols)
    assert spear.loc["good", "loss_like"] == pytest.approx(
        sps.spearmanr(df["good"], df["loss_like"]).statistic)
    with pytest.raises(ValueError, match="method"):
        zs.pairwise_rank_correlation(df, cols, method="pearson")


def test_to_markdown():
    table = pd.DataFrame({"n": [10, 20], "kendall": [0.5, np.nan], "note": ["a|b", "c"]},
                         index=pd.Index(["synflow", "snip"], name="proxy"))
    lines = zs.to_markdown(table).strip().splitlines()
    assert lines[0] == "| proxy | n | kendall | note |"
    assert lines[1] == "|:---|---:|---:|:---|"
    assert lines[2] == "| synflow | 10 | 0.500 | a\\|b |"
    assert lines[3] == "| snip | 20 | nan | c |"
    assert len(lines) == 4


def test_within_group_correlation_by_hand():
    """Group a (3 rows): x ranks y perfectly, τ = 1, 3 pairs.  Group b (4 rows): one of its 6
    pairs discordant, τ = (5 − 1)/6 = 2/3.  Group c (2 rows) is below min_size.  Pooled with
    pair weights: (3·1 + 6·2/3)/9 = 7/9.  A pure depth count (x = group) gives NaN inside
    every group."""
    x = [1, 2, 3, 1, 2, 4, 3, 5, 9]
    y = [1, 2, 3, 1, 2, 3, 4, 0, 1]
    g = ["a", "a", "a", "b", "b", "b", "b", "c", "c"]
    result = zs.within_group_correlation(x, y, g)
    assert result.value == pytest.approx(7 / 9)
    assert result.n == 7 and result.note == "2 groups"
    assert math.isnan(zs.within_group_correlation([0, 0, 0, 1, 1, 1, 1, 2, 2], y, g).value)


def test_paired_difference_by_hand_and_against_scipy():
    """a ranks y perfectly (τ 1), b is y with its top two swapped (τ 4/6 on 4 points): the
    difference is 1/3; rows with a NaN anywhere are dropped from both sides."""
    y = [1.0, 2, 3, 4, 5]
    a = [1.0, 2, 3, 4, math.nan]
    b = [1.0, 2, 4, 3, 9]
    d = zs.paired_difference(a, b, y, "kendall", n_boot=0)
    assert d.value == pytest.approx(1 - 4 / 6) and (d.n, d.n_dropped) == (4, 1)
    assert math.isnan(d.lo) and math.isnan(d.share_above)
    rng = np.random.default_rng(3)
    y = rng.normal(size=200)
    a, b = y + rng.normal(size=200), y + 2 * rng.normal(size=200)
    d = zs.paired_difference(a, b, y, "spearman", n_boot=300)
    expected = sps.spearmanr(a, y).statistic - sps.spearmanr(b, y).statistic
    assert d.value == pytest.approx(expected)
    assert d.lo < d.value < d.hi and 0.0 <= d.share_above <= 1.0
    same = zs.paired_difference(a, a, y, "kendall", n_boot=50)
    assert (same.value, same.lo, same.hi, same.share_above) == (0.0, 0.0, 0.0, 0.0)


def test_paired_interval_separates_what_separate_intervals_cannot():
    """b is a with 5 % of its values replaced by noise: both rank y about as well, so their
    own intervals overlap, but a is better on nearly every joint resample."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=400)
    a = y + rng.normal(size=400)
    b = a.copy()
    hit = rng.choice(400, size=20, replace=False)
    b[hit] = rng.normal(scale=3, size=20)
    lo_a, _ = zs.bootstrap_ci(a, y, "kendall", n_boot=300)
    _, hi_b = zs.bootstrap_ci(b, y, "kendall", n_boot=300)
    assert lo_a < hi_b  # the separate intervals overlap
    d = zs.paired_difference(a, b, y, "kendall", n_boot=300)
    assert d.lo > 0 and d.share_above > 0.97


def test_paired_difference_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        zs.paired_difference([1, 2], [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="statistic"):
        zs.paired_difference([1, 2], [1, 2], [1, 2], "median")
    with pytest.raises(ValueError, match="n_boot"):
        zs.paired_difference([1, 2], [1, 2], [1, 2], n_boot=-1)


def test_paired_difference_reports_both_statistics():
    y = [1.0, 2, 3, 4]
    d = zs.paired_difference([1.0, 2, 3, 4], [1.0, 2, 4, 3], y, "kendall", n_boot=0)
    assert (d.a_value, d.b_value) == (pytest.approx(1.0), pytest.approx(4 / 6))


def test_degenerate_inputs_are_recognised_despite_rounding():
    """Cases exact arithmetic calls degenerate but floating point leaves a residue of ~1e-17:
    a bootstrap resample that drew one value only (Pearson over [3, 3, 3]: undefined, so the
    interval of [3, 3, 0] vs [2, 3, 1] is that of its defined resamples, r = 0.866 or 1);
    partial Kendall of z with itself given z (scipy's τ(z, z) is 1 - 1e-16 with ties: 0 by
    definition, not an arbitrary ratio); partial Spearman with a constant y (NaN whatever x);
    and two paired statistics equal in exact arithmetic (Pearson is affine-invariant: a
    difference of rounding noise is not "above 0" on any resample)."""
    lo, hi = zs.bootstrap_ci([3, 3, 0], [2, 3, 1], "pearson", n_boot=2000, seed=0)
    assert (lo, hi) == pytest.approx((math.sqrt(3) / 2, 1.0))
    z = [0, 1, 1, 2, 2, 3, 3, 3, 4, 5]
    assert zs.partial_rank_correlation(z, z, z, method="kendall").value == 0.0
    for x in ([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]):
        assert math.isnan(zs.partial_rank_correlation(x, [5] * 5, [1, 2, 3, 4, 5]).value)
    a = np.arange(30.0)
    diff = zs.paired_difference(a, 3 * a + 1, np.sin(a), "pearson", n_boot=500, seed=0)
    assert abs(diff.value) < 1e-15 and diff.share_above == 0.0
