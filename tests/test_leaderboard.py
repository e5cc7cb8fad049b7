"""Rank aggregates in correlate and the leaderboard; the real-image batch of other datasets."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from zcproxy import correlate, leaderboard
from zcproxy.ensemble import parse_ensemble
from zcproxy.runner import ScoringJob, run_settings


def test_leaderboard_rows_by_hand():
    """4 architectures, accuracy 1..4.  logsynflow ranks them perfectly (τ = 1); synflow swaps
    the top two (5 concordant, 1 discordant pair: τ = 4/6).  Their mean normalised rank is
    [0, 1/3, 5/6, 5/6]: 5 concordant pairs, one tied in x, τ_b = 5/√(5·6) = 0.9129.  The
    baseline n_params comes last whatever its τ."""
    scores = pd.DataFrame({"index": range(4), "logsynflow": [1.0, 2, 3, 4],
                           "synflow": [1.0, 2, 4, 3], "n_params": [4.0, 3, 2, 1]})
    for p in ("logsynflow", "synflow", "n_params"):
        scores[f"seconds_{p}"] = 0.5
    board = leaderboard.leaderboard(
        scores, bench="nats-tss", accuracy=pd.Series([1.0, 2, 3, 4]), dataset="cifar10",
        ensembles=[parse_ensemble("pair=rank:logsynflow,synflow")], n_boot=0)
    assert board["name"].tolist() == ["logsynflow", "pair", "synflow", "n_params"]
    tau = dict(zip(board["name"], board["kendall"]))
    assert tau["logsynflow"] == pytest.approx(1.0)
    assert tau["pair"] == pytest.approx(5 / math.sqrt(30))
    assert tau["synflow"] == pytest.approx(4 / 6)
    assert board.loc[board["name"] == "pair", "seconds"].item() == 1.0  # sum of its members
    assert "VKDNW" in board.loc[board["name"] == "synflow", "published"].item()
    assert leaderboard.to_markdown(board).count("\n") == len(board) + 1


def test_undefined_last_ranks_unscorable_architectures_below_the_rest():
    """5 architectures, accuracy 1..5.  ``naswot`` could not score the worst one (NaN, as for
    a NATS-tss cell whose output does not depend on its input) and ranks the other four
    perfectly: τ = 1 over n = 4, and τ = 1 over all 5 with the NaN ranked last.  ``synflow``
    gives −inf to the *best* one: dropped, τ = 1 over 4; ranked last, 4 of the 10 pairs are
    discordant, τ = (6 − 4)/10 = 0.2.  ``grasp`` has not reached the last two architectures
    (no seconds): they are left out of both figures, not ranked last.  The ensemble ranks only
    the architectures both members could score (2, 3, 4: τ = 1 over n = 3), whether a member
    says undefined with NaN or with −inf; in the second figure each member's undefined score
    ranks at that member's bottom (AZ-NAS's aggregation): normalised mean ranks 0.125, 0.375,
    0.625, 0.875 and 0.5 for the best, so 2 of the 10 pairs are discordant, τ = 0.6."""
    nan, inf = math.nan, math.inf
    scores = pd.DataFrame({"index": range(5), "naswot": [nan, 2.0, 3, 4, 5],
                           "synflow": [1.0, 2, 3, 4, -inf], "grasp": [3.0, 1, 2, nan, nan],
                           "params": [1.0, 2, 3, 4, 5]})
    for p in ("naswot", "synflow", "grasp"):
        scores[f"seconds_{p}"] = 0.5
    scores.loc[3:, "seconds_grasp"] = math.nan
    board = leaderboard.leaderboard(
        scores, bench="nats-tss", accuracy=pd.Series([1.0, 2, 3, 4, 5]), dataset="cifar10",
        ensembles=[parse_ensemble("pair=mean_rank:naswot,synflow")], n_boot=0).set_index("name")
    assert board.loc["naswot", ["n", "n_all"]].tolist() == [4, 5]
    assert board.loc["naswot", ["kendall", "kendall_all"]].tolist() == pytest.approx([1.0, 1.0])
    assert board.loc["synflow", ["kendall", "kendall_all"]].tolist() == pytest.approx([1.0, 0.2])
    assert board.loc["grasp", ["n", "n_all"]].tolist() == [3, 3]
    assert board.loc["grasp", "kendall"] == board.loc["grasp", "kendall_all"]
    assert board.loc["pair", ["n", "n_all"]].tolist() == [3, 5]
    assert board.loc["pair", ["kendall", "kendall_all"]].tolist() == pytest.approx([1.0, 0.6])
    assert "1.000 / 1.000" in leaderboard.to_markdown(board.reset_index())


@pytest.mark.parametrize("text", ["noequals", "x=", "x=rank:onlyone", "x=median:a,b"])
def test_bad_ensemble_specs_are_one_line_errors(text, capsys):
    assert correlate.main(["--bench", "nats-tss", "--sample", "2", "--ensemble", text,
                           "--out", "/tmp/zc-never-written"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ensemble" in err[0]


def test_correlate_reports_an_ensemble_like_a_proxy(tmp_path, capsys):
    out = tmp_path / "run"
    assert correlate.main(["--bench", "nats-tss", "--sample", "6", "--proxies",
                           "logsynflow,synflow", "--no-baselines", "--bootstrap", "0",
                           "--ensemble", "pair=log_rank:logsynflow,synflow", "--out", str(out),
                           "--no-progress"]) == 0
    table = pd.read_csv(out / "correlations.csv", index_col=0)
    assert table.loc["pair", "kind"] == "ensemble"
    scores = pd.read_csv(out / "scores.csv")
    # AZ-NAS's rule by hand: Σ log(rank/N) over both members, N = 6.
    from scipy.stats import kendalltau, rankdata
    expected = sum(pd.Series(rankdata(scores[m]) / len(scores)).map(math.log)
                   for m in ("logsynflow", "synflow"))
    assert scores["pair"].to_numpy() == pytest.approx(expected.to_numpy())
    assert table.loc["pair", "kendall"] == pytest.approx(
        kendalltau(expected, scores["accuracy"]).statistic)
    # The leaderboard of that run, under a name of its own, agrees with correlate's table.
    boards = tmp_path / "boards"
    assert leaderboard.main(["--bench", "nats-tss", "--run", str(out), "--name", "tss-pair",
                             "--ensemble", "pair=log_rank:logsynflow,synflow", "--bootstrap",
                             "0", "--out", str(boards)]) == 0
    assert sorted(f.name for f in boards.iterdir()) == [
        "summary.csv", "summary.md", "tss-pair-cifar10-members.csv", "tss-pair-cifar10.csv",
        "tss-pair-cifar10.md"]
    board = pd.read_csv(boards / "tss-pair-cifar10.csv").set_index("name")
    assert board.loc["pair", "kendall"] == pytest.approx(table.loc["pair", "kendall"])
    # The summary reads that table back; a second study in the folder joins it, said out loud.
    summary = pd.read_csv(boards / "summary.csv").set_index("name")
    assert summary.loc["pair", "tau:tss-pair-cifar10"] == pytest.approx(
        board.loc["pair", "kendall"])
    capsys.readouterr()
    assert leaderboard.main(["--bench", "nats-tss", "--run", str(out), "--name", "tss-again",
                             "--bootstrap", "0", "--out", str(boards)]) == 0
    said = capsys.readouterr().out
    assert "2 tables side by side, 1 of them from earlier runs" in said and "tss-pair" in said
    summary = pd.read_csv(boards / "summary.csv").set_index("name")
    assert summary.loc["logsynflow", "tables"] == 2 and summary.loc["pair", "tables"] == 1


def test_leaderboard_summary_by_hand(tmp_path, capsys):
    """Two tables of 3 and 4 rows.  `a` is 1st of 3 and 2nd of 4 (places 1/3, 2/4: median
    5/12); `b` 2nd of 3 and 1st of 4 (median 5/12 too: the tie goes by name); `ens` exists in
    one table only (last of 4: place 1) and ranks last; the baseline is ranked like any row; an
    aggregate named alike in both tables but with other members stays two rows."""
    from zcproxy import leaderboard_summary as ls
    one = pd.DataFrame({"name": ["a", "b", "n_params"], "kind": ["proxy", "proxy", "baseline"],
                        "n": [10, 10, 10], "kendall": [0.5, 0.4, 0.1]})
    two = pd.DataFrame({"name": ["b", "a", "ens", "n_params"],
                        "kind": ["proxy", "proxy", "ensemble (mean_rank: a+b)", "baseline"],
                        "n": [20, 18, 20, 20], "kendall": [0.9, 0.8, 0.3, 0.6]})
    summary = ls.summarize({"nats-tss-cifar10": one, "nats-sss-cifar10": two})
    assert summary["name"].tolist() == ["a", "b", "n_params", "ens"]
    row = summary.set_index("name")
    assert row.loc["a", "median_place"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert row.loc["n_params", "rank:nats-sss-cifar10"] == 3  # τ 0.6 is above ens's 0.3
    assert row.loc["ens", "tables"] == 1 and math.isnan(row.loc["ens", "tau:nats-tss-cifar10"])
    text = ls.to_markdown(summary, {"nats-tss-cifar10": one, "nats-sss-cifar10": two})
    assert "0.800 (2/4, n 18)" in text and "0.900 (1/4) |" in text  # fewer architectures: said
    assert "- **tss C10**: `nats-tss-cifar10.md`, 10 architectures, 3 rows" in text
    # Same name, other members: two rows, not one that mixes them.
    other = two.assign(kind=two["kind"].replace("ensemble (mean_rank: a+b)",
                                                "ensemble (log_rank: a+b)"))
    both = ls.summarize({"x-cifar10": two, "y-cifar10": other})
    assert (both["name"] == "ens").sum() == 2
    # The folder's tables, benchmark by benchmark; members' tables are not leaderboards.
    for stem, frame in {"nats-tss-cifar100": one, "nb101-zoo-cifar10": two,
                        "nats-tss-ImageNet16-120-networks-ImageNet16-120": one,
                        "nats-tss-cifar100-networks-cifar100": one,
                        "nats-tss-cifar10": one, "nats-tss-cifar10-members": one}.items():
        frame.to_csv(tmp_path / f"{stem}.csv", index=False)
    order = ["nb101-zoo-cifar10", "nats-tss-cifar10", "nats-tss-cifar100",
             "nats-tss-cifar100-networks-cifar100",
             "nats-tss-ImageNet16-120-networks-ImageNet16-120"]
    assert [p.stem for p in ls.table_files(tmp_path)] == order
    assert ls.main([str(tmp_path)]) == 0
    assert (tmp_path / "summary.md").read_text().count("\n| `") == 4
    assert [p.stem for p in ls.table_files(tmp_path)] == order  # not summary.csv
    # A --help a newcomer can follow; bad input gets one-line errors.
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        ls.main(["--help"])
    assert done.value.code == 0 and "rank divided by the table's rows" in capsys.readouterr().out
    assert ls.main([str(tmp_path / "nowhere")]) == 2
    assert "no leaderboard tables" in capsys.readouterr().err
    pd.DataFrame({"index": [0], "score": [1.0]}).to_csv(tmp_path / "nats-sss-cifar10.csv")
    assert ls.main([str(tmp_path)]) == 2
    assert "nats-sss-cifar10: not a leaderboard table" in capsys.readouterr().err


def test_other_datasets_get_their_own_or_labelled_images():
    """The data folder has no ImageNet16-120 images: its networks get CIFAR-10 resized to
    16x16, and the run's settings say so (so a journal never mixes the two)."""
    from zcproxy.nasbench import get_benchmark
    from zcproxy.runner import job_batch
    job = ScoringJob(bench="nats-tss", proxies=("naswot",), dataset="ImageNet16-120",
                     batch_size=8)
    x, y, source = job_batch(job, get_benchmark("nats-tss"))
    assert x.shape == (8, 3, 16, 16) and source.startswith("cifar10 (no ImageNet16-120")
    settings, _ = run_settings(job)
    assert settings["inputs_source"] == source
    c10, _ = run_settings(ScoringJob(bench="nats-tss", proxies=("naswot",), batch_size=8))
    assert "inputs_source" not in c10
    assert c10["inputs_fingerprint"] != settings["inputs_fingerprint"]


