"""What zcproxy guarantees to an unlucky user on an unlucky machine (GitHub issue 13).

One test per class of fault: scores never attached to other settings, other data or another
architecture; one proxy's failure never spoils another's; failures of the machine retried;
outputs whole or not at all under a kill; a search never overwriting another run; every
command-line mistake one line on stderr.  Each scores a handful of NATS-tss architectures with
cheap proxies (``n_params`` needs no forward pass).
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from zcproxy import analysis, correlate
from zcproxy.journal import LEGACY_COLUMNS, SESSION_PREFIX, read_journal
from zcproxy.registry import register_proxy, unregister_proxy
from zcproxy.runner import ScoringJob, run_scoring

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "correlate"
SHARED_DATA = Path(os.environ.get("ZCPROXY_DATA", "../shared/data")).resolve()


def run_cli(out: Path, *extra: str, bench: str = "nats-tss", sample: str = "4",
            proxies: str = "n_params") -> int:
    return correlate.main(["--bench", bench, "--sample", sample, "--seed", "5", "--proxies",
                           proxies, "--no-baselines", "--bootstrap", "0", "--no-progress",
                           "--out", str(out), *extra])


def one_line_error(capsys) -> str:
    """The command's stderr, which must be exactly one line and no traceback."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.fixture
def proxy_state():
    """Test proxies whose behaviour the test switches: 'ok' returns 1.0, 'oom' fails like a
    GPU out of memory (the machine), 'bad' like a cell the proxy cannot handle."""
    state = {"mode": "ok", "calls": 0}

    @register_proxy("zc_rel_flaky", needs_forward=False, replace=True, description="test")
    def flaky(ctx):
        state["calls"] += 1
        if state["mode"] == "oom":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if state["mode"] == "bad":
            raise ValueError("bad cell")
        return 1.0

    @register_proxy("zc_rel_linalg", needs_forward=False, replace=True, description="test")
    def linalg(ctx):
        raise np.linalg.LinAlgError("eigh did not converge")
    yield state
    unregister_proxy("zc_rel_flaky")
    unregister_proxy("zc_rel_linalg")


def tss_data(tmp_path: Path) -> Path:
    """A private copy of the NATS-tss table, to edit as another data version would."""
    folder = tmp_path / "data"
    (folder / "nats-tss").mkdir(parents=True)
    shutil.copy(SHARED_DATA / "nats-tss" / "nats_tss_hp200_test.csv", folder / "nats-tss")
    return folder


# ---------------------------------------------------------------- settings and data records
def test_merge_refuses_shards_scored_with_other_settings(tmp_path, capsys):
    assert run_cli(tmp_path, "--shard", "0/2") == 0
    assert run_cli(tmp_path, "--shard", "1/2", "--dataset", "cifar100") == 0
    capsys.readouterr()
    assert run_cli(tmp_path, "--merge") == 2
    error = one_line_error(capsys)
    assert "journal.shard-1-of-2.csv" in error and "dataset: 'cifar100' there, 'cifar10' now" in error
    assert not (tmp_path / "scores.csv").exists()


def test_a_journal_scored_with_other_settings_is_refused_on_resume(tmp_path, capsys):
    """A journal copied without its run.json still carries its settings."""
    assert run_cli(tmp_path / "a", "--dataset", "cifar100") == 0
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "journal.csv", tmp_path / "b" / "journal.csv")
    capsys.readouterr()
    assert run_cli(tmp_path / "b") == 2
    assert "dataset: 'cifar100' there, 'cifar10' now" in one_line_error(capsys)
    assert not (tmp_path / "b" / "scores.csv").exists()


def test_scores_of_another_data_version_or_architecture_are_refused(tmp_path, capsys):
    data = tss_data(tmp_path)
    out = tmp_path / "out"
    assert run_cli(out, "--data-dir", str(data)) == 0
    scored = pd.read_csv(out / "scores.csv")["index"].tolist()
    # Another data version: two sampled architectures swap places in the table.
    csv = data / "nats-tss" / "nats_tss_hp200_test.csv"
    original = csv.read_bytes()
    table = pd.read_csv(csv)
    a, b = scored[0], scored[1]
    table.loc[[a, b], "arch"] = table.loc[[b, a], "arch"].to_numpy()
    table.to_csv(csv, index=False)
    capsys.readouterr()
    assert run_cli(out, "--data-dir", str(data)) == 2
    assert "the benchmark table differs" in one_line_error(capsys)
    # The data restored, but a row of the journal names another architecture than its index.
    csv.write_bytes(original)
    journal = out / "journal.csv"
    lines = journal.read_text().splitlines(keepends=True)
    first = 3  # settings, header, this run's session line, then the rows
    index, arch, rest = lines[first].split(",", 2)
    lines[first] = ",".join([index, table["arch"].iat[0], rest])
    journal.write_text("".join(lines))
    assert run_cli(out, "--data-dir", str(data)) == 2
    assert f"index {index}" in one_line_error(capsys)


def test_scores_of_another_image_batch_are_refused_and_nothing_is_touched(tmp_path, capsys):
    """A data-dependent proxy's scores belong to the CIFAR-10 batch they saw: a rerun on another
    copy of CIFAR-10 (here every pixel inverted, written in the official pickle format) stops
    with one line naming the batch, and leaves the folder as it was."""
    data = tss_data(tmp_path)
    copy = _cifar10_copy(data)
    out = tmp_path / "out"
    assert run_cli(out, "--data-dir", str(data), proxies="naswot") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _invert_images(copy)
    capsys.readouterr()
    assert run_cli(out, "--data-dir", str(data), proxies="naswot") == 2
    assert "the real-image batch differs" in one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("folder", sorted(p.name for p in COMMITTED.iterdir()
                                            if (p / "journal.csv").is_file()))
