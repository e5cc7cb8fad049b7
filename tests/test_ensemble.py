"""Rank aggregation (zcproxy.ensemble): each rule pinned by hand on a 4-architecture table."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from zcproxy.ensemble import RULES, canonical_rule, combine, ensemble_scores
from zcproxy.search import Member, combined_rank

# a: ranks 1, 2, 3.5, 3.5 (ties averaged); b: ranks 4, 1.5, 3, 1.5
TABLE = pd.DataFrame({"a": [1.0, 2.0, 3.0, 3.0], "b": [30.0, 10.0, 20.0, 10.0]},
                     index=["w", "x", "y", "z"])
UP = {"a": True, "b": True}


def test_mean_rank_by_hand():
    # normalised ranks (r - 1) / 3: a 0, 1/3, 5/6, 5/6; b 1, 1/6, 2/3, 1/6
    got = ensemble_scores(TABLE, ["a", "b"], "rank", UP)
    assert got.tolist() == pytest.approx([0.5, 0.25, 0.75, 0.5])
    assert list(got.index) == ["w", "x", "y", "z"] and got.name == "mean_rank(a,b)"


def test_log_rank_by_hand():
    # AZ-NAS: Σ log(rank / N), N = 4, the best getting rank N
    expected = [math.log(1 / 4) + math.log(4 / 4), math.log(2 / 4) + math.log(1.5 / 4),
                math.log(3.5 / 4) + math.log(3 / 4), math.log(3.5 / 4) + math.log(1.5 / 4)]
    got = ensemble_scores(TABLE, ["a", "b"], "aznas", UP)
    assert got.tolist() == pytest.approx(expected)
    assert got.tolist() == pytest.approx([-1.386294, -1.673976, -0.421213, -1.114361], abs=1e-6)
    assert got.idxmax() == "y"


def test_max_abs_by_hand():
    # FreeREA: a / 3 + b / 30
    got = ensemble_scores(TABLE, ["a", "b"], "freerea", UP)
    assert got.tolist() == pytest.approx([1 / 3 + 1, 2 / 3 + 1 / 3, 1 + 2 / 3, 1 + 1 / 3])


def test_lower_is_better_members_are_negated():
    down = {"a": True, "b": False}
    # -b ranks 1, 3.5, 2, 3.5 -> 0, 5/6, 1/3, 5/6
    assert ensemble_scores(TABLE, ["a", "b"], "mean_rank", down).tolist() == pytest.approx(
        [0.0, 7 / 12, 7 / 12, 5 / 6])
    # -b / 30 = -1, -1/3, -2/3, -1/3
    assert ensemble_scores(TABLE, ["a", "b"], "max_abs", down).tolist() == pytest.approx(
        [1 / 3 - 1, 2 / 3 - 1 / 3, 1 - 2 / 3, 1 - 1 / 3])
    # a single bool applies to every member
    assert ensemble_scores(TABLE, ["a", "b"], "rank", False).tolist() == pytest.approx(
        [1 - 0.5, 1 - 0.25, 1 - 0.75, 1 - 0.5])


def test_registry_gives_the_direction(monkeypatch):
    frame = pd.DataFrame({"naswot": [1.0, 2.0], "n_params": [5.0, 3.0]})
    assert ensemble_scores(frame, ["naswot", "n_params"]).tolist() == [0.5, 0.5]
    with pytest.raises(KeyError):
        ensemble_scores(frame.rename(columns={"naswot": "mystery"}), ["mystery", "n_params"])


def test_nan_is_worst_or_propagates():
    frame = pd.DataFrame({"a": [1.0, math.nan, 3.0, 2.0], "b": [4.0, 3.0, 2.0, 1.0]})
    # worst: the NaN ranks below everything (a ranks 2, 1, 4, 3)
    worst = ensemble_scores(frame, ["a", "b"], "mean_rank", True)
    assert worst.tolist() == pytest.approx([(1 / 3 + 1) / 2, (0 + 2 / 3) / 2,
                                            (1 + 1 / 3) / 2, (2 / 3 + 0) / 2])
    # ... and counts -1 (the lowest value a normalised score can take) under max_abs
    assert ensemble_scores(frame, ["a", "b"], "max_abs", True).iloc[1] == pytest.approx(-1 + 3 / 4)
    # propagate: NaN where a member is missing; the rest ranked among themselves (3 rows)
    kept = ensemble_scores(frame, ["a", "b"], "mean_rank", True, nan="propagate")
    assert math.isnan(kept.iloc[1])
    # rows 0, 2, 3: a ranks 1, 3, 2 -> 0, 1, 0.5; b ranks 3, 2, 1 -> 1, 0.5, 0
    assert kept.drop(index=1).tolist() == pytest.approx([0.5, 0.75, 0.25])
    aznas = ensemble_scores(frame, ["a", "b"], "log_rank", True, nan="propagate")
    assert aznas.iloc[0] == pytest.approx(math.log(1 / 3) + math.log(3 / 3))


def test_infinite_scores():
    frame = pd.DataFrame({"naswot": [-math.inf, 10.0, 20.0], "b": [1.0, 2.0, 3.0]})
    # -inf is the worst rank; under max_abs it maps to -1 and the scale is the finite maximum
    assert ensemble_scores(frame, ["naswot", "b"], "rank", True).tolist() == pytest.approx(
        [0.0, 0.5, 1.0])
    assert ensemble_scores(frame, ["naswot", "b"], "max_abs", True).tolist() == pytest.approx(
        [-1 + 1 / 3, 0.5 + 2 / 3, 1 + 1])
    # complete cases: an undefined score drops its row whether it reads NaN or -inf (or +inf)
    for missing in (math.nan, -math.inf, math.inf):
        kept = ensemble_scores(frame.assign(naswot=[missing, 10.0, 20.0]), ["naswot", "b"],
                               "log_rank", True, nan="propagate")
        assert math.isnan(kept.iloc[0])
        assert kept.iloc[1:].tolist() == pytest.approx([2 * math.log(1 / 2), 0.0])


def test_small_populations_and_bad_input():
    assert combine([[3.0, 1.0]], "mean_rank").tolist() == [0.5]
    assert combine([[3.0, 1.0]], "log_rank").tolist() == [0.0]
    assert combine([[3.0, -2.0]], "max_abs").tolist() == [0.0]
    assert combine([[0.0], [0.0]], "max_abs").tolist() == [0.0, 0.0]  # no 0/0
    assert [canonical_rule(r) for r in ("rank", "aznas", "freerea")] == list(RULES)
    with pytest.raises(ValueError, match="unknown ensemble rule"):
        combine([[1.0]], "borda")
    with pytest.raises(ValueError, match="signs"):
        combine([[1.0, 2.0]], "rank", [1.0, 0.5])
    with pytest.raises(ValueError, match="repeat"):
        ensemble_scores(TABLE, ["a", "a"], "rank", True)


def test_ranks_equal_scipy_and_the_esformer_rule_is_unchanged():
    """The ESFormer search's combined mode now goes through this module; its old arithmetic
    (scipy ranks, (r - 1) / (n - 1) summed, / 2) must come out to the bit, or logged searches
    would not replay."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        values = rng.integers(0, 6, size=(n, 2)).astype(float)
        values[rng.random((n, 2)) < 0.15] = math.nan
        members = [Member(i, None, {"entropic": es, "logsynflow": ls})
                   for i, (es, ls) in enumerate(values)]
        if n == 1:
            old = [0.5]
        else:
            total = np.zeros(n)
            for column in values.T:
                column = np.where(np.isnan(column), -np.inf, column)
                total += (rankdata(column, method="average") - 1) / (n - 1)
            old = (total / 2).tolist()
        assert combined_rank(members) == old


