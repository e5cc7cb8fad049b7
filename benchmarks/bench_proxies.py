"""How fast does zcproxy score architectures, against the reference-style baseline?

For NATS-sss, NATS-tss and NAS-Bench-101 samples and each proxy set (NASWOT, LogSynflow,
Entropic Score, and all three together) the configurations named by ``--configs`` score the
same architectures (``wN`` stands for ``--workers`` processes):

* ``baseline``: ``benchmarks/reference.py``, the original code's way (a fresh network per
  proxy, deep copies, float32 matmul kernel for NASWOT), one process, torch's default threads;
  always measured, since every score and every ratio is taken against it;
* ``baseline-t1``: the same with 1 torch thread;
* ``ours-w1``, ``ours-wN``: ``zcproxy.runner.run_scoring`` with exact arithmetic
  (``ScoringJob(exact=True)``, bit parity with the baseline), in one process with 1 torch
  thread, or in ``--workers`` spawned processes with 1 thread each;
* ``fast-w1``, ``fast-wN``: the same on the fast path of issue 16 (``ScoringJob(exact=False)``:
  NASWOT in bfloat16 channels-last, the signed Entropic Score in float32 channels-last).

Each configuration lives in its own long-running child process (set up before any timing:
imports, benchmark tables, CIFAR batch, worker pool), and the parent hands the children the
sample block by block in rotating order, so that all of them are measured in the same minutes
of a possibly loaded machine.  That interleaved measurement is repeated ``--repeats`` times per
benchmark and proxy set, each time in another order, because on a shared VM one measurement of
a pool moves by ±15 %: the report gives the median arch/s and the median ratio to the baseline
with its min–max spread.  Per configuration it also reports CPU seconds per architecture (all
processes of the configuration; the load-independent cost) and peak RSS (``VmHWM`` of every
process of the configuration, summed), and checks every score against the baseline's: exact
configurations within ``--rtol`` (default 1e-9), fast ones by the fidelity gate of issue 16
(the same non-finite scores, Spearman ρ ≥ 0.9999 per proxy; the largest relative difference is
reported).  It also times a large float32/float64 matmul to get the machine's FLOP rate per
core, counts the FLOPs each proxy needs (``torch.utils.flop_counter`` on the meta device, every
sampled architecture) and reports the FLOP-bound floor, and profiles one proxy set (cProfile)
before (baseline) and after (each in-process zcproxy configuration).  Writes
``benchmarks/RESULTS.md`` (``--out``).
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROXY_SETS = {"naswot": ("naswot",), "logsynflow": ("logsynflow",),
              "entropic": ("entropic",), "all": ("naswot", "logsynflow", "entropic")}
SSS_TOTAL = 32768
SSS_MINUTES = 70  # issue 16: all of NATS-sss, all three proxies, on 2 cores
CONFIGS = ("baseline", "baseline-t1", "ours-w1", "ours-wN", "fast-w1", "fast-wN")
DEFAULT_CONFIGS = "baseline,baseline-t1,ours-wN,fast-w1,fast-wN"


def config_names(spec: str, workers: int) -> list[str]:
    """The configurations of ``--configs``, with ``wN`` spelled out as ``w<workers>``.

    ``baseline`` comes first even if not asked for: every score check and every ratio is taken
    against it.  With ``--workers 1``, ``ours-wN`` is ``ours-w1`` (in process), and so on."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    return list(dict.fromkeys(n.replace("-wN", f"-w{workers}") for n in ["baseline", *names]))


def is_fast(impl: str) -> bool:
    """Whether a configuration scores on the fast path (judged by rank, not by bits)."""
    return impl.startswith("fast-")


# ----------------------------------------------------------------------------- child side
def _proc_stat(pid: int | str = "self") -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    peak = 0.0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cpu, peak


def _short_paths(text: str) -> str:
    for prefix in (str(ROOT), sysconfig.get_paths()["purelib"], os.path.dirname(os.__file__)):
        text = text.replace(prefix + "/", "")
    return text


def _reset_peak(pid: int | str = "self") -> None:
    # Linux: writing 5 to clear_refs resets the RSS high-water mark (VmHWM) to the current RSS.
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")