def test_committed_journals_carry_the_settings_of_todays_data(folder):
    """"Run the same command again and nothing is rescored" holds for the committed folders
    only while their journals' settings (benchmark table and image batch fingerprints, seed,
    batch, options, arithmetic) are what this checkout computes from the data folder today.
    A machine whose data folder holds a dataset's own images, where the journal recorded the
    CIFAR-10 stand-in, rightly computes another batch: skipped there, saying why."""
    from zcproxy.runner import run_settings, settings_differences
    recorded, frame = read_journal(COMMITTED / folder / "journal.csv")
    job = ScoringJob(bench=recorded["bench"], proxies=tuple(sorted(set(frame["proxy"]))),
                     dataset=recorded.get("dataset", "cifar10"), seed=recorded["seed"],
                     batch_size=recorded["batch_size"],
                     proxy_options=recorded.get("proxy_options") or {},
                     exact=recorded.get("arithmetic", "exact") == "exact")
    now = run_settings(job)[0]
    if recorded.get("inputs_source") and not now.get("inputs_source"):
        pytest.skip(f"{folder} recorded {recorded['inputs_source']}; this data folder has the "
                    f"{recorded['dataset']} images themselves")
    assert settings_differences(recorded, now) == []


def _cifar10_copy(data: Path) -> Path:
    """A private copy of the CIFAR-10 test batch under ``data``, to replace as a user would."""
    source = SHARED_DATA / "cifar10" / "cifar-10-batches-py"
    copy = data / "cifar10" / "cifar-10-batches-py"
    copy.mkdir(parents=True)
    shutil.copy(source / "batches.meta", copy)
    shutil.copy(source / "test_batch", copy)
    return copy