def test_the_committed_combined_search_replays_unchanged(tmp_path):
    """The Table 5 'combined' run (results/search/table5-combined) replayed through today's
    search: every logged candidate is proposed again in order (a ResumeMismatch otherwise),
    nothing is rescored, and the same architecture is chosen."""
    import json
    import shutil
    from pathlib import Path

    from zcproxy.search import ResumeMismatch, SearchConfig, read_events, run_search

    src = Path(__file__).resolve().parents[1] / "results" / "search" / "table5-combined"
    out = tmp_path / "combined"
    shutil.copytree(src, out)
    (out / "best.json").unlink()
    logged = (out / "log.jsonl").read_bytes()

    def no_scoring(arch, proxies):
        raise AssertionError("a replay must not score")
    # written before the ES reading was a setting: it used |weights|, and resumes only so
    config = SearchConfig(**read_events(out / "log.jsonl")[0]["config"])
    with pytest.raises(ResumeMismatch, match="es_proxy: log 'entropic_abs' vs now 'entropic'"):
        run_search(config, out, score_fn=no_scoring, resume=True, progress=False)
    config = SearchConfig(**{**read_events(out / "log.jsonl")[0]["config"],
                             "es_proxy": "entropic_abs"})
    run_search(config, out, score_fn=no_scoring, resume=True, progress=False)
    assert (out / "log.jsonl").read_bytes() == logged
    before, after = (json.loads((d / "best.json").read_text()) for d in (src, out))
    before.pop("search_seconds"), after.pop("search_seconds")
    assert after["config"].pop("es_proxy") == "entropic_abs"
    assert after == before