class _Child:
    """One configuration, set up once; scores blocks of architectures on request."""

    def __init__(self, impl: str, bench: str, sets: Sequence[str], sample: int, seed: int):
        start = time.perf_counter()
        self.impl = impl
        self.all_proxies = tuple(dict.fromkeys(p for s in sets for p in PROXY_SETS[s]))
        from zcproxy.nasbench import get_benchmark
        self.indices = get_benchmark(bench).sample(sample, seed=seed)
        self.pool_pids: list[int] = []
        if impl.startswith("baseline"):
            if impl == "baseline-t1":
                import torch
                torch.set_num_threads(1)
            sys.path.insert(0, str(HERE))
            from reference import ReferenceScorer
            self.scorer = ReferenceScorer(bench, seed=seed)
            if "naswot" in self.all_proxies:
                self.scorer.batch()
        else:
            from zcproxy.executors import InProcessExecutor, ProcessPoolExecutor
            from zcproxy.runner import ScoringJob, run_settings
            workers = int(impl.rsplit("-w", 1)[1])
            # One job with every proxy: the same workers then serve each proxy set.  It names
            # the image batch run_scoring will find, so the workers started here check theirs
            # against it and serve the timed runs (unchecked workers would be replaced).
            job = ScoringJob(bench=bench, proxies=self.all_proxies, seed=seed, threads=1,
                             exact=not is_fast(impl))
            self.job = dataclasses.replace(
                job, inputs_fingerprint=run_settings(job)[0]["inputs_fingerprint"])
            self.executor = (InProcessExecutor() if workers == 1
                             else ProcessPoolExecutor(workers, threads=1))
            self.executor.start(self.job)
            if workers > 1:
                self.pool_pids = list(self.executor._pool._processes)
            self.folder = Path(tempfile.mkdtemp(prefix="zcbench-"))
        self.startup = time.perf_counter() - start

    def cpu(self) -> float:
        return _proc_stat()[0] + sum(_proc_stat(p)[0] for p in self.pool_pids)

    def score(self, set_name: str, indices: list[int], run: str) -> dict:
        cpu0, wall0 = self.cpu(), time.perf_counter()
        scores = self._score(set_name, indices, run)
        return {"seconds": time.perf_counter() - wall0, "cpu": self.cpu() - cpu0,
                "scores": scores}

    def _score(self, set_name: str, indices: list[int], run: str) -> dict:
        # ``run`` names the journal: each repetition (and the profile) must score afresh, since
        # run_scoring skips what its journal already holds.
        proxies = PROXY_SETS[set_name]
        if self.impl.startswith("baseline"):
            return {str(i): self.scorer.score(i, proxies) for i in indices}
        from zcproxy.runner import run_scoring
        job = dataclasses.replace(self.job, proxies=proxies)
        frame = run_scoring(job, indices, self.folder / f"journal-{set_name}-{run}.csv",
                            progress=False, executor=self.executor)
        if self.executor.starts != 1:
            raise RuntimeError(f"{self.impl}: the workers were set up again during a timed run "
                               "(their start-up would be timed, a new pool's CPU time not "
                               "counted)")
        frame = frame[frame["index"].isin(indices)]
        out: dict = {}
        for index, proxy, score, error in frame[["index", "proxy", "score", "error"]].itertuples(
                index=False):
            if isinstance(error, str) and error and "non-finite" not in error:
                raise RuntimeError(f"{self.impl}: arch {index} {proxy}: {error}")
            out.setdefault(str(index), {})[proxy] = float(score)
        return out

    def profile(self, set_name: str, indices: list[int], top: int) -> str:
        prof = cProfile.Profile()
        prof.enable()
        self._score(set_name, indices, "profile")
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
        lines = [ln for ln in text.getvalue().splitlines() if ln.strip()]
        keep = [ln.strip() for ln in lines if "function calls" in ln]
        start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
        return _short_paths("\n".join(keep + lines[start:]))

    def reset_peaks(self) -> None:
        for pid in ["self", *self.pool_pids]:
            _reset_peak(pid)

    def peaks(self) -> list[float]:
        return [_proc_stat()[1]] + [_proc_stat(p)[1] for p in self.pool_pids]

    def close(self) -> None:
        if not self.impl.startswith("baseline"):
            self.executor.close()


def child_main(config: dict) -> int:
    child = _Child(**config)
    _send({"ready": True, "startup": child.startup, "indices": child.indices})
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request["cmd"]
        if cmd == "score":
            _send(child.score(request["set"], request["indices"], request["run"]))
        elif cmd == "reset_peaks":
            child.reset_peaks()
            _send({})
        elif cmd == "peaks":
            _send({"peaks": child.peaks()})
        elif cmd == "profile":
            _send({"text": child.profile(request["set"], request["indices"], request["top"])})
        elif cmd == "flops":
            _send({"flops": proxy_flops(config["bench"], request["indices"])})
        elif cmd == "naswot_forward":
            _send({"seconds": naswot_forward_seconds(config["bench"], request["indices"],
                                                     config["seed"])})
        elif cmd == "stop":
            child.close()
            _send({})
            return 0
    return 1


def _send(message: dict) -> None:
    sys.stdout.write("@@" + json.dumps(message) + "\n")
    sys.stdout.flush()