def _invert_images(folder: Path) -> None:
    """Rewrite ``folder``'s test_batch in the official pickle format, every pixel inverted."""
    import pickle
    with open(SHARED_DATA / "cifar10" / "cifar-10-batches-py" / "test_batch", "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    batch[b"data"] = 255 - batch[b"data"]
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump(batch, fh)


def test_a_reused_executor_scores_the_images_the_journal_records(tmp_path):
    """An executor kept open across runs (run_scoring leaves one passed in open) must not keep
    scoring with images loaded before the files were replaced, while the journal records the
    new batch: its workers are replaced, and score what a fresh executor scores."""
    from zcproxy.executors import InProcessExecutor
    data = tss_data(tmp_path)
    copy = _cifar10_copy(data)
    job = ScoringJob(bench="nats-tss", proxies=("naswot",), data_dir=str(data))

    def scores(name, **kw):
        frame = run_scoring(job, [1, 2], tmp_path / name, progress=False, **kw)
        return frame.sort_values("index")["score"].tolist()
    executor = InProcessExecutor()
    before = scores("a.csv", executor=executor)
    _invert_images(copy)
    reused = scores("b.csv", executor=executor)
    fresh = scores("c.csv")
    assert reused == fresh and reused != before


def test_a_worker_with_other_images_than_the_run_scores_nothing():
    """A worker whose batch is not the one the run fingerprinted (a Ray node reading another
    CIFAR-10 copy) journals an environment failure, retried by the next run, not scores."""
    from zcproxy.nasbench import get_benchmark
    from zcproxy.runner import Worker
    job = ScoringJob(bench="nats-tss", proxies=("naswot", "n_params"),
                     inputs_fingerprint="sha256:" + "0" * 64)
    rows = Worker(job).score((1, get_benchmark("nats-tss").arch(1), ("naswot", "n_params")))
    assert [r[2] for r in rows] == ["naswot", "n_params"]
    assert all(r[6].startswith("environment: this worker's image batch") for r in rows)
    assert np.isnan([r[4] for r in rows]).all()


def _legacy_journal(path: Path, indices, value: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(LEGACY_COLUMNS) + "\n"
                    + "".join(f"{i},n_params,{value},0.1,\n" for i in indices))


def test_a_foreign_journal_without_settings_is_never_adopted_silently(tmp_path, capsys):
    out = tmp_path / "sss"
    _legacy_journal(out / "journal.csv", range(6))  # e.g. a NATS-tss journal dropped here
    assert run_cli(out, bench="nats-sss") == 2
    assert "--adopt" in one_line_error(capsys)
    assert run_cli(out, "--adopt", bench="nats-sss") == 2  # nothing says which arch each is
    assert "cannot be checked" in one_line_error(capsys)
    assert not (out / "scores.csv").exists()


# zcproxy 0.1 named the |weights| Entropic Score "entropic"; 0.2 calls it "entropic_abs" and
# "entropic" is the signed reading (the committed folders were adopted with that renaming).
_V01_NAMES = {"entropic_abs": "entropic", "entropic_abs_mean": "entropic_mean",
              "entropic_abs_across": "entropic_across"}


def _committed_subset(folder: Path, bench: str, n: int) -> None:
    """The first ``n`` sampled architectures of a committed folder, written back the way
    zcproxy 0.1 wrote them: a journal without settings line, arch or version columns and with
    0.1's proxy names, its scores.csv and its run.json (a genuine 0.1-format fixture)."""
    folder.mkdir()
    scores = pd.read_csv(COMMITTED / bench / "scores.csv").head(n)
    keep = set(scores["index"])
    _, rows = read_journal(COMMITTED / bench / "journal.csv")
    rows = rows[rows["index"].isin(keep) & (rows["proxy"] != "entropic")]
    rows = rows.assign(proxy=rows["proxy"].replace(_V01_NAMES))
    lines = [",".join(LEGACY_COLUMNS)] + [
        f"{r.index},{r.proxy},{r.score!r},{r.seconds:.6f},{r.error if isinstance(r.error, str) else ''}"
        for r in rows.itertuples(index=False)]
    (folder / "journal.csv").write_text("\n".join(lines) + "\n")
    scores.drop(columns=["entropic", "seconds_entropic"], errors="ignore").rename(
        columns={**_V01_NAMES, **{f"seconds_{k}": f"seconds_{v}" for k, v in _V01_NAMES.items()}}
    ).to_csv(folder / "scores.csv", index=False)
    record = json.loads((COMMITTED / bench / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps(
        {k: record[k] for k in ("bench", "dataset", "seed", "batch_size", "official_path")}
        | {"zcproxy": "0.1.0"}, indent=2) + "\n")


def test_adopt_converts_a_committed_folder_after_checking_every_index(tmp_path, capsys):
    folder = tmp_path / "nats-tss"
    _committed_subset(folder, "nats-tss", 20)
    before = read_journal(folder / "journal.csv")[1]
    command = ["--bench", "nats-tss", "--sample", "20", "--seed", "0", "--proxies",
               "naswot,logsynflow,entropic", "--bootstrap", "0", "--no-progress",
               "--exact", "--out", str(folder)]  # 0.1 scored with exact arithmetic
    assert correlate.main(command) == 2  # a 0.1 journal is never reused as it is
    assert "--adopt" in one_line_error(capsys)
    assert correlate.main(command + ["--adopt"]) == 0
    said = capsys.readouterr().err
    assert "converted" in said
    # The Entropic Score's definition changed since 0.1 (version 2): found by rescoring two
    # architectures, and its scores are rescored instead of being mixed with the new ones.
    assert "will be rescored: entropic (" in said
    assert "rescoring 20 entropic scores recorded under definition version unknown" in said
    settings, after = read_journal(folder / "journal.csv")
    assert settings["bench"] == "nats-tss" and settings["data_fingerprint"].startswith("sha256:")
    kept = ~before["proxy"].str.startswith("entropic")
    pd.testing.assert_frame_equal(  # not one score of an unchanged definition moved
        before[kept].drop(columns=["arch", "version"]).reset_index(drop=True),
        after[after["proxy"].isin(set(before["proxy"][kept]))].drop(
            columns=["arch", "version"]).reset_index(drop=True), check_exact=True)
    assert (after["arch"] != "").all()
    committed = pd.read_csv(COMMITTED / "nats-tss" / "scores.csv").head(20)
    rewritten = analysis.read_scores(folder)  # checked against the new run.json
    pd.testing.assert_frame_equal(committed[["index", "arch", "naswot", "synflow"]],
                                  rewritten[["index", "arch", "naswot", "synflow"]],
                                  check_exact=True)
    assert not np.allclose(committed["entropic_abs"], rewritten["entropic"])  # 0.1's reading
    np.testing.assert_allclose(rewritten["entropic"], committed["entropic"], rtol=1e-12)
    assert "entropic_mean" not in rewritten  # old definition, not asked for: left out
    assert "of entropic_mean; --proxies entropic_mean rescores them" in said  # and said so
    # The same files dropped into a size-space folder: every arch disagrees, refused.
    foreign = tmp_path / "sss"
    _committed_subset(foreign, "nats-tss", 20)
    (foreign / "run.json").unlink()
    assert run_cli(foreign, "--adopt", bench="nats-sss") == 2
    assert "not what their index names" in one_line_error(capsys)
    # The right architectures, but a scores.csv whose accuracy is not today's table's: the
    # data changed since those scores, refused and left as it was.
    edited = tmp_path / "edited"
    _committed_subset(edited, "nats-tss", 20)
    (edited / "run.json").unlink()
    table = pd.read_csv(edited / "scores.csv")
    table.loc[3, "accuracy"] += 0.5
    table.to_csv(edited / "scores.csv", index=False)
    files = lambda: {p.name: p.read_bytes() for p in edited.iterdir()  # noqa: E731
                     if p.name != ".journal.csv.lock"}  # the lock's empty sidecar stays
    before = files()
    assert run_cli(edited, "--adopt") == 2
    assert "the accuracy" in (error := one_line_error(capsys)) and "differs" in error
    assert files() == before


def test_scores_of_an_older_proxy_definition_are_rescored_not_mixed(tmp_path, capsys):
    def define(version: str, value: float) -> None:
        register_proxy("zc_rel_versioned", needs_forward=False, replace=True, version=version,
                       description="test")(lambda ctx: value)
    try:
        define("1", 1.0)
        assert run_cli(tmp_path, proxies="zc_rel_versioned") == 0
        record = json.loads((tmp_path / "run.json").read_text())
        assert record["proxy_versions"] == {"zc_rel_versioned": "1"}
        assert record["ensembles"] == {}
        define("2", 2.0)  # the definition changed under the same name
        # Until the folder is rerun, its scores.csv is of the old definition, and says so:
        # the leaderboard's reader refuses it, a search's --scores leaves the column out.
        with pytest.raises(analysis.StaleTable, match=r"zc_rel_versioned \(definition "
                           r"version 1 there, 2 now\)"):
            analysis.read_scores(tmp_path)
        from zcproxy.search.bench.sources import ScoreTable
        table = ScoreTable.from_paths(tmp_path / "scores.csv", 15625, bench="nats-tss")
        assert "zc_rel_versioned" not in table.values
        assert any("left out 4 scores of definition version 1, now 2 of zc_rel_versioned"
                   in note for note in table.notes), table.notes
        capsys.readouterr()
        assert run_cli(tmp_path, proxies="zc_rel_versioned") == 0
        assert analysis.read_scores(tmp_path)["zc_rel_versioned"].eq(2.0).all()
        again = ScoreTable.from_paths(tmp_path / "scores.csv", 15625, bench="nats-tss")
        assert (again.values["zc_rel_versioned"][again.present["zc_rel_versioned"]] == 2.0).all()
        assert again.present["zc_rel_versioned"].sum() == 4 and not again.notes
        assert ("rescoring 4 zc_rel_versioned scores recorded under definition version 1 "
                "(now 2)") in capsys.readouterr().err
        assert (pd.read_csv(tmp_path / "scores.csv")["zc_rel_versioned"] == 2.0).all()
        lines = [line for line in (tmp_path / "journal.csv").read_text().splitlines()[2:]
                 if not line.startswith(SESSION_PREFIX)]
        assert sorted(line.split(",")[3] for line in lines) == ["1"] * 4 + ["2"] * 4  # appended
    finally:
        unregister_proxy("zc_rel_versioned")


# ---------------------------------------------------------------- failures
def test_one_failing_proxy_never_marks_the_others_failed(proxy_state, tmp_path):
    job = ScoringJob(bench="nats-tss", proxies=("zc_rel_linalg", "n_params"))
    journal = run_scoring(job, [8274, 1], tmp_path / "j.csv", progress=False)
    failed = journal[journal["proxy"] == "zc_rel_linalg"]
    assert failed["error"].str.contains("LinAlgError: eigh did not converge").all()
    ok = journal[journal["proxy"] == "n_params"]
    assert len(ok) == 2 and (ok["error"] == "").all() and (ok["score"] > 0).all()


def test_a_proxy_that_fails_midway_leaves_the_others_scores_bit_for_bit(tmp_path):
    """A proxy that runs a forward pass, draws from the global random generator and then
    fails must leave every other proxy's score exactly what it is without it (the seeded ones
    too: nothing it consumed or cached reaches them)."""
    @register_proxy("zc_rel_vandal", replace=True, description="test")
    def vandal(ctx):
        from zcproxy.surgery import Recipe
        x, _ = ctx.data()
        for recipe in (Recipe(), Recipe(train=True)):  # the shared copies others may reuse
            ctx.forward(ctx.prepared(recipe), x)
        torch.rand(1000)
        raise RuntimeError("gave up halfway")
    try:
        others = ("naswot", "synflow", "entropic", "grad_norm")
        alone = run_scoring(ScoringJob(bench="nats-tss", proxies=others), [8274, 1],
                            tmp_path / "alone.csv", progress=False)
        beside = run_scoring(ScoringJob(bench="nats-tss", proxies=("zc_rel_vandal",) + others),
                             [8274, 1], tmp_path / "beside.csv", progress=False)
    finally:
        unregister_proxy("zc_rel_vandal")
    failed = beside[beside["proxy"] == "zc_rel_vandal"]
    assert len(failed) == 2 and failed["error"].str.contains("gave up halfway").all()
    key = ["index", "proxy"]
    kept = beside[beside["proxy"] != "zc_rel_vandal"].sort_values(key).reset_index(drop=True)
    alone = alone.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[key + ["score", "error"]], alone[key + ["score", "error"]])
    assert (kept["error"] == "").sum() >= 6  # 8274's NASWOT is -inf in both runs, the rest defined


@pytest.mark.parametrize("err,machine", [
    (MemoryError(), True),
    (OSError(28, "No space left on device"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                  "memory: you tried to allocate 1073741824 bytes"), True),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), True),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (ValueError("bad cell"), False),
    (np.linalg.LinAlgError("eigh did not converge"), False),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x10 and 20x5)"), False),
], ids=["host-oom", "disk-full", "cpu-allocator", "cuda-error", "cuda-oom", "value",
        "linalg", "shape"])