def test_member_contributions_against_the_aggregates_built_directly():
    """Two members that track accuracy and one that points the wrong way: the wrong one's
    Δτ is negative with an interval below 0, and every τ with/without equals the τ of the
    aggregate built by zcproxy.ensemble from that member set."""
    import numpy as np

    from zcproxy.ensemble import ensemble_scores
    from zcproxy.stats import kendall_tau

    rng = np.random.default_rng(1)
    acc = pd.Series(rng.normal(size=300))
    scores = pd.DataFrame({"index": range(300),
                           "naswot": acc + rng.normal(size=300),
                           "logsynflow": acc + rng.normal(size=300),
                           "entropic": -acc + rng.normal(size=300)})
    scores.loc[7, "naswot"] = math.nan
    for p in ("naswot", "logsynflow", "entropic"):
        scores[f"seconds_{p}"] = 0.1
    spec = parse_ensemble("trio=log_rank:naswot,logsynflow,entropic")
    members = list(spec[2])
    table = leaderboard.member_contributions(scores, accuracy=acc, ensembles=[spec], n_boot=200)
    assert table["member"].tolist() == ["naswot", "logsynflow", "entropic"]
    full = ensemble_scores(scores, members, "log_rank", nan="propagate")
    keep = np.isfinite(full)
    for row in table.itertuples(index=False):
        rest = [m for m in members if m != row.member]
        # both aggregates rank the same 299 architectures: the full one's
        without = ensemble_scores(scores[keep], rest, "log_rank", nan="propagate")
        assert row.n == 299
        assert row.kendall_with == pytest.approx(kendall_tau(full[keep], acc[keep]).value)
        assert row.kendall_without == pytest.approx(kendall_tau(without, acc[keep]).value)
        assert row.delta == pytest.approx(row.kendall_with - row.kendall_without)
    wrong = table.set_index("member").loc["entropic"]
    assert wrong.delta < 0 and wrong.delta_hi < 0 and wrong.share_above < 0.05
    assert "`entropic`" in leaderboard.contributions_markdown(table)