# -------------------------------------------------------------------------- FLOP floor
def proxy_flops(bench_name: str, indices: Sequence[int]) -> dict[str, list[float]]:
    """FLOPs of the passes each proxy runs, per architecture, counted on the meta device:
    NASWOT one float32 forward of 64 images; LogSynflow one float64 forward+backward of one
    image; the Entropic Score three float64 forwards of one image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from zcproxy.nasbench import get_benchmark
    from zcproxy.surgery import Recipe, prepare
    bench = get_benchmark(bench_name)
    shape = bench.input_shape("cifar10")
    out: dict[str, list[float]] = {"naswot": [], "logsynflow": [], "entropic": []}
    for index in indices:
        model = bench.build(index)

        def count(net, batch, dtype, backward=False):
            net = net.to("meta")
            x = torch.ones((batch, *shape), dtype=dtype, device="meta")
            counter = FlopCounterMode(display=False)
            with counter:
                y = bench.output_selector(net(x))
                if backward:
                    y.sum().backward()
            return float(counter.get_total_flops())

        out["naswot"].append(count(prepare(model, Recipe(relu=True, train=True)), 64,
                                   torch.float32))
        linear = Recipe(suppress_norm=True, absolute=True, dtype=torch.float64, train=False)
        out["logsynflow"].append(count(prepare(model, linear), 1, torch.float64, True))
        es = Recipe(suppress_norm=True, relu=True, dtype=torch.float64, train=False)
        with torch.no_grad():
            out["entropic"].append(3 * count(prepare(model, es), 1, torch.float64))
    return out


def naswot_forward_seconds(bench_name: str, indices: Sequence[int], seed: int) -> list[float]:
    """Per architecture, one thread: the bare train-mode forward of the NASWOT batch (no hooks,
    no codes, no kernel), warm (second of two runs).  Both the baseline and zcproxy must run
    exactly this forward to get the reference's codes, so ``workers / mean`` bounds what any
    exact NASWOT can reach on this machine, whatever its overhead."""
    import torch

    sys.path.insert(0, str(HERE))
    from reference import ReferenceScorer  # the same seeded build and batch as the baseline
    from zcproxy.surgery import Recipe, prepare
    torch.set_num_threads(1)
    scorer = ReferenceScorer(bench_name, seed=seed)
    x = scorer.batch()
    out = []
    for index in indices:
        net = prepare(scorer.build(index), Recipe(relu=True, train=True))
        with torch.inference_mode():
            net(x)
            start = time.perf_counter()
            net(x)
            out.append(time.perf_counter() - start)
    return out


def matmul_rates(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best single-thread matmul rate in FLOP per CPU second (and per wall second)."""
    import torch
    torch.set_num_threads(1)
    rates = {}
    for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        a @ b
        best_cpu = best_wall = float("inf")
        for _ in range(repeats):
            c0, w0 = time.process_time(), time.perf_counter()
            a @ b
            best_cpu = min(best_cpu, time.process_time() - c0)
            best_wall = min(best_wall, time.perf_counter() - w0)
        flops = 2 * size ** 3
        rates[name] = flops / best_cpu
        rates[name + "_wall"] = flops / best_wall
    return rates


# ----------------------------------------------------------------------------- parent side
class _Proc:
    def __init__(self, config: dict, env: dict):
        self.config = config
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def ask(self, request: dict | None = None) -> dict:
        if request is not None:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"child {self.config['impl']} died (exit {self.proc.wait()})")


def _same(a: float, b: float) -> bool:
    """Bit for bit the same score; NaN = NaN (the same "no score")."""
    return a == b or (math.isnan(a) and math.isnan(b))


def _close(a: float, b: float, rtol: float) -> bool:
    return _same(a, b) or abs(a - b) <= rtol * max(abs(a), abs(b))


def _fidelity(x, y) -> tuple[float, float, bool, bool]:
    """Issue 16's gate for one proxy, fast scores ``x`` against the baseline's ``y``:
    (Spearman ρ, largest relative difference, same non-finite scores, passed).  The same
    judgement as ``zcproxy.verify`` makes between an exact and a fast run."""
    import numpy as np

    from zcproxy.stats import spearman_rho
    from zcproxy.verify import GATE_SPEARMAN
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    same_nonfinite = bool(np.array_equal(np.isfinite(x), np.isfinite(y))
                          and np.array_equal(x[~finite], y[~finite], equal_nan=True))
    rel = np.abs(x[finite] - y[finite]) / np.maximum(np.abs(y[finite]), np.finfo(float).tiny)
    rho = float(spearman_rho(x[finite], y[finite]).value) if finite.sum() > 1 else math.nan
    # ρ is undefined for constant scores; equal ones still pass.
    passed = same_nonfinite and (rho >= GATE_SPEARMAN or bool((x[finite] == y[finite]).all()))
    return rho, float(rel.max()) if rel.size else 0.0, same_nonfinite, passed


def check_scores(scores: dict, base: dict, proxies: Sequence[str], fast: bool,
                 rtol: float) -> dict:
    """Compare one configuration's scores (``{index: {proxy: score}}``) with the baseline's.

    Exact configurations must match within ``rtol``; the fast path cannot (bfloat16 and
    channels-last sum in another order), so it is held to the fidelity gate instead: per
    proxy, the same non-finite scores and Spearman ρ ≥ 0.9999, with the worst ρ and the
    largest relative difference over the set's proxies reported."""
    pairs = [(i, p, base[i][p], v) for i, d in scores.items() for p, v in d.items()]
    mismatches = [x for x in pairs if not _close(x[2], x[3], rtol)]
    out = {"fast": fast, "scores": len(pairs), "exact": sum(_same(a, v) for _, _, a, v in pairs),
           "mismatches": mismatches[:3], "n_mismatch": len(mismatches)}
    if not fast:
        return {**out, "ok": not mismatches}
    gates = [_fidelity([scores[i][p] for i in scores], [base[i][p] for i in scores])
             for p in proxies]
    rhos = [g[0] for g in gates if not math.isnan(g[0])]
    return {**out, "rho": min(rhos) if rhos else math.nan, "max_rel": max(g[1] for g in gates),
            "same_nonfinite": all(g[2] for g in gates), "ok": all(g[3] for g in gates)}