def test_what_counts_as_the_machines_failure(err, machine):
    """Failures of the machine (memory, disk, device) are journaled as ``environment:`` and
    retried by the next run; an architecture's own failure is recorded for good."""
    from zcproxy.runner import describe_failure
    assert describe_failure(err).startswith("environment: ") is machine


def test_environment_failures_are_retried_and_others_on_request(proxy_state, tmp_path, capsys):
    out = tmp_path / "env"
    proxy_state["mode"] = "oom"
    assert run_cli(out, proxies="zc_rel_flaky") == 0
    errors = read_journal(out / "journal.csv")[1]["error"]
    assert errors.str.startswith("environment: RuntimeError: CUDA out of memory").all()
    proxy_state["mode"] = "ok"
    assert run_cli(out, proxies="zc_rel_flaky") == 0  # the machine is fine now: retried
    assert "retrying 4 architectures" in capsys.readouterr().err
    assert (pd.read_csv(out / "scores.csv")["zc_rel_flaky"] == 1.0).all()

    out = tmp_path / "arch"
    proxy_state["mode"] = "bad"
    capsys.readouterr()
    assert run_cli(out, proxies="zc_rel_flaky,n_params") == 0
    assert "4 architecture(s) had failed or non-finite scores (zc_rel_flaky 4)" in (
        capsys.readouterr().err)
    errors = pd.read_csv(out / "scores.csv", keep_default_na=False)["errors"]
    assert errors.str.fullmatch(r"zc_rel_flaky: ValueError: .+").all(), errors
    proxy_state["mode"] = "ok"
    calls = proxy_state["calls"]
    assert run_cli(out, proxies="zc_rel_flaky") == 0  # a failure of the cell stays recorded
    assert proxy_state["calls"] == calls
    assert pd.read_csv(out / "scores.csv")["zc_rel_flaky"].isna().all()
    assert run_cli(out, "--retry-failed", proxies="zc_rel_flaky") == 0
    assert (pd.read_csv(out / "scores.csv")["zc_rel_flaky"] == 1.0).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_device_that_is_not_there_stops_before_scoring(tmp_path, capsys):
    assert run_cli(tmp_path / "out", "--device", "cuda") == 2
    assert "no usable CUDA GPU" in one_line_error(capsys)
    assert not (tmp_path / "out" / "journal.csv").exists()


# ---------------------------------------------------------------- whole files or none
WRITER = textwrap.dedent("""
    import signal, sys
    import numpy as np, pandas as pd
    from pathlib import Path
    from zcproxy.correlate import write_outputs
    out, mark, fault = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    if fault == "kill":  # Python ignores SIGXFSZ; restore the default: killed at the limit
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    n = 20_000
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"index": range(n), "arch": [f"arch-{i:06d}-" + "x" * 40 for i in range(n)],
                           "accuracy": rng.random(n), "params": rng.random(n),
                           "synflow": rng.random(n) + mark, "errors": ""})
    write_outputs(out, scores, ["synflow"], "nats-tss", n_boot=0)
""")


def _write_tables(out: Path, mark: float, limit: int | None = None,
                  fault: str = "none") -> subprocess.CompletedProcess:
    """Rewrite the tables in a child process that may write at most ``limit`` bytes per file:
    beyond it, ``fault="kill"`` kills it (SIGXFSZ) mid-write, ``"full"`` makes the write fail
    the way a full disk does."""
    def limits():
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([sys.executable, "-c", WRITER, str(out), str(mark), fault],
                          preexec_fn=limits, capture_output=True, timeout=300)