def test_a_run_of_cifar100_networks_labels_the_rows_that_saw_cifar10_images(tmp_path, capsys):
    """The data folder has no CIFAR-100 images, so NASWOT on CIFAR-100 networks sees CIFAR-10
    images: its row (and an aggregate with it) is marked †, the data-free LogSynflow's is not,
    the tables are named after the networks and rank CIFAR-100 accuracy by default, and a
    --network-dataset that contradicts the run is an error."""
    out = tmp_path / "run"
    assert correlate.main(["--bench", "nats-tss", "--dataset", "cifar100", "--sample", "5",
                           "--proxies", "logsynflow,naswot", "--batch-size", "8",
                           "--no-baselines", "--bootstrap", "0", "--out", str(out),
                           "--no-progress"]) == 0
    boards = tmp_path / "boards"
    args = ["--bench", "nats-tss", "--run", str(out), "--bootstrap", "0", "--out", str(boards),
            "--ensemble", "both=mean_rank:logsynflow,naswot"]
    assert leaderboard.main(args) == 0
    text = (boards / "nats-tss-cifar100-networks-cifar100.md").read_text()
    assert "networks built for cifar100" in text
    assert "image batch was cifar10 (no cifar100 images in the data folder)" in text
    rows = {line.split("`")[1]: line for line in text.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert "†" in rows["naswot"] and "†" in rows["both"] and "†" not in rows["logsynflow"]
    board = pd.read_csv(boards / "nats-tss-cifar100-networks-cifar100.csv").set_index("name")
    assert board["needs_data"].to_dict() == {"naswot": True, "both": True, "logsynflow": False}
    capsys.readouterr()
    assert leaderboard.main(args + ["--network-dataset", "cifar10"]) == 2
    assert "contradicts" in capsys.readouterr().err


def test_a_recipe_that_reads_no_image_is_not_labelled_as_having_seen_stand_in_images():
    """``grad_norm`` reads the image batch, but its ``recipe="zennas"`` (Gaussian inputs,
    random labels) reads none: under that option its row, and an aggregate of it with the
    data-free LogSynflow, carry no †; with the default recipe, or beside NASWOT, they do."""
    scores = pd.DataFrame({"index": range(4), "grad_norm": [1.0, 2, 4, 3],
                           "logsynflow": [1.0, 2, 3, 4], "naswot": [2.0, 1, 3, 4],
                           "n_params": [4.0, 3, 2, 1]})
    for p in ("grad_norm", "logsynflow", "naswot", "n_params"):
        scores[f"seconds_{p}"] = 0.5
    ensembles = [parse_ensemble("free=mean_rank:grad_norm,logsynflow"),
                 parse_ensemble("mixed=mean_rank:grad_norm,naswot")]

    def marked(options):
        board = leaderboard.leaderboard(
            scores, bench="nats-tss", accuracy=pd.Series([1.0, 2, 3, 4]), dataset="cifar100",
            ensembles=ensembles, n_boot=0, proxy_options=options)
        return board.set_index("name")["needs_data"].to_dict()

    assert marked({"grad_norm": {"recipe": "zennas"}}) == {
        "grad_norm": False, "logsynflow": False, "naswot": True, "free": False, "mixed": True,
        "n_params": False}
    for default in (None, {"grad_norm": {"recipe": "abdelfattah"}}):
        assert marked(default)["grad_norm"] and marked(default)["free"]


def test_leaderboard_of_a_population_ranks_only_its_cells(tmp_path, capsys):
    """--population no-dead-ops keeps the cells without a dead operation (the 9,445 cells
    VKDNW ranks), says how many of the run's it kept, and names its tables apart."""
    from zcproxy.nasbench.cells import dead_operations
    out = tmp_path / "run"
    assert correlate.main(["--bench", "nats-tss", "--sample", "12", "--proxies", "logsynflow",
                           "--bootstrap", "0", "--out", str(out), "--no-progress"]) == 0
    scores = pd.read_csv(out / "scores.csv")
    kept = int(sum(not dead_operations(a) for a in scores["arch"]))
    assert 0 < kept < len(scores)  # this sample has cells of both kinds
    boards = tmp_path / "boards"
    args = ["--bench", "nats-tss", "--run", str(out), "--bootstrap", "0", "--out", str(boards)]
    assert leaderboard.main(args + ["--population", "no-dead-ops"]) == 0
    board = pd.read_csv(boards / "nats-tss-no-dead-ops-cifar10.csv").set_index("name")
    assert board.loc["logsynflow", "n_all"] == kept
    assert f"{kept} of the run's {len(scores)} architectures" in (
        boards / "nats-tss-no-dead-ops-cifar10.md").read_text()
    capsys.readouterr()
    assert leaderboard.main(args + ["--population", "dead"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no population 'dead'" in err[0]


def test_a_missing_run_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    argv = ["--bench", "nats-tss", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path)]
    assert leaderboard.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scores.csv not found" in err[0]
    with pytest.raises(FileNotFoundError, match="scores.csv not found"):
        leaderboard.main(argv + ["--debug"])


def test_scores_of_another_benchmark_are_refused_not_ranked_against_its_accuracy(tmp_path,
                                                                                  capsys):
    # Accuracy is looked up by index: NATS-tss scores given --bench nb101 made a table of
    # τ ≈ 0 against NB101 cells that happen to share those indices, without a word.
    import json
    out = tmp_path / "run"
    assert correlate.main(["--bench", "nats-tss", "--sample", "6", "--proxies", "logsynflow",
                           "--bootstrap", "0", "--out", str(out), "--no-progress"]) == 0
    boards = tmp_path / "boards"
    capsys.readouterr()
    argv = ["--run", str(out), "--bootstrap", "0", "--out", str(boards)]
    assert leaderboard.main(["--bench", "nb101"] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds nats-tss scores (its run.json), not nb101" in err[0], err
    # Without the record, the architecture strings give it away.
    record = json.loads((out / "run.json").read_text())
    del record["bench"]
    (out / "run.json").write_text(json.dumps(record))
    assert leaderboard.main(["--bench", "nats-sss"] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in scores.csv but" in err[0] and "6 of 6 differ" in err[0], err
    assert not boards.exists()
    assert leaderboard.main(["--bench", "nats-tss"] + argv) == 0
