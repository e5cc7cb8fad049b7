"""The Ray executor on a local Ray instance (2 CPUs, loopback, no dashboard).

Skipped only where ``ray`` is not installed (``pip install 'zcproxy[ray]'``).  The probe proxy
of test_runner.py logs each finished computation, and one call per run kills its Ray worker
process; the run must still finish with every architecture scored exactly once.
"""
from __future__ import annotations

import os
import time

import pytest

from test_runner import (calls, interrupt_once_written, probe_job, rows, running, unload_plugin,
                         write_plugin)
from zcproxy.executors import RayExecutor
from zcproxy.nasbench import get_benchmark
from zcproxy.runner import run_scoring

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    folder = write_plugin(tmp_path_factory.mktemp("plugin"))
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield folder
    ray.shutdown()
    unload_plugin()


@pytest.fixture(scope="module")
def indices():
    return get_benchmark("nats-tss").sample(8, seed=21)


def _in_process_scores(log, indices, tmp_path, monkeypatch, folder):
    monkeypatch.syspath_prepend(str(folder))
    return run_scoring(probe_job(log), indices, tmp_path / "serial.csv", progress=False)


@pytest.mark.parametrize("max_retries", [2, 0], ids=["ray-retries", "parent-resubmits"])
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(local_ray, indices, tmp_path,
                                                              monkeypatch, max_retries):
    log, marker = tmp_path / "calls.txt", tmp_path / "crashed"
    executor = RayExecutor(chunk_size=2, max_retries=max_retries, resubmits=2)
    with executor:
        done = run_scoring(probe_job(log, crash_marker=str(marker)), indices,
                           tmp_path / "journal.csv", progress=False, executor=executor)
    assert marker.exists()  # one Ray worker process really died
    assert sorted(done["index"]) == sorted(indices) and (done["error"] == "").all()
    assert len(rows(tmp_path / "journal.csv")) == len(indices)  # each score once
    # The chunk that died had finished nothing, so nothing was computed twice.
    assert sorted(calls(log)) == sorted(repr(v) for v in done["score"])
    # Same numbers as scoring in this process.
    serial = _in_process_scores(tmp_path / "serial.txt", indices, tmp_path, monkeypatch,
                                local_ray)
    merged = done.merge(serial, on=["index", "proxy"], suffixes=("_ray", "_here"))
    assert len(merged) == len(indices) and (merged["score_ray"] == merged["score_here"]).all()


def test_ray_resumes_a_journal_without_recomputing(local_ray, indices, tmp_path):
    log, journal = tmp_path / "calls.txt", tmp_path / "journal.csv"
    with RayExecutor(chunk_size=3) as executor:
        run_scoring(probe_job(log), indices[:5], journal, progress=False, executor=executor)
        done = run_scoring(probe_job(log), indices, journal, progress=False, executor=executor)
    assert sorted(done["index"]) == sorted(indices)
    assert len(calls(log)) == len(indices)  # the first five were not scored again


def test_ray_executor_reports_a_task_that_keeps_failing(local_ray, tmp_path):
    from zcproxy.runner import ScoringJob
    job = ScoringJob(bench="nats-tss", proxies=("n_params",), plugins=("no_such_plugin_zc",))
    with RayExecutor(chunk_size=1, max_retries=0, resubmits=1) as executor:
        with pytest.raises(RuntimeError, match="(?s)failed 2 times.*no_such_plugin_zc"):
            run_scoring(job, [0], tmp_path / "j.csv", progress=False, executor=executor)


def test_an_interrupted_ray_run_cancels_its_chunks_in_flight(local_ray, indices, tmp_path):
    """On a Ray instance it did not start, closing the executor leaves Ray running: without
    cancelling, the hung chunk would go on in its worker after the user stopped the run."""
    log, hung = tmp_path / "calls.txt", tmp_path / "hung"
    interrupt_once_written(hung)
    with pytest.raises(KeyboardInterrupt):
        with RayExecutor(chunk_size=1) as executor:
            run_scoring(probe_job(log, hang_marker=str(hung)), indices[:3],
                        tmp_path / "j.csv", progress=False, executor=executor)
    pid = int(hung.read_text())
    deadline = time.monotonic() + 60
    while running(pid) and time.monotonic() < deadline:  # a forced cancel kills the worker
        time.sleep(0.2)
    assert not running(pid)
    # Nothing unfinished is journaled (a chunk done but not yet collected is scored again).
    assert set(repr(v) for v in rows(tmp_path / "j.csv")["score"]) <= set(calls(log))


def test_an_option_no_network_can_take_stops_a_ray_run_at_once(local_ray, indices, tmp_path):
    """The option is wrong on every node: the run stops with the proxy's own error as soon as
    a chunk returns it, instead of Ray resubmitting the chunk and wrapping the error in a
    RuntimeError (resubmits=2 would say "failed 3 times")."""
    from zcproxy import ProxyOptionError
    from zcproxy.runner import ScoringJob
    job = ScoringJob(bench="nats-tss", proxies=("n_params", "entropic"),
                     proxy_options={"entropic": {"repeats": 0}})
    with RayExecutor(chunk_size=1, max_retries=0, resubmits=2) as executor:
        with pytest.raises(ProxyOptionError,
                           match=r"^entropic: repeats must be at least 1, got 0 \(options "):
            run_scoring(job, indices[:4], tmp_path / "j.csv", progress=False, executor=executor)
    assert len(rows(tmp_path / "j.csv")) == 0  # no architecture's failure was journaled