def test_tables_survive_a_kill_or_a_full_disk_mid_write(tmp_path):
    assert _write_tables(tmp_path, 0.0).returncode == 0
    names = ("scores.csv", "correlations.csv", "correlations.md", "pairwise_spearman.csv")
    good = {name: (tmp_path / name).read_bytes() for name in names}
    assert len(good["scores.csv"]) > 1_000_000
    # Killed (SIGXFSZ) once 256 KB of the rewrite reached the disk.
    killed = _write_tables(tmp_path, 1.0, limit=256 * 1024, fault="kill")
    assert killed.returncode == -signal.SIGXFSZ
    assert {name: (tmp_path / name).read_bytes() for name in names} == good
    # The disk "fills up" at 256 KB: the write fails, the old tables stay, and no debris is
    # left, not even the temporary file of the killed run.
    full = _write_tables(tmp_path, 1.0, limit=256 * 1024, fault="full")
    assert full.returncode != 0 and b"File too large" in full.stderr
    assert {name: (tmp_path / name).read_bytes() for name in names} == good
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


SET_WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, pandas as pd
    from pathlib import Path
    from zcproxy.correlate import write_outputs
    out, mark, victim = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    replace = os.replace
    def replace_or_die(src, dst):  # killed with the whole new file written, before its rename
        if Path(dst).name == victim:
            os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)
    os.replace = replace_or_die
    n = 200
    rng = np.random.default_rng(int(mark))  # every table differs between two marks
    scores = pd.DataFrame({"index": range(n), "arch": [f"arch-{i}" for i in range(n)],
                           "accuracy": rng.random(n), "n_params": rng.random(n),
                           "synflow": rng.random(n), "naswot": rng.random(n), "errors": ""})
    write_outputs(out, scores, ["synflow", "naswot"], "nats-tss", n_boot=0,
                  settings={"bench": "nats-tss"})