def _changed_between_runs(runs: list[dict]) -> int:
    """Scores of later repetitions that are not bit for bit those of the first."""
    first = runs[0]["scores"]
    return sum(not _same(v, first[i][p])
               for run in runs[1:] for i, d in run["scores"].items() for p, v in d.items())


def _order(impls: list[str], block: int, rep: int) -> list[str]:
    """Who scores a block first: rotated by block and repetition, and reversed in odd
    repetitions, so that no configuration always follows the same one."""
    shift = (block + rep) % len(impls)
    order = impls[shift:] + impls[:shift]
    return order[::-1] if rep % 2 else order


def arch_rates(row: dict) -> list[float]:
    """Arch/s of each repetition (a dump written before ``--repeats`` has the one)."""
    return row.get("arch_per_s_reps") or [row["arch_per_s"]]


def ratios(row: dict, ref: dict) -> list[float]:
    """Arch/s ÷ the reference configuration's, per repetition: both were measured in the
    same interleaved minutes, so each repetition's ratio is fair even if the load changed."""
    return [a / b for a, b in zip(arch_rates(row), arch_rates(ref))]


def spread(values: Sequence[float]) -> str:
    """``median× [min–max]`` of ratios (just the value if there is one)."""
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.2f}×"
    return f"{med:.2f}× [{min(values):.2f}–{max(values):.2f}]"


def check_text(row: dict) -> str:
    """The report's "scores" cell (and the log's verdict) for one configuration."""
    if row["impl"] == "baseline":
        text = "reference"
    elif row.get("fast"):
        rho = "n/a" if math.isnan(row["rho"]) else f"{row['rho']:.6f}"
        detail = (f"ρ {rho}, max rel {row['max_rel']:.2g}"
                  + ("" if row["same_nonfinite"] else ", other non-finite scores"))
        text = f"rank-equal ({detail})" if row["ok"] else f"**DIFFERENT** ({detail})"
    elif not row["n_mismatch"]:
        text = f"equal ({row['exact']}/{row['scores']} bit-identical)"
    else:
        text = f"**{row['n_mismatch']} differ**: {row['mismatches']}"
    if row.get("n_unstable"):
        text += f"; **{row['n_unstable']} changed between repetitions**"
    return text


def run_bench(bench: str, sets: Sequence[str], sample: int, args, env: dict, log) -> dict:
    """All configurations of one benchmark: one child each, every proxy set in turn (smallest
    memory first, so the RSS high-water mark, reset between sets, is that set's), blocks of
    the sample handed to the children in rotating order, the whole ``--repeats`` times."""
    impls = config_names(args.configs, args.workers)
    procs = {impl: _Proc({"impl": impl, "bench": bench, "sets": list(sets), "sample": sample,
                          "seed": args.seed}, env)
             for impl in impls}
    ready = {impl: p.ask() for impl, p in procs.items()}
    indices = ready["baseline"]["indices"]
    n = len(indices)
    blocks = [indices[i:i + args.block] for i in range(0, n, args.block)]
    rows, profiles, flops = [], {}, None
    for set_name in sets:
        for p in procs.values():
            p.ask({"cmd": "reset_peaks"})
        runs: dict[str, list[dict]] = {impl: [] for impl in impls}
        for rep in range(args.repeats):
            for impl in impls:
                runs[impl].append({"seconds": 0.0, "cpu": 0.0, "scores": {}})
            for b, block in enumerate(blocks):
                for impl in _order(impls, b, rep):
                    reply = procs[impl].ask({"cmd": "score", "set": set_name, "indices": block,
                                             "run": f"r{rep}"})
                    run = runs[impl][rep]
                    run["seconds"] += reply["seconds"]
                    run["cpu"] += reply["cpu"]
                    run["scores"].update(reply["scores"])
            log(f"    {bench} {set_name} repetition {rep + 1}/{args.repeats}: " + ", ".join(
                f"{impl} {n / runs[impl][rep]['seconds']:.2f}" for impl in impls) + " arch/s")
        peaks = {impl: p.ask({"cmd": "peaks"})["peaks"] for impl, p in procs.items()}
        base = runs["baseline"][0]["scores"]
        set_rows = []
        for impl in impls:  # the baseline first
            rate = [n / run["seconds"] for run in runs[impl]]
            cpu = [run["cpu"] / n for run in runs[impl]]
            set_rows.append({
                "bench": bench, "proxies": set_name, "impl": impl, "n": n,
                "arch_per_s": statistics.median(rate), "arch_per_s_reps": rate,
                "seconds": statistics.median(run["seconds"] for run in runs[impl]),
                "cpu_per_arch": statistics.median(cpu), "cpu_per_arch_reps": cpu,
                "peak_mb": sum(peaks[impl]), "peak_mb_processes": peaks[impl],
                "startup_s": ready[impl]["startup"],
                "n_unstable": _changed_between_runs(runs[impl]),
                **check_scores(runs[impl][0]["scores"], base, PROXY_SETS[set_name],
                               is_fast(impl), args.rtol)})
            r = set_rows[-1]
            log(f"  {bench:8s} {set_name:10s} {impl:11s} {r['arch_per_s']:7.3f} arch/s  "
                f"{spread(ratios(r, set_rows[0]))} baseline  cpu {r['cpu_per_arch']:.3f} s/arch  "
                f"peak {r['peak_mb']:.0f} MB  "
                f"{'OK' if r['ok'] and not r['n_unstable'] else 'FAILED'}: {check_text(r)}")
        rows += set_rows
        if bench == args.profile_bench and set_name == args.profile_set:
            for impl in _profiled(impls):
                profiles[impl] = procs[impl].ask(
                    {"cmd": "profile", "set": set_name, "indices": indices[:args.profile_n],
                     "top": args.profile_top})["text"]
    if "all" in sets:
        flops = procs["baseline"].ask({"cmd": "flops", "indices": indices})["flops"]
    forward = None
    if "naswot" in sets:
        # Last request: it sets the child's torch threads to 1.
        helper = "baseline-t1" if "baseline-t1" in procs else "baseline"
        forward = procs[helper].ask({"cmd": "naswot_forward", "indices": indices})["seconds"]
    for p in procs.values():
        p.ask({"cmd": "stop"})
        p.proc.wait()
    return {"bench": bench, "rows": rows, "profiles": profiles, "flops": flops,
            "naswot_forward": forward,
            "indices": indices, "startup": {k: v["startup"] for k, v in ready.items()}}


