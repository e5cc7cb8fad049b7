"""The scoring runner: resumable journal, worker processes, failures, sharding.

Every test scores a handful of real NATS-tss architectures with a probe proxy that a plug-in
module registers (so spawned and Ray workers have it too).  The probe returns a fingerprint of
the network's initial weights, which pins down the per-architecture seeding, and appends it to
a call log, which counts how often each architecture was really computed.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import signal
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from zcproxy import correlate
from zcproxy.cli import UsageError
from zcproxy.executors import InProcessExecutor, ProcessPoolExecutor, make_executor, serves
from zcproxy.journal import (ENVIRONMENT, SESSION_PREFIX, UNRECORDED_SESSION, Journal, JournalError,
                             read_journal, read_sessions, write_journal)
from zcproxy.nasbench import get_benchmark
from zcproxy.registry import available_proxies, unregister_proxy
from zcproxy.runner import ScoringJob, run_scoring, run_settings, scored_with, wide_scores
from zcproxy.surgery import clone_module

PLUGIN = "zc_test_plugin"
PROBES = ("zc_test_probe", "zc_test_fail")
PLUGIN_SOURCE = '''
"""Test-only proxies, imported by every worker through ScoringJob.plugins."""
import os
import time

from zcproxy.registry import register_proxy


def first_call(marker):
    """True for exactly one call in the whole run (O_EXCL), which writes its process id there."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\\n".encode())
    os.close(fd)
    return True


@register_proxy("zc_test_probe", needs_forward=False, replace=True,
                description="sum of the initial weights; logs each finished call")
def probe(ctx, log="", crash_marker="", crash_times=1, crash_value="", hang_marker=""):
    value = float(sum(float(p.detach().double().sum()) for p in ctx.model.parameters()))
    # Not an option: options are part of a run's settings, and a resumed run must match them.
    interrupt_after = int(os.environ.get("ZC_TEST_INTERRUPT_AFTER", "-1"))
    if interrupt_after >= 0 and os.path.exists(log):
        with open(log) as fh:
            if len(fh.read().split()) >= interrupt_after:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C here
    # The first ``crash_times`` calls of the whole run (on the network whose value is
    # ``crash_value``, if given) take their process down.
    crashes = crash_marker and (not crash_value or repr(value) == crash_value)
    for attempt in range(int(crash_times) if crashes else 0):
        if first_call(crash_marker if attempt == 0 else f"{crash_marker}.{attempt}"):
            os._exit(3)
    if hang_marker and first_call(hang_marker):
        time.sleep(600)
    if log:
        with open(log, "a") as fh:
            fh.write(repr(value) + "\\n")
    return value


@register_proxy("zc_test_fail", needs_forward=False, replace=True,
                description="always raises")
def fail(ctx):
    raise ValueError("boom from the test proxy")