""")
TABLE_SET = ("scores.csv", "correlations.csv", "pairwise_spearman.csv", "correlations.md",
             "run.json")


@pytest.mark.parametrize("victim", TABLE_SET)
def test_a_kill_between_tables_leaves_each_whole_and_the_set_refused_until_rewritten(
        tmp_path, victim):
    """Killed while writing any one of a folder's tables, every file is wholly the old or
    wholly the new one, the one being written is the old one, and a set with a new scores.csv
    but the old run.json is refused by the readers; the next write makes the set whole."""
    def write(mark: float, victim: str = "") -> int:
        return subprocess.run([sys.executable, "-c", SET_WRITER, str(tmp_path), str(mark), victim],
                              capture_output=True, timeout=300).returncode
    assert write(0.0) == 0
    old = {name: (tmp_path / name).read_bytes() for name in TABLE_SET}
    assert write(1.0, victim) == -signal.SIGKILL
    now = {name: (tmp_path / name).read_bytes() for name in TABLE_SET}
    assert now[victim] == old[victim]
    changed = [name for name in TABLE_SET if now[name] != old[name]]
    assert changed == list(TABLE_SET[:TABLE_SET.index(victim)])  # written in order, whole
    if victim == "scores.csv":
        assert len(analysis.read_scores(tmp_path)) == 200  # untouched set: still whole
    else:
        with pytest.raises(analysis.IncompleteTable, match="rerun the correlate command"):
            analysis.read_scores(tmp_path)
    assert write(1.0) == 0
    assert analysis.read_scores(tmp_path) is not None
    assert all((tmp_path / name).read_bytes() != old[name] for name in TABLE_SET)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(TABLE_SET)  # no debris left


def test_a_table_cut_at_a_row_boundary_is_refused_by_readers(tmp_path):
    folder = tmp_path / "nats-tss"
    assert run_cli(folder) == 0
    assert len(analysis.load_scores("nats-tss", root=tmp_path)) == 4
    path = folder / "scores.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))  # what a kill mid-rewrite used to leave
    with pytest.raises(ValueError, match="recorded"):  # analysis.IncompleteTable
        analysis.load_scores("nats-tss", root=tmp_path)


def test_verify_and_the_leaderboard_refuse_a_cut_table_in_one_line(tmp_path, capsys):
    """The commands that read a folder's scores.csv go through the same check as the
    notebooks: a table cut short is refused with one line, never compared or ranked."""
    from zcproxy import leaderboard, verify
    good, cut = tmp_path / "good", tmp_path / "cut"
    assert run_cli(good) == 0 and run_cli(cut) == 0
    path = cut / "scores.csv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    capsys.readouterr()
    assert verify.main([str(cut), str(good), "--proxies", "n_params"]) == 2
    assert "recorded" in one_line_error(capsys)
    assert leaderboard.main(["--bench", "nats-tss", "--run", str(cut), "--bootstrap", "0",
                             "--out", str(tmp_path / "lb")]) == 2
    assert "recorded" in one_line_error(capsys)
    assert not (tmp_path / "lb").exists()


def test_a_corrupt_journal_line_is_named_and_leaves_the_tables_alone(tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(out) == 0
    tables = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "journal.csv"}
    journal = out / "journal.csv"
    lines = journal.read_text().splitlines(keepends=True)
    lines[3] = "abc" + lines[3][lines[3].index(","):]
    journal.write_text("".join(lines))
    capsys.readouterr()
    assert run_cli(out) == 2
    assert "line 4: index 'abc' is not an integer" in one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "journal.csv"} == tables


def test_search_refuses_an_out_folder_holding_another_run(tmp_path):
    from test_search import SMALL, FakeScorer

    from zcproxy.search import SearchConfig, run_search
    (tmp_path / "best.json").write_text('{"arch": "somebody else\'s"}\n')
    (tmp_path / "trajectory.png").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="another run"):
        run_search(SearchConfig(target="s0", seed=3, **SMALL), tmp_path, score_fn=FakeScorer(),
                   progress=False)
    assert (tmp_path / "trajectory.png").read_bytes() == b"not ours"
    assert not (tmp_path / "log.jsonl").exists()


# ---------------------------------------------------------------- one writer per journal
HOLDER = """
import sys
from zcproxy.journal import journal_in_use
with journal_in_use(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def first_line(child: subprocess.Popen, timeout: float = 120.0) -> str:
    """The child's first line of output; fails (never hangs) if none comes within ``timeout``."""
    import select
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    assert ready, f"no output from the child process within {timeout:g} s"
    return child.stdout.readline().strip()


class HeldJournal:
    """Another process holding a journal, as a second run of the same command would."""

    def __init__(self, path: Path):
        self.child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert first_line(self.child) == "held"

    def __enter__(self) -> "HeldJournal":
        return self

    def __exit__(self, *exc) -> None:
        self.child.stdin.close()
        assert self.child.wait(timeout=60) == 0


def test_a_journal_has_one_writer_at_a_time(tmp_path, capsys):
    """While another process scores into a folder, a second run there (resume, --fresh,
    --adopt or --merge) stops at once with one line and touches nothing; once the first ends,
    the same command resumes."""
    out = tmp_path / "out"
    assert run_cli(out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with HeldJournal(out / "journal.csv"):
        for extra in ([], ["--fresh"], ["--adopt"]):
            capsys.readouterr()
            assert run_cli(out, *extra) == 2, extra
            error = one_line_error(capsys)
            assert "journal.csv is being written by another process (a correlate run" in error
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    capsys.readouterr()
    assert run_cli(out) == 0  # the same command, once the other run has ended
    assert "reusing" in capsys.readouterr().err
    assert (out / "journal.csv").read_bytes() == before["journal.csv"]


def test_the_lock_outlives_its_journal_being_replaced_by_a_rename(tmp_path):
    """The holder of a journal replaces it whole by a rename (``--fresh``, a merge, a
    conversion): a lock on the file itself would stay on the old inode and let a second writer
    lock the new one.  The lock sits on a sidecar that is never renamed, so the second writer
    is still refused, and gets the journal once the holder ends."""
    from zcproxy.atomic import FileInUse
    from zcproxy.journal import Journal, write_journal
    path = tmp_path / "journal.csv"
    write_journal(path, {"bench": "nats-tss"}, [(1, "a", "p", "1", 0.5, 0.1, "")])
    with HeldJournal(path):
        inode = path.stat().st_ino
        write_journal(path, {"bench": "nats-tss"}, [(2, "b", "p", "1", 0.25, 0.1, "")])
        assert path.stat().st_ino != inode  # really a new file under the old name
        with pytest.raises(FileInUse, match="being written by another process"):
            Journal(path, {"bench": "nats-tss"})
    with Journal(path, {"bench": "nats-tss"}) as journal:
        journal.append([(3, "c", "p", "1", 0.125, 0.1, "")])
    assert list(read_journal(path)[1]["score"]) == [0.25, 0.125]


JOURNAL_WRITER = """
import sys, time
from zcproxy.journal import Journal
journal = Journal(sys.argv[1], {"bench": "nats-tss"}, sync_interval=3600.0)
journal.append([(1, "a", "p", "1", 0.5, 0.1, "")])
journal.append([(2, "b", "p", "1", 0.25, 0.1, "")])
print("appended", flush=True)
time.sleep(600)  # killed here, the journal still open: no close(), no fsync
"""


def test_a_killed_writer_loses_no_appended_row_and_leaves_no_lock(tmp_path):
    """SIGKILL runs no clean-up: every row appended before the kill is in the file (each
    append is flushed to the operating system at once, whatever the fsync interval), and the
    kernel drops the lock with the process, so the next run opens the journal at once."""
    from zcproxy.journal import Journal
    path = tmp_path / "journal.csv"
    child = subprocess.Popen([sys.executable, "-c", JOURNAL_WRITER, str(path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first_line(child) == "appended"
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert list(read_journal(path)[1]["score"]) == [0.5, 0.25]
    with Journal(path, {"bench": "nats-tss"}) as journal:  # not "being written by another"
        journal.append([(3, "c", "p", "1", 0.125, 0.1, "")])
    assert list(read_journal(path)[1]["score"]) == [0.5, 0.25, 0.125]


def test_merge_waits_for_a_shard_that_is_still_being_scored(tmp_path, capsys):
    assert run_cli(tmp_path, "--shard", "0/2") == 0
    assert run_cli(tmp_path, "--shard", "1/2") == 0
    with HeldJournal(tmp_path / "journal.shard-1-of-2.csv"):
        capsys.readouterr()
        assert run_cli(tmp_path, "--merge") == 2
        assert "journal.shard-1-of-2.csv is being written by another process" in \
            one_line_error(capsys)
        assert not (tmp_path / "journal.csv").exists()
    assert run_cli(tmp_path, "--merge") == 0
    assert len(pd.read_csv(tmp_path / "scores.csv")) == 4


# ---------------------------------------------------------------- scratch output, reuse
def test_default_out_is_a_scratch_folder_and_reuse_is_announced(proxy_state, tmp_path,
                                                                monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    command = ["--bench", "nats-tss", "--sample", "3", "--seed", "5", "--proxies",
               "zc_rel_flaky", "--no-baselines", "--bootstrap", "0", "--no-progress"]
    assert correlate.main(command) == 0
    assert (tmp_path / "runs" / "nats-tss-sample3-seed5" / "scores.csv").exists()
    assert not (tmp_path / "results").exists()
    assert proxy_state["calls"] == 3
    capsys.readouterr()
    assert correlate.main(command) == 0
    assert ("reusing 3 scored architectures from runs/nats-tss-sample3-seed5/journal.csv; "
            "--fresh rescores") in capsys.readouterr().err
    assert proxy_state["calls"] == 3
    # a proxy the journal lacks: its architectures are scored for that proxy only, and said so
    wider = command[:7] + ["zc_rel_flaky,n_params"] + command[8:]
    assert correlate.main(wider) == 0
    assert ("reusing runs/nats-tss-sample3-seed5/journal.csv: 3 journaled architectures are "
            "scored now only for what they lack; --fresh rescores") in capsys.readouterr().err
    assert proxy_state["calls"] == 3
    assert correlate.main(command + ["--fresh"]) == 0
    assert proxy_state["calls"] == 6


# ---------------------------------------------------------------- one line per mistake
def _make_file(tmp_path: Path) -> list[str]:
    (tmp_path / "file").write_text("x")
    return ["--out", str(tmp_path / "file")]


def _read_only(tmp_path: Path) -> list[str]:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return ["--out", str(folder)]


def _run_json(text: str):
    def make(tmp_path: Path) -> list[str]:
        (tmp_path / "o").mkdir()
        (tmp_path / "o" / "run.json").write_text(text)
        return ["--out", str(tmp_path / "o")]
    return make


def _official_csv(tmp_path: Path) -> list[str]:
    return ["--official-path", str(SHARED_DATA / "nats-tss" / "nats_tss_hp200_test.csv")]


def _accuracy_abc(tmp_path: Path) -> list[str]:
    data = tss_data(tmp_path)
    csv = data / "nats-tss" / "nats_tss_hp200_test.csv"
    table = pd.read_csv(csv)
    table["cifar10_test_acc"] = table["cifar10_test_acc"].astype(object)
    table.loc[7, "cifar10_test_acc"] = "abc"
    table.to_csv(csv, index=False)
    return ["--data-dir", str(data)]


MISTAKES = {
    "unknown proxy": (lambda t: ["--proxies", "nope"], "unknown proxy 'nope'"),
    "empty proxy list": (lambda t: ["--proxies", ","], "names no proxy"),
    "out is a file": (_make_file, "is a file"),
    "out read-only": (_read_only, "read-only"),
    "negative threads": (lambda t: ["--threads", "-2"], "--threads -2"),
    "negative bootstrap": (lambda t: ["--bootstrap", "-5"], "--bootstrap -5"),
    "sample zero": (lambda t: ["--sample", "0"], "--sample 0"),
    "sample too large": (lambda t: ["--sample", "99999"], "use --all"),
    "no workers": (lambda t: ["--workers", "0"], "--workers 0"),
    "official path is a csv": (_official_csv, "not an official NATS-Bench source"),
    "empty run.json": (_run_json(""), "run.json is not a settings record (empty or not JSON"),
    "run.json a list": (_run_json("[1]"), "run.json is not a settings record (a JSON list"),
    "run.json without bench": (_run_json("{}"), "run.json is not a zcproxy settings record"),
    "accuracy cell abc": (_accuracy_abc, "nats_tss_hp200_test.csv: column cifar10_test_acc holds 'abc'"),
    "unknown device": (lambda t: ["--device", "cuad"], "not a torch device"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_command_line_mistakes_end_in_one_line(case, tmp_path, capsys):
    make, expected = MISTAKES[case]
    argv = ["--bench", "nats-tss", "--sample", "4", "--proxies", "n_params", "--no-progress",
            "--out", str(tmp_path / "out")] + make(tmp_path)
    assert correlate.main(argv) == 2
    assert expected in one_line_error(capsys)


def test_list_proxies_needs_no_benchmark_and_every_other_use_does(capsys):
    """`correlate --list-proxies`, which the help and the errors point to, runs alone and
    lists every registered proxy; without it, a missing --bench is a usage error."""
    from zcproxy import available_proxies
    assert correlate.main(["--list-proxies"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(available_proxies())
    with pytest.raises(SystemExit) as stop:
        correlate.main(["--sample", "4"])
    assert stop.value.code == 2
    assert "required: --bench" in capsys.readouterr().err


def test_the_table_commands_end_a_mistake_in_one_line(tmp_path, capsys):
    """models_table checks its --device before any model is built; plot and the summary
    turn an error met while working into one line (their --debug shows the traceback)."""
    from zcproxy import leaderboard_summary, models_table, plot
    assert models_table.main(["--device", "cuad", "--out", str(tmp_path / "m.md")]) == 2
    assert "not a torch device" in one_line_error(capsys)
    assert not (tmp_path / "m.md").exists()
    scores = tmp_path / "s.csv"
    pd.DataFrame({"accuracy": [1.0, 2.0, 3.0], "p": [3.0, 1.0, 2.0]}).to_csv(scores, index=False)
    blocker = tmp_path / "file"
    blocker.write_text("")  # --out below a file: no folder can be made there
    argv = ["--scores", str(scores), "--out", str(blocker / "figs")]
    assert plot.main(argv) == 2
    assert "plot: error:" in one_line_error(capsys)
    with pytest.raises(OSError):
        plot.main(argv + ["--debug"])
    assert leaderboard_summary.main([str(blocker)]) == 2
    assert "leaderboard_summary: error:" in one_line_error(capsys)


def test_a_data_folder_that_is_not_there_is_an_error_not_a_fallback(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setenv("ZCPROXY_DATA", str(tmp_path / "nowhere"))
    assert run_cli(tmp_path / "out") == 2
    assert "ZCPROXY_DATA=" in one_line_error(capsys)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        from zcproxy.nasbench import get_benchmark
        get_benchmark("nats-tss").table()


def test_search_mistakes_end_in_one_line(tmp_path, capsys):
    from zcproxy.search.__main__ import main as search_main
    budget = ["--target", "s0", "--phase-candidates", "4", "--total-candidates", "8"]
    with pytest.raises(SystemExit) as stop:
        search_main(budget + ["--max-params", "inf", "--out", str(tmp_path / "a")])
    assert stop.value.code == 2
    assert "--max-params inf must be positive and finite" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "log.jsonl").write_text("garbage\n")
    assert search_main(budget + ["--out", str(tmp_path / "b"), "--resume", "--quiet"]) == 2
    assert "log.jsonl:1 is not a JSON event" in one_line_error(capsys)


def test_nb101_specs_outside_the_space_are_refused_with_the_rule_they_break():
    from zcproxy.nasbench.nb101 import NB101, build_network
    conv = "conv3x3-bn-relu"
    eight = np.eye(8, k=1, dtype=int)  # a chain of 8 vertices
    with pytest.raises(ValueError, match="at most 7 vertices and 9 edges; this one has 8"):
        build_network(eight, ["input"] + [conv] * 6 + ["output"], stem_channels=16)
    dense = np.triu(np.ones((7, 7), dtype=int), 1)  # 21 edges
    with pytest.raises(ValueError, match="has 7 and 21"):
        build_network(dense, ["input"] + [conv] * 5 + ["output"], stem_channels=16)
    apart = np.zeros((4, 4), dtype=int)
    apart[0, 1] = apart[2, 3] = 1  # the input never reaches the output
    with pytest.raises(ValueError, match="does not reach the output"):
        build_network(apart, ["input", conv, conv, "output"], stem_channels=16)
    cycle = np.zeros((4, 4), dtype=int)
    cycle[0, 1] = cycle[1, 2] = cycle[2, 1] = cycle[2, 3] = 1
    with pytest.raises(ValueError, match="has a cycle"):
        NB101().index_of_spec(cycle, ["input", conv, conv, "output"])


def test_an_index_must_be_an_integer():
    from zcproxy.nasbench import get_benchmark
    bench = get_benchmark("nats-sss")
    assert bench.arch(np.int64(3)) == bench.arch(3)
    with pytest.raises(TypeError, match="not 3.7"):
        bench.build(3.7)


def test_a_corrupt_training_image_is_named(tmp_path):
    from PIL import Image

    from zcproxy.train.data import open_datasets
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            Image.new("RGB", (64, 64), (10, 200, 30)).save(folder / "0.png")
    bad = tmp_path / "train" / "a" / "0.png"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(bad)
    data = bad.read_bytes()
    bad.write_bytes(data[:len(data) // 2])  # cut mid-stream, as a failed copy leaves it
    datasets = open_datasets(tmp_path)
    with pytest.raises(ValueError, match=re.escape(str(bad))):  # PIL's own error names no file
        datasets.train[0]


# ---------------------------------------------------------------- verify
def _scores(values, arch=None) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame({"index": range(n), "arch": arch or [f"a{i}" for i in range(n)],
                         "accuracy": np.linspace(0, 1, n), "naswot": values,
                         "seconds_naswot": 0.1, "errors": ""})


def test_verify_reports_equal_scores_differences_and_foreign_architectures(tmp_path, capsys):
    from zcproxy.verify import compare_scores, main as verify_main
    ref = _scores([1.0, 2.0, 3.0, -np.inf])
    same = compare_scores(ref.copy(), ref)
    assert same.reproduced and "4 of 4 scores equal, max relative difference 0" in same.summary()
    moved = compare_scores(_scores([1.0, 2.0, 3.003, -np.inf]), ref)
    assert not moved.reproduced
    assert moved.proxies[0].equal == 3 and moved.proxies[0].max_relative == pytest.approx(1e-3)
    assert moved.proxies[0].kendall == pytest.approx(1.0)
    # NaN in both runs (unscored, or undefined in both) counts neither as a score nor as equal
    unscored = compare_scores(_scores([1.0, np.nan, 3.0, np.nan]), _scores([1.0, np.nan, 3.5, 4.0]))
    assert (unscored.proxies[0].n, unscored.proxies[0].equal) == (3, 1)
    assert not unscored.proxies[0].same_nonfinite
    foreign = compare_scores(_scores([1.0, 2.0, 3.0, -np.inf], ["a0", "zz", "a2", "a3"]), ref)
    assert foreign.arch_mismatches == [1] and not foreign.reproduced
    for name, frame in (("ref", ref), ("new", _scores([1.0, 2.0, 3.003, -np.inf]))):
        (tmp_path / name).mkdir()
        frame.to_csv(tmp_path / name / "scores.csv", index=False)
    assert verify_main([str(tmp_path / "ref"), str(tmp_path / "ref")]) == 0
    assert "reproduced" in capsys.readouterr().out
    assert verify_main([str(tmp_path / "new"), str(tmp_path / "ref")]) == 1
    assert "NOT reproduced" in capsys.readouterr().out
    assert verify_main([str(tmp_path / "nowhere"), str(tmp_path / "ref")]) == 2
    assert "scores.csv not found" in one_line_error(capsys)
    for name, bench in (("ref", "nats-tss"), ("new", "nb101")):
        (tmp_path / name / "run.json").write_text(json.dumps({"bench": bench}))
    assert verify_main([str(tmp_path / "new"), str(tmp_path / "ref")]) == 2
    assert one_line_error(capsys) == (f"verify: error: {tmp_path / 'new'} is a nb101 run and "
                                      f"{tmp_path / 'ref'} a nats-tss run: runs of different "
                                      "benchmarks cannot reproduce each other")
    for name, dataset in (("ref", "cifar10"), ("new", "cifar100")):
        (tmp_path / name / "run.json").write_text(json.dumps({"bench": "nats-tss",
                                                               "dataset": dataset}))
    assert verify_main([str(tmp_path / "new"), str(tmp_path / "ref")]) == 2
    assert "a cifar100 run and" in one_line_error(capsys)


def test_legacy_journals_stay_readable(tmp_path):
    _committed_subset(tmp_path / "legacy", "nats-tss", 1000)
    settings, rows = read_journal(tmp_path / "legacy" / "journal.csv")
    assert settings is None and len(rows) == 12_000
    assert (rows["arch"] == "").all() and (rows["version"] == "").all()
    assert rows["score"].dtype == float and rows["index"].dtype == np.int64


def test_scoring_keeps_no_reference_to_the_model():
    """Every proxy, scored through the public API, lets the model go afterwards: a search or a
    worker scores thousands of networks in one process.  (The activation-call check once held
    its context, and through it the model, for the life of the process: 50 MB per ESFormer
    candidate, 23 GB after 1,500.)"""
    import gc
    import weakref

    import zcproxy
    from zcproxy.registry import available_proxies

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                                torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 10))
    alive = weakref.ref(model)
    scores = zcproxy.score_many(model, available_proxies(), inputs=torch.randn(16, 3, 8, 8),
                                targets=torch.randint(0, 10, (16,)), nonfinite="nan")
    assert len(scores) == len(available_proxies())
    assert sum(np.isfinite(v) for v in scores.values()) > len(scores) // 2  # real scoring ran
    del model
    gc.collect()
    assert alive() is None


def test_a_batch_no_network_can_use_stops_the_run_instead_of_failing_every_row(tmp_path, capsys):
    # --batch-size 1 used to finish "successfully" with NASWOT failed on every architecture.
    out = tmp_path / "run"
    assert run_cli(out, "--batch-size", "1", proxies="logsynflow,naswot") == 2
    assert one_line_error(capsys) == ("correlate: error: naswot: this proxy needs a batch of at "
                                      "least 2, got 1")
    journal = (out / "journal.csv").read_text().splitlines()
    assert len(journal) == 2, journal  # the settings and the header: no row
    assert run_cli(out, "--batch-size", "2", "--fresh", proxies="logsynflow,naswot") == 0