def _profiled(impls: Sequence[str]) -> list[str]:
    """Before (the 1-thread baseline if measured) and after (each in-process zcproxy
    configuration): profiling a pool's parent would only show it waiting."""
    before = "baseline-t1" if "baseline-t1" in impls else "baseline"
    return [before] + [impl for impl in ("ours-w1", "fast-w1") if impl in impls]


def _busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine_info() -> dict:
    import torch
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "python": platform.python_version(),
            "torch_threads_default": torch.get_num_threads(), "load_start": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def _describe(impl: str, workers: int, threads: int) -> str:
    """What one configuration is, for the report's legend."""
    name = impl.replace(f"-w{workers}", "-wN") if workers != 1 else impl
    return {
        "baseline": f"`benchmarks/reference.py`, one process, torch's default threads ({threads})",
        "baseline-t1": "`benchmarks/reference.py` with 1 thread",
        "ours-w1": "`zcproxy.runner.run_scoring`, exact arithmetic, 1 process × 1 thread",
        "ours-wN": f"`run_scoring`, exact, {workers} spawned worker processes × 1 thread",
        "fast-w1": "`run_scoring` on the fast path (`ScoringJob(exact=False)`: NASWOT in "
                   "bfloat16 channels-last, the Entropic Score in float32 channels-last, "
                   "LogSynflow's gradients in float32 channels-last, rescaled by powers of two "
                   "at each cell), 1 process × 1 thread",
        "fast-wN": f"the fast path, {workers} worker processes × 1 thread",
    }[name]


def _load_note(info: dict, args) -> tuple[str, bool]:
    """What the machine's other processes did during the run, and whether it was loaded."""
    other = info.get("other_cpu_cores")  # CPU used by processes outside the benchmark
    if other is None:
        return ("(Load averages include the benchmark's own processes and the minute before it "
                "started, so they say little about other jobs.)", False)
    if other > 0.25:
        return (f"**Other processes used {other:.2f} cores on average during the run**, so "
                "wall-clock numbers are pessimistic and noisy.  The configurations were "
                f"measured interleaved (blocks of {args.block} architectures in rotating "
                "order), so they saw the same load and their ratios are fair; CPU s/arch is "
                "the load-independent cost.", True)
    return (f"Processes outside the benchmark used {other:.2f} cores on average (all CPU time "
            "in /proc/stat minus the benchmark's own): the machine was otherwise idle.", False)


def _sss_floor(row: dict, label: str, cores: int, loaded: bool, workers: int) -> str:
    """Issue 16's NATS-sss floor projected from one pool configuration's "all" row."""
    need = SSS_TOTAL / (SSS_MINUTES * 60)
    minutes = sorted(SSS_TOTAL / rate / 60 for rate in arch_rates(row))
    wall = SSS_TOTAL / row["arch_per_s"] / 60
    rate_cpu = cores / row["cpu_per_arch"]
    used = row["cpu_per_arch"] * row["arch_per_s"]
    over = f" [{minutes[0]:.0f}–{minutes[-1]:.0f}]" if len(minutes) > 1 else ""
    return (
        f"- **{SSS_TOTAL:,} NATS-sss architectures × (NASWOT, LogSynflow, Entropic Score) in "
        f"≤ {SSS_MINUTES} min on 2 cores (≥ {need:.2f} arch/s), {label}: "
        f"{'met' if wall <= SSS_MINUTES else 'not met'}{' under this load' if loaded else ''}"
        f".**  `{row['impl']}` measured {row['arch_per_s']:.2f} arch/s wall clock (median) on "
        f"this sample → {wall:.0f} min projected{over} (the sample's architectures are not the "
        f"space's average, so only a full run decides).  Its CPU cost, "
        f"{row['cpu_per_arch']:.3f} CPU s/arch, projects to {rate_cpu:.2f} arch/s on {cores} "
        f"dedicated cores → {SSS_TOTAL / rate_cpu / 60:.0f} min.  It kept {used:.1f} cores busy "
        "on average (CPU s/arch × arch/s): "
        + ("the other jobs left it less than its cores." if used < 0.75 * workers
           else "it got its cores."))