'''


def write_plugin(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{PLUGIN}.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    return folder


def unload_plugin() -> None:
    for name in PROBES:
        if name in available_proxies():
            unregister_proxy(name)
    sys.modules.pop(PLUGIN, None)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    folder = write_plugin(tmp_path / "plugin")
    monkeypatch.syspath_prepend(str(folder))  # spawned workers inherit sys.path
    yield folder
    unload_plugin()


@pytest.fixture(scope="module")
def tss():
    bench = get_benchmark("nats-tss")
    return bench, bench.sample(6, seed=11)


def calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def probe_job(log: Path, **options) -> ScoringJob:
    return ScoringJob(bench="nats-tss", proxies=("zc_test_probe",), plugins=(PLUGIN,),
                      proxy_options={"zc_test_probe": {"log": str(log), **options}})


def rows(journal: Path) -> pd.DataFrame:
    return read_journal(journal)[1]


def test_resume_after_interrupt_recomputes_nothing_and_loses_nothing(plugin, tss, tmp_path,
                                                                     monkeypatch):
    _, indices = tss
    log, journal = tmp_path / "calls.txt", tmp_path / "journal.csv"
    monkeypatch.setenv("ZC_TEST_INTERRUPT_AFTER", "3")
    with pytest.raises(KeyboardInterrupt):
        run_scoring(probe_job(log), indices, journal, progress=False)
    monkeypatch.delenv("ZC_TEST_INTERRUPT_AFTER")
    assert len(calls(log)) == 3
    assert len(rows(journal)) == 3  # every finished score reached the disk

    done = run_scoring(probe_job(log), indices, journal, progress=False)
    assert sorted(done["index"]) == sorted(indices)
    assert len(calls(log)) == len(indices)  # the three finished ones were not recomputed
    assert sorted(calls(log)) == sorted(repr(v) for v in done["score"])
    assert len(set(done["score"])) == len(indices)  # one distinct network per architecture


def test_torn_last_line_is_cut_and_that_score_computed_again(plugin, tss, tmp_path):
    _, indices = tss
    log, journal = tmp_path / "calls.txt", tmp_path / "journal.csv"
    run_scoring(probe_job(log), indices[:4], journal, progress=False)
    data = journal.read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    journal.write_bytes(data[:len(data) - len(last) // 2 - 1])  # die halfway through a line
    with pytest.warns(RuntimeWarning, match="incomplete last line"):
        done = run_scoring(probe_job(log), indices[:4], journal, progress=False)
    assert len(done) == 4 and not done["score"].isna().any()
    assert len(calls(log)) == 5  # four, plus the torn one once more
    assert calls(log)[-1] == calls(log)[3]  # recomputed to the same value
    # settings, header, each run's session line, one line per score
    assert journal.read_bytes().count(b"\n") == 2 + 2 + 4


def test_each_run_records_where_it_scored_and_other_threads_are_said(plugin, tss, tmp_path,
                                                                    monkeypatch):
    """Exact scores depend on the device, torch build and threads per worker, which are not
    settings: the journal keeps them per run, and a continuation with others says so."""
    _, indices = tss
    log, journal = tmp_path / "calls.txt", tmp_path / "journal.csv"
    run_scoring(probe_job(log), indices[:3], journal, progress=False)
    (first,) = read_sessions(journal)
    assert first["executor"] == "in-process" and first["workers"] == 1
    assert first["threads_per_worker"] == torch.get_num_threads()
    assert (first["device"], first["torch"]) == ("cpu", torch.__version__)

    monkeypatch.setattr(InProcessExecutor, "layout", lambda self, job: {
        "executor": "in-process", "workers": 1, "threads_per_worker": 7})
    said = []
    done = run_scoring(probe_job(log), indices, journal, progress=False, notify=said.append)
    assert len(done) == len(indices) and len(calls(log)) == len(indices)
    other = [line for line in said if "also holds scores computed with" in line]
    assert len(other) == 1 and "threads_per_worker 7" in other[0]
    assert f"threads_per_worker {torch.get_num_threads()}" in other[0]
    assert [s["threads_per_worker"] for s in read_sessions(journal)] == [
        torch.get_num_threads(), 7]
    assert scored_with(read_sessions(journal))[1] == {
        "device": "cpu", "torch": torch.__version__, "threads_per_worker": 7}

    run_scoring(probe_job(log), indices, journal, progress=False)  # nothing left to score
    assert len(read_sessions(journal)) == 2  # so no session line is added


def test_session_lines_keep_row_errors_on_their_file_line(tmp_path):
    settings = {"bench": "nats-tss"}
    path = tmp_path / "journal.csv"
    with Journal(path, settings, session={"threads_per_worker": 1}) as journal:
        journal.append([(1, "a", "p", "1", 0.5, 0.1, "")])
    assert read_sessions(path) == [{"threads_per_worker": 1}]
    with Journal(path, settings, session={"threads_per_worker": 2}) as journal:
        journal.append([(2, "b", "p", "1", 0.25, 0.1, "")])
    lines = path.read_text().splitlines()
    assert [line.startswith(SESSION_PREFIX) for line in lines] == [
        False, False, True, False, True, False]
    assert list(read_journal(path)[1]["score"]) == [0.5, 0.25]
    path.write_text("\n".join(lines[:-1] + ["3,c,p,1,oops,0.1,"]) + "\n")
    with pytest.raises(JournalError, match="line 6: score 'oops' is not a number"):
        read_journal(path)
    # A journal from before session records: its rows are said to be unrecorded.
    write_journal(path, settings, [(1, "a", "p", "1", 0.5, 0.1, "")])
    assert read_sessions(path) == [UNRECORDED_SESSION]


def test_one_and_two_worker_processes_give_identical_scores(plugin, tss, tmp_path):
    _, indices = tss
    # Same torch thread count in both: MKL's float64 sums may round differently with another.
    job = ScoringJob(bench="nats-tss", proxies=("synflow", "zc_test_probe"), plugins=(PLUGIN,),
                     threads=1, tune_malloc=False)
    # In process and in reverse order: each worker's first network must not differ from
    # what the same architecture gets later in a run (lazy tables must not eat the seed).
    serial = run_scoring(job, list(reversed(indices)), tmp_path / "one.csv", progress=False)
    with ProcessPoolExecutor(2, threads=1) as pool:
        parallel = run_scoring(job, indices, tmp_path / "two.csv", progress=False,
                               executor=pool)
    key = ["index", "proxy"]
    a = serial.sort_values(key).reset_index(drop=True)
    b = parallel.sort_values(key).reset_index(drop=True)
    assert len(a) == 2 * len(indices) and (a["error"] == "").all()
    pd.testing.assert_frame_equal(a[key + ["score"]], b[key + ["score"]], check_exact=True)


def test_process_pool_recovers_from_a_dying_worker(plugin, tss, tmp_path):
    _, indices = tss
    log, marker = tmp_path / "calls.txt", tmp_path / "crashed"
    job = probe_job(log, crash_marker=str(marker))
    with ProcessPoolExecutor(1, threads=1) as pool:
        done = run_scoring(job, indices[:3], tmp_path / "j.csv", progress=False, executor=pool)
    assert marker.exists()  # a worker did die
    assert sorted(done["index"]) == sorted(indices[:3]) and (done["error"] == "").all()
    assert sorted(calls(log)) == sorted(repr(v) for v in done["score"])  # each once


def test_an_architecture_that_kills_its_worker_every_time_is_journaled_and_retried(
        plugin, tss, tmp_path):
    """A network that kills its worker on every attempt (max_attempts = 3) ends its retries
    with an environment failure naming the deaths, without stalling the run; its neighbours in
    flight at each death are scored, not blamed (the pool cannot tell who killed it, so only a
    death while alone counts); the next run scores it again."""
    _, indices = tss
    first = run_scoring(probe_job(tmp_path / "plain.txt"), indices[:3], tmp_path / "plain.csv",
                        progress=False)
    value = dict(zip(first["index"], first["score"]))
    killer = indices[1]
    log, marker = tmp_path / "calls.txt", tmp_path / "crashed"
    # Three deaths alone, and one more if it first died beside a neighbour (scheduling).
    job = probe_job(log, crash_marker=str(marker), crash_times=4, crash_value=repr(value[killer]))
    with ProcessPoolExecutor(2, threads=1, max_attempts=3) as pool:  # all three in flight
        done = run_scoring(job, indices[:3], tmp_path / "j.csv", progress=False, executor=pool)
        assert len(list(tmp_path.glob("crashed*"))) in (3, 4)
        errors = dict(zip(done["index"], done["error"]))
        assert errors.pop(killer).startswith(ENVIRONMENT + "WorkerDied")
        assert "died 3 times" in dict(zip(done["index"], done["error"]))[killer]
        assert errors == {i: "" for i in indices[:3] if i != killer}  # neighbours scored
        # A neighbour whose result was lost with the killer's process is rerun (logged twice).
        assert set(calls(log)) == {repr(value[i]) for i in errors}
        again = run_scoring(job, indices[:3], tmp_path / "j.csv", progress=False,
                            executor=pool)
    assert (again["error"] == "").all() and len(again) == 3
    assert dict(zip(again["index"], again["score"])) == value


def test_a_pool_that_refuses_work_once_broken_is_rebuilt_not_fatal(plugin, tss, tmp_path):
    """A pool that lost a worker raises BrokenProcessPool from submit() itself (it is marked
    broken before its futures fail); the run rebuilds the pool and scores everything once."""
    import concurrent.futures as cf
    _, indices = tss
    log = tmp_path / "calls.txt"
    job = probe_job(log)
    with ProcessPoolExecutor(1, threads=1) as pool:
        pool.start(replace(job, inputs_fingerprint=run_settings(job)[0]["inputs_fingerprint"]))
        broken_pool, calls_made = pool._pool, []

        def submit(*args):
            calls_made.append(args)
            if len(calls_made) == 2:
                raise cf.process.BrokenProcessPool("a worker died")
            return type(broken_pool).submit(broken_pool, *args)
        broken_pool.submit = submit
        done = run_scoring(job, indices[:4], tmp_path / "j.csv", progress=False, executor=pool)
        assert len(calls_made) == 2 and pool.starts == 2  # refused once, rebuilt once
    assert sorted(done["index"]) == sorted(indices[:4]) and (done["error"] == "").all()
    assert sorted(calls(log)) == sorted(repr(v) for v in done["score"])  # each once


def test_a_pool_started_without_an_image_check_does_not_serve_a_checked_run(tmp_path):
    """A pool pre-started (``executor.start(job)``) for a job that names no image fingerprint
    loaded its batch unchecked; a run that found one must not reuse
    it, or the workers' images would never be compared with the journal's."""
    job = ScoringJob(bench="nats-tss", proxies=("naswot",))
    checked = replace(job, inputs_fingerprint="sha256:" + "a" * 64)
    assert serves(job, job) and serves(checked, checked)
    assert not serves(job, checked)  # unchecked workers, checked run: start afresh
    assert serves(checked, job)  # a run that found no batch asks for no check
    assert not serves(checked, replace(job, inputs_fingerprint="sha256:" + "b" * 64))
    assert serves(replace(checked, proxies=("naswot", "zico")), checked)  # a subset of proxies
    pool = InProcessExecutor()
    pool.start(job)
    pool.start(job)
    unchecked = pool._worker
    assert pool.starts == 1  # the same job: the same worker
    pool.start(checked)
    assert pool._worker is not unchecked and pool.starts == 2
    assert pool._worker.refusal is not None  # it compared its images (with a made-up digest)


def interrupt_once_written(marker: Path) -> None:
    """Ctrl-C for this process as soon as ``marker`` exists (a hung call has started)."""
    def watch():
        while not marker.exists() or not marker.read_text().strip():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=watch, daemon=True).start()


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_an_interrupted_pool_stops_the_architectures_in_flight_instead_of_waiting(
        plugin, tss, tmp_path):
    _, indices = tss
    log, hung = tmp_path / "calls.txt", tmp_path / "hung"
    job = probe_job(log, hang_marker=str(hung))  # one call sleeps for 10 minutes
    interrupt_once_written(hung)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with ProcessPoolExecutor(1, threads=1) as pool:
            run_scoring(job, indices[:3], tmp_path / "j.csv", progress=False, executor=pool)
    assert time.monotonic() - start < 120  # not the hung call's 600 s
    assert not running(int(hung.read_text()))
    finished = calls(log)
    assert len(finished) < 3  # the hung call never finished
    assert set(repr(v) for v in rows(tmp_path / "j.csv")["score"]) <= set(finished)
    again = run_scoring(job, indices[:3], tmp_path / "j.csv", progress=False)
    assert sorted(again["index"]) == sorted(indices[:3])  # the next run scores the rest


def test_a_failing_proxy_is_recorded_with_its_error(plugin, tss, tmp_path):
    bench, indices = tss
    job = ScoringJob(bench="nats-tss", proxies=("n_params", "zc_test_fail"), plugins=(PLUGIN,))
    journal = run_scoring(job, indices[:2], tmp_path / "j.csv", progress=False)
    failed = journal[journal["proxy"] == "zc_test_fail"]
    assert len(failed) == 2 and failed["score"].isna().all()
    assert failed["error"].str.contains("ValueError: boom from the test proxy").all()
    ok = journal[journal["proxy"] == "n_params"]
    assert (ok["error"] == "").all() and (ok["score"] > 0).all()  # the others still scored
    wide = wide_scores(journal, bench, "cifar10", ["n_params", "zc_test_fail"], indices[:2])
    assert (wide["errors"] == "zc_test_fail: ValueError: boom from the test proxy").all()
    # A recorded failure counts as done: it is reported, not silently retried forever.
    again = run_scoring(job, indices[:2], tmp_path / "j.csv", progress=False)
    assert len(again) == 4


def test_errors_name_each_proxy_in_column_order_and_count_only_what_ran(tss):
    """Two proxies fail on one architecture: ``errors`` lists both, in the table's column order
    (not alphabetical), and leaves out a proxy the table has no column for; the summary counts
    a proxy's failures only where it ran (a folder grows proxy by proxy)."""
    bench, indices = tss
    a, b, c = (int(i) for i in indices[:3])
    rows = [(a, "n_params", 1.0, ""), (b, "n_params", 2.0, ""), (c, "n_params", 3.0, ""),
            (a, "zz_late", math.nan, "ValueError: x; y"), (b, "zz_late", 5.0, ""),
            (a, "aa_early", -math.inf, "undefined (-inf): dead"),
            (a, "not_a_column", math.nan, "ValueError: unseen")]
    journal = pd.DataFrame(rows, columns=["index", "proxy", "score", "error"]).assign(seconds=0.1)
    wide = wide_scores(journal, bench, "cifar10", ["n_params", "zz_late", "aa_early"],
                       [a, b, c])
    assert list(wide["errors"]) == [
        "zz_late: ValueError: x; y | aa_early: undefined (-inf): dead", "", ""]
    assert correlate.failures_by_proxy(wide, ["n_params", "zz_late", "aa_early"]) == (
        "aa_early 1, zz_late 1")  # aa_early was not run on b and c: not failures
    assert correlate.failures_by_proxy(wide, ["zz_late", "aa_early"], top=1) == (
        "aa_early 1 and 1 more proxies")


def test_a_recipe_that_reads_no_image_runs_without_an_image_folder(tss, tmp_path, monkeypatch):
    """grad_norm recipe=zennas draws Gaussian inputs: the runner must not load (or demand) the
    image batch for it, while the default recipe, which reads images, still demands one."""
    from zcproxy import runner

    def no_images(*args, **kwargs):
        raise FileNotFoundError("no CIFAR-10 folder in this test")
    monkeypatch.setattr(runner, "job_batch", no_images)
    monkeypatch.setattr(runner, "_SETTINGS_CACHE", {})
    _, indices = tss
    zennas = ScoringJob(bench="nats-tss", proxies=("grad_norm",),
                        proxy_options={"grad_norm": {"recipe": "zennas", "batch_size": 4}})
    journal = run_scoring(zennas, indices[:1], tmp_path / "zennas.csv", progress=False)
    assert (journal["error"] == "").all() and (journal["score"] > 0).all()
    images = ScoringJob(bench="nats-tss", proxies=("grad_norm",))
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 folder"):
        run_scoring(images, indices[:1], tmp_path / "images.csv", progress=False)


def test_rows_a_new_version_keeps_are_reused_out_loud_and_the_others_rescored(tss, tmp_path):
    """tenas_ntk version 2 only loosened the undefined-limit: version-1 rows that are finite or
    singular under any limit are reused (the file keeps their version), one that version 2
    may define is rescored."""
    from zcproxy.runner import run_settings
    bench, indices = tss
    job = ScoringJob(bench="nats-tss", proxies=("tenas_ntk",),
                     proxy_options={"tenas_ntk": {"batch_size": 2}})
    settings, _ = run_settings(job)
    archs = bench.table("cifar10")["arch"].to_numpy()
    singular = "undefined (inf): the NTK is singular (eigenvalues {} .. {}): the per-sample"
    a, b, c = (int(i) for i in indices[:3])
    path = tmp_path / "journal.csv"
    write_journal(path, settings, [
        (a, archs[a], "tenas_ntk", "1", 123.5, 1.0, ""),
        (b, archs[b], "tenas_ntk", "1", float("inf"), 1.0, singular.format("0", "0")),
        (c, archs[c], "tenas_ntk", "1", float("inf"), 1.0, singular.format("2.1e-06", "8.4"))])
    said: list[str] = []
    frame = run_scoring(job, [a, b, c], path, progress=False, notify=said.append)
    assert any("reusing 2 tenas_ntk scores of definition version 1 as version 2" in line
               and "1 other version-1 row(s) it may not" in line for line in said), said
    assert any("rescoring 1 tenas_ntk" in line for line in said), said
    got = frame.set_index("index")
    assert (got["version"] == "2").all()
    assert got.loc[a, "score"] == 123.5 and got.loc[b, "score"] == math.inf
    assert got.loc[c, "score"] != math.inf  # scored again: a 2-sample NTK of a live cell
    on_file = read_journal(path)[1].set_index("index")["version"]
    assert on_file[a] == "1" and on_file[b] == "1" and on_file[c] == "2"


def test_a_worker_that_cannot_start_stops_the_run_with_the_reason(tmp_path):
    job = ScoringJob(bench="nats-tss", proxies=("n_params",), plugins=("no_such_plugin_zc",))
    with pytest.raises(ModuleNotFoundError, match="no_such_plugin_zc"):
        run_scoring(job, [0], tmp_path / "j.csv", progress=False)
    with ProcessPoolExecutor(1, threads=1) as pool:
        with pytest.raises(RuntimeError, match="no_such_plugin_zc"):
            run_scoring(job, [0], tmp_path / "j2.csv", progress=False, executor=pool)


def test_run_settings_clash_is_a_clear_error(tmp_path):
    from zcproxy.runner import SettingsMismatch, run_settings
    job = ScoringJob(bench="nats-tss", proxies=("n_params",), seed=0)
    settings, _ = run_settings(job)
    correlate.write_run_record(tmp_path, settings, {})
    assert json.loads((tmp_path / "run.json").read_text())["seed"] == 0
    correlate.check_run_record(tmp_path, settings)  # same settings: fine
    other, _ = run_settings(ScoringJob(bench="nats-tss", proxies=("n_params",), seed=1,
                                       batch_size=32))
    with pytest.raises(SettingsMismatch, match=r"seed: 0 there, 1 now.*batch_size: 64 there, 32 now"):
        correlate.check_run_record(tmp_path, other)


def _correlate(out: Path, *extra: str) -> int:
    return correlate.main(["--bench", "nats-tss", "--sample", "6", "--seed", "5",
                           "--proxies", "synflow", "--no-baselines", "--bootstrap", "0",
                           "--no-progress", "--out", str(out), *extra])


def test_ctrl_c_in_correlate_keeps_the_finished_scores_and_says_how_to_continue(
        tmp_path, capsys):
    from zcproxy.registry import register_proxy
    seen, stop_after = [], [2]

    @register_proxy("zc_test_ctrl_c", needs_forward=False, replace=True, description="test")
    def ctrl_c(ctx):
        if len(seen) == stop_after[0]:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the third
        seen.append(1)
        return 1.0

    def run():
        return correlate.main(["--bench", "nats-tss", "--sample", "6", "--proxies",
                               "zc_test_ctrl_c", "--no-baselines", "--bootstrap", "0",
                               "--no-progress", "--out", str(tmp_path)])
    try:
        assert run() == 130
        assert "run the same command again to continue" in capsys.readouterr().err
        assert len(rows(tmp_path / "journal.csv")) == 2
        stop_after[0] = None
        assert run() == 0
        assert len(rows(tmp_path / "journal.csv")) == 6 and len(seen) == 6
    finally:
        unregister_proxy("zc_test_ctrl_c")


def test_sigterm_in_correlate_stops_like_ctrl_c(tmp_path, capsys):
    """A scheduler's SIGTERM: finished scores stay, the note says how to continue, exit 143."""
    import os
    import signal

    from zcproxy.registry import register_proxy
    seen = []

    @register_proxy("zc_test_sigterm", needs_forward=False, replace=True, description="test")
    def sigterm(ctx):
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread
        seen.append(1)
        return 1.0

    before = signal.getsignal(signal.SIGTERM)
    try:
        assert correlate.main(["--bench", "nats-tss", "--sample", "6", "--proxies",
                               "zc_test_sigterm", "--no-baselines", "--bootstrap", "0",
                               "--no-progress", "--out", str(tmp_path)]) == 143
        assert "run the same command again to continue" in capsys.readouterr().err
        assert len(rows(tmp_path / "journal.csv")) == 2
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        unregister_proxy("zc_test_sigterm")


def test_two_shards_merged_equal_one_unsharded_run(tmp_path, capsys):
    assert _correlate(tmp_path / "whole") == 0
    shards = tmp_path / "shards"
    assert _correlate(shards, "--shard", "1/2") == 0
    capsys.readouterr()
    assert _correlate(shards, "--merge") == 2
    assert "missing shard journal(s) journal.shard-0-of-2.csv" in capsys.readouterr().err
    assert _correlate(shards, "--shard", "0/2") == 0
    parts = [rows(shards / f"journal.shard-{i}-of-2.csv") for i in range(2)]
    assert set(parts[0]["index"]).isdisjoint(parts[1]["index"])
    assert [len(p) for p in parts] == [3, 3]
    shard_sessions = [read_sessions(shards / f"journal.shard-{i}-of-2.csv")[0] for i in (0, 1)]
    # Shards started in the same second are still two runs (CI once merged them into one).
    assert shard_sessions[0]["run"] != shard_sessions[1]["run"]
    assert _correlate(shards, "--merge") == 0
    assert read_sessions(shards / "journal.csv") == shard_sessions  # the runs, listed on top
    record = json.loads((shards / "run.json").read_text())
    assert record["scored_with"] == scored_with(shard_sessions)  # one machine, one layout
    assert _correlate(shards, "--merge") == 0  # merged again: each run is listed once
    assert read_sessions(shards / "journal.csv") == shard_sessions
    whole = pd.read_csv(tmp_path / "whole" / "scores.csv")
    merged = pd.read_csv(shards / "scores.csv")
    pd.testing.assert_frame_equal(whole[["index", "arch", "synflow"]],
                                  merged[["index", "arch", "synflow"]], check_exact=True)
    assert (shards / "correlations.md").exists()


def test_merge_names_the_shard_whose_scores_are_missing(tmp_path, capsys):
    assert _correlate(tmp_path, "--shard", "0/2") == 0
    assert _correlate(tmp_path, "--shard", "1/2") == 0
    path = tmp_path / "journal.shard-1-of-2.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))  # shard 1 lost its last score
    capsys.readouterr()
    assert _correlate(tmp_path, "--merge") == 2
    assert re.search(r"1 score\(s\) of 1 architecture\(s\).*shard\(s\) 1 of 2",
                     capsys.readouterr().err)


def test_shard_argument_is_checked():
    with pytest.raises(UsageError, match="I/N"):
        correlate.parse_shard("1of2")
    with pytest.raises(UsageError, match="0 <= I < N"):
        correlate.parse_shard("2/2")
    assert correlate.shard_indices(list(range(7)), 1, 3) == [1, 4]


def test_workers_are_pinned_only_when_the_pool_fills_the_cores(monkeypatch):
    from zcproxy import executors
    monkeypatch.setattr(executors.os, "sched_getaffinity", lambda pid: {4, 1, 7, 2}, raising=False)
    assert executors.core_groups(4, 1) == [[1], [2], [4], [7]]
    assert executors.core_groups(2, 2) == [[1, 2], [4, 7]]
    assert executors.core_groups(2, 1) is None  # leaves cores free: not pinned
    assert executors.core_groups(8, 1) is None  # oversubscribed: not pinned


def test_make_executor_picks_the_executor_the_flags_name():
    assert isinstance(make_executor("local", workers=1), InProcessExecutor)
    assert isinstance(make_executor("local", workers=3), ProcessPoolExecutor)
    with pytest.raises(ValueError, match="'local' or 'ray'"):
        make_executor("slurm")


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.again = self.conv  # the same module twice
        self.register_buffer("scale", torch.tensor(2.0), persistent=False)
        self.tag = ["kept", 1]

    def forward(self, x):
        return self.bn(self.again(self.conv(x))) * self.scale


def test_clone_module_is_a_faithful_deepcopy():
    """The fast copy behind every prepared model must equal copy.deepcopy in every respect
    a proxy can observe, and share nothing mutable with the original."""
    net = get_benchmark("nats-tss").build(123)
    net.stem[0].register_forward_hook(lambda *a: None)
    for original in (net, _Shared()):
        fast, slow = clone_module(original), copy.deepcopy(original)
        assert [(n, type(m)) for n, m in fast.named_modules(remove_duplicate=False)] == \
               [(n, type(m)) for n, m in slow.named_modules(remove_duplicate=False)]
        for (k, a), (_, b), (_, o) in zip(fast.state_dict().items(), slow.state_dict().items(),
                                          original.state_dict().items()):
            assert torch.equal(a, b) and a.data_ptr() != o.data_ptr(), k
        for m_fast, m_orig in zip(fast.modules(), original.modules()):
            assert m_fast is not m_orig
            assert m_fast._forward_hooks is not m_orig._forward_hooks
            assert m_fast._forward_hooks.keys() == m_orig._forward_hooks.keys()
            assert m_fast.__dict__.keys() == m_orig.__dict__.keys()
        assert all(p.requires_grad and type(p) is nn.Parameter for p in fast.parameters())
    torch.manual_seed(0)
    model = _Shared().eval()
    shared = clone_module(model)
    assert shared.again is shared.conv and shared.tag == ["kept", 1]
    assert "scale" not in shared.state_dict() and "scale" in dict(shared.named_buffers())
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(shared(x), model(x))
    before = [p.clone() for p in model.parameters()]
    with torch.no_grad():
        for p in shared.parameters():
            p.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_correlate_sets_each_dataset_beside_its_own_published_figures(tmp_path):
    """The published columns follow --dataset: NB201 Synflow is .561 on CIFAR-10 and .553 on
    CIFAR-100 (VKDNW Table 1); a CIFAR-100 study must not show the CIFAR-10 figure."""
    from zcproxy.published import published
    out = tmp_path / "c100"
    assert correlate.main(["--bench", "nats-tss", "--dataset", "cifar100", "--sample", "3",
                           "--proxies", "synflow", "--no-baselines", "--bootstrap", "0",
                           "--workers", "1", "--no-progress", "--out", str(out)]) == 0
    table = pd.read_csv(out / "correlations.csv", index_col=0)
    tau, rho, _ = published("nats-tss", "synflow", "cifar100")
    assert (tau, rho) != published("nats-tss", "synflow", "cifar10")[:2]
    assert table.loc["synflow", "paper_kendall"] == tau
    assert table.loc["synflow", "paper_spearman"] == rho