def _twice_baseline(by: dict, bench: str, impl: str) -> tuple[str, bool, bool]:
    """Per proxy set, ``impl`` ÷ the default-thread baseline (median [min–max]); whether every
    set's median is ≥ 2×, and whether every repetition of every set is."""
    parts, medians, lows = [], [], []
    for s in PROXY_SETS:
        if (bench, s, impl) in by:
            values = ratios(by[(bench, s, impl)], by[(bench, s, "baseline")])
            parts.append(f"{s} {spread(values)}")
            medians.append(statistics.median(values))
            lows.append(min(values))
    return "; ".join(parts), min(medians) >= 2, min(lows) >= 2


def write_results(path: Path, info: dict, command: str, results: list[dict], rates: dict,
                  args) -> None:
    """The Markdown report; from a fresh measurement or a ``--json`` dump (``--report-from``),
    so everything it needs is in ``results`` and the dump's own arguments."""
    rows = [r for res in results for r in res["rows"]]
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    wn, fn = f"ours-w{args.workers}", f"fast-w{args.workers}"
    repeats = max(len(arch_rates(r)) for r in rows)
    by = {(r["bench"], r["proxies"], r["impl"]): r for r in rows}
    load_note, loaded = _load_note(info, args)
    lines = [
        "# Scoring throughput: zcproxy vs the reference-style baseline", "",
        "Generated by `benchmarks/bench_proxies.py` (see `benchmarks/README.md`).", "",
        "## Machine", "",
        f"- CPU: {info['cpu']}, {info['cores']} cores ({info['affinity']} usable); "
        f"torch {info['torch']} (default {info['torch_threads_default']} threads), "
        f"Python {info['python']}; {info['date']}.",
        f"- Load average at start: {', '.join(f'{x:.2f}' for x in info['load_start'])}; "
        f"at end: {', '.join(f'{x:.2f}' for x in info['load_end'])}.  " + load_note,
        f"- Single-thread matmul rate (2048², best of 5, per CPU second): float32 "
        f"{rates['float32'] / 1e9:.1f} GFLOP/s, float64 {rates['float64'] / 1e9:.1f} GFLOP/s "
        f"(per wall second: {rates['float32_wall'] / 1e9:.1f} / "
        f"{rates['float64_wall'] / 1e9:.1f}).", "",
        "## Command", "", f"```\n{command}\n```", "",
        "## Results", "",
        "Configurations: " + "; ".join(
            f"`{impl}` = {_describe(impl, args.workers, info['torch_threads_default'])}"
            for impl in impls) + ".  "
        f"Each benchmark and proxy set was measured {repeats} time(s), the configurations "
        "interleaved each time.  **arch/s**: wall clock over the sample, median over the "
        "repetitions.  **ratio**: arch/s ÷ the baseline's (default threads | 1 thread) within "
        "each repetition, median [min–max].  **CPU s/arch**: CPU time of every process of the "
        "configuration per architecture (median).  **peak MB**: peak RSS (VmHWM, reset before "
        "each proxy set) summed over the configuration's processes (for a pool: the parent + "
        "each worker; a process that has only imported torch is ~300 MB).  **scores**: exact "
        f"configurations compared with the baseline's (rtol {args.rtol:g}), with the count of "
        "bit-identical ones; fast ones by issue 16's fidelity gate (the same non-finite "
        "scores, Spearman ρ ≥ 0.9999 per proxy; the worst proxy's ρ and the largest relative "
        "difference shown).", "",
        "| bench | proxies | n | config | arch/s | ratio (default thr.) | ratio (1 thr.) "
        "| CPU s/arch | peak MB | scores |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        t1 = by.get((r["bench"], r["proxies"], "baseline-t1"))
        lines.append(f"| {r['bench']} | {r['proxies']} | {r['n']} | {r['impl']} | "
                     f"{r['arch_per_s']:.2f} | "
                     f"{spread(ratios(r, by[(r['bench'], r['proxies'], 'baseline')]))} | "
                     f"{spread(ratios(r, t1)) if t1 else '—'} | "
                     f"{r['cpu_per_arch']:.3f} | {r['peak_mb']:.0f} | {check_text(r)} |")
    lines += ["", "## The issue's floors", "",
              f"Issue 16: with the fast path, ≥ 2× the default-thread baseline on every "
              f"benchmark and proxy set, and all {SSS_TOTAL:,} NATS-sss architectures × the "
              f"three proxies in ≤ {SSS_MINUTES} min on 2 cores.  Ratios are medians over the "
              f"{repeats} repetition(s) [min–max].", ""]
    pools = [(impl, label) for impl, label in ((wn, "exact path"), (fn, "fast path"))
             if ("nats-sss", "all", impl) in by]
    for impl, label in pools:
        lines.append(_sss_floor(by[("nats-sss", "all", impl)], label, info["affinity"], loaded,
                                args.workers))
    if not pools:
        lines.append(f"- **{SSS_TOTAL:,} NATS-sss architectures in ≤ {SSS_MINUTES} min:** not "
                     "projected (it needs nats-sss, the proxy set `all`, and `ours-wN` or "
                     "`fast-wN`).")
    for bench in dict.fromkeys(r["bench"] for r in rows):
        if not any((bench, s, fn) in by for s in PROXY_SETS):
            lines.append(f"- **≥ 2× the default-thread baseline with the fast path, {bench}:** "
                         f"not measured (`fast-wN` was not among `--configs`).")
            continue
        parts, median_ok, every_ok = _twice_baseline(by, bench, fn)
        line = (f"- **≥ 2× the default-thread baseline with the fast path, {bench}: "
                f"{'yes' if median_ok else 'no'}** (`{fn}` ÷ `baseline`): {parts}.  Every "
                f"repetition of every proxy set ≥ 2×: {'yes' if every_ok else 'no'}.")
        if any((bench, s, wn) in by for s in PROXY_SETS):
            exact_parts, exact_ok, _ = _twice_baseline(by, bench, wn)
            line += (f"  The exact path, `{wn}`: {exact_parts} "
                     f"(≥ 2× on every set: {'yes' if exact_ok else 'no'}).")
        per_core = {s: by[(bench, s, "baseline-t1")]["cpu_per_arch"]
                    / by[(bench, s, fn)]["cpu_per_arch"]
                    for s in PROXY_SETS if (bench, s, fn) in by and (bench, s, "baseline-t1") in by}
        if per_core:
            line += (f"  Per core (baseline-t1 CPU s/arch ÷ `{fn}` CPU s/arch, independent of "
                     "the load): " + ", ".join(f"{s} {v:.2f}×" for s, v in per_core.items())
                     + f", so with {args.workers} dedicated cores `{fn}` ÷ baseline-t1 "
                       f"projects to ≥ {args.workers * min(per_core.values()):.1f}×.")
        lines.append(line)
    for res in results:
        seconds = res.get("naswot_forward")
        key = (res["bench"], "naswot", "baseline")
        if not seconds or key not in by:
            continue
        bare = sum(seconds) / len(seconds)
        ceiling = args.workers / bare / by[key]["arch_per_s"]
        measured = {impl: spread(ratios(by[(res["bench"], "naswot", impl)], by[key]))
                    for impl in (wn, fn) if (res["bench"], "naswot", impl) in by}
        lines.append(
            f"- **What exact arithmetic allows, {res['bench']} NASWOT (exact path only).**  The "
            f"bare train-mode float32 forward of the 64-image batch alone (no hooks, codes or "
            f"kernel; 1 thread, warm) takes {bare:.3f} s/arch on this sample.  Every exact "
            f"NASWOT has to run it, so {args.workers} single-thread workers reach at most "
            f"{args.workers / bare:.2f} arch/s = **{ceiling:.2f}× the default-thread baseline** "
            "even with zero overhead"
            + (f"; `{wn}` measured {measured[wn]}." if wn in measured else ".")
            + "  The fast path runs another forward (bfloat16, channels-last) and is not bound "
              "by it" + (f": `{fn}` measured {measured[fn]}." if fn in measured else "."))
    counted = [res for res in results if res["flops"]]  # only with the proxy set "all"
    lines += [] if not counted else ["", "## FLOP-bound floor", "",
              "FLOPs of the passes each proxy needs (`torch.utils.flop_counter` on the meta "
              "device: convolutions and linear layers; BN, activations, the NASWOT kernel and "
              "Python are extra), mean over the sampled architectures: NASWOT one float32 "
              "forward of 64 images, LogSynflow one float64 forward+backward of one image, the "
              "Entropic Score three float64 forwards of one image.  Divided by the single-thread "
              "matmul rate above, that is the time one core could not beat even at matmul speed "
              "with exact arithmetic; the last column is what each zcproxy configuration "
              "spends (CPU s/arch, all three proxies, all its processes) and its ratio to the "
              "floor.  The fast path's bfloat16 NASWOT and float32 LogSynflow and ES are not "
              "held to these rates, so it may go below the floor.", "",
              "| bench | NASWOT GFLOP (f32) | LogSynflow GFLOP (f64) | ES GFLOP (f64) "
              "| floor s/arch/core | floor arch/s on 2 cores | zcproxy CPU s/arch (÷ floor) |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for res in counted:
        bench = res["bench"]
        f = {k: sum(v) / len(v) for k, v in res["flops"].items()}
        floor = (f["naswot"] / rates["float32"]
                 + (f["logsynflow"] + f["entropic"]) / rates["float64"])
        ours = ", ".join(f"`{impl}` {by[(bench, 'all', impl)]['cpu_per_arch']:.3f} "
                         f"({by[(bench, 'all', impl)]['cpu_per_arch'] / floor:.1f}×)"
                         for impl in impls if not impl.startswith("baseline")
                         and (bench, "all", impl) in by)
        lines.append(f"| {bench} | {f['naswot'] / 1e9:.2f} | {f['logsynflow'] / 1e9:.3f} | "
                     f"{f['entropic'] / 1e9:.3f} | {floor:.3f} | {2 / floor:.1f} | {ours} |")
    titles = {"baseline": "before: the baseline (default threads)",
              "baseline-t1": "before: the baseline (1 thread)",
              "ours-w1": "after: ours, exact (in process, 1 thread)",
              "fast-w1": "after: ours, fast path (in process, 1 thread)"}
    for res in results:
        for impl, text in res["profiles"].items():
            lines += ["", f"## Profile {titles[impl]}", "",
                      f"{args.profile_bench}, {' + '.join(PROXY_SETS[args.profile_set])}, "
                      f"{args.profile_n} architectures, cProfile sorted by own time (profiling "
                      "inflates Python-level costs; the torch kernels are the built-in "
                      "method rows).", "", "```", _short_paths(text), "```"]
    path.write_text("\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_proxies.py",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benches", default="nats-sss,nats-tss,nb101",
                   help="comma-separated benchmarks (default all three)")
    p.add_argument("--sample", default="20,20,10",
                   help="architectures per benchmark, in --benches order (default 20,20,10)")
    p.add_argument("--proxy-sets", default=",".join(PROXY_SETS),
                   help=f"which of {', '.join(PROXY_SETS)} to measure (default all)")
    p.add_argument("--seed", type=int, default=0, help="sample and scoring seed (default 0)")
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help=f"comma-separated configurations out of {', '.join(CONFIGS)}; wN = "
                        f"--workers processes; the baseline is always measured (default "
                        f"{DEFAULT_CONFIGS})")
    p.add_argument("--workers", type=int, default=2,
                   help="processes of ours-wN and fast-wN (default 2)")
    p.add_argument("--repeats", type=int, default=3,
                   help="times the interleaved measurement of each benchmark and proxy set is "
                        "repeated; the report gives medians and min–max (default 3)")
    p.add_argument("--block", type=int, default=8,
                   help="architectures per interleaving block (default 8; the pool needs a few "
                        "per worker to stay busy)")
    p.add_argument("--rtol", type=float, default=1e-9,
                   help="relative tolerance of the exact configurations' score check "
                        "(default 1e-9; the fast ones are held to the fidelity gate)")
    p.add_argument("--profile-bench", default="nats-sss", help="benchmark to profile")
    p.add_argument("--profile-set", default="all", choices=list(PROXY_SETS),
                   help="proxy set to profile (default all)")
    p.add_argument("--profile-n", type=int, default=5, help="architectures profiled (default 5)")
    p.add_argument("--profile-top", type=int, default=15, help="profile lines (default 15)")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"), help="report to write")
    p.add_argument("--json", default=None, help="also dump every measurement as JSON here")
    p.add_argument("--report-from", default=None, metavar="JSON",
                   help="rewrite the report from a --json dump of an earlier run, without "
                        "measuring again")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    benches = [b.strip() for b in args.benches.split(",") if b.strip()]
    samples = [int(s) for s in args.sample.split(",")]
    if len(samples) == 1:
        samples *= len(benches)
    if len(samples) != len(benches):
        raise SystemExit(f"--sample gives {len(samples)} sizes for {len(benches)} benchmarks")
    sets = [s.strip() for s in args.proxy_sets.split(",") if s.strip()]
    unknown = set(sets) - set(PROXY_SETS)
    if unknown:
        raise SystemExit(f"unknown proxy set(s) {sorted(unknown)}; choose from {list(PROXY_SETS)}")
    config_names(args.configs, args.workers)  # refuse a typo before minutes of set-up
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    if args.report_from:
        dump = json.loads(Path(args.report_from).read_text())
        old = build_parser().parse_args(dump["argv"])
        old.out = args.out
        write_results(Path(args.out), dump["info"], dump["command"], dump["results"],
                      dump["rates"], old)
        print(f"wrote {args.out} from {args.report_from}")
        return 0
    info = machine_info()
    busy0, own0, wall0 = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))

    def log(text: str) -> None:
        print(text, flush=True)

    log(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_start']}")
    rates = matmul_rates()
    log(f"matmul float32 {rates['float32'] / 1e9:.1f} GFLOP/s per CPU-s, "
        f"float64 {rates['float64'] / 1e9:.1f}")
    # Smallest memory first: the peak of a set is then not the leftover of an earlier one.
    sets = sorted(sets, key=["logsynflow", "entropic", "naswot", "all"].index)
    results = [run_bench(bench, sets, n, args, env, log) for bench, n in zip(benches, samples)]
    info["load_end"] = os.getloadavg()
    if busy0 is not None:  # every child has been waited for, so its CPU is in os.times()
        other = (_busy_cpu_seconds() - busy0) - (_own_cpu_seconds() - own0)
        info["other_cpu_cores"] = max(0.0, other / (time.perf_counter() - wall0))
    command = "python benchmarks/bench_proxies.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    if args.json:  # first: a report that fails to render can be redone with --report-from
        Path(args.json).write_text(json.dumps(
            {"info": info, "rates": rates, "results": results, "command": command.strip(),
             "argv": list(sys.argv[1:] if argv is None else argv)}, indent=1, default=str))
    write_results(Path(args.out), info, command.strip(), results, rates, args)
    log(f"wrote {args.out}")
    bad = [r for res in results for r in res["rows"] if not r["ok"] or r["n_unstable"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
