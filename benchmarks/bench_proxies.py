"""How fast does zcproxy score architectures, against the reference-style baseline?

For NATS-sss, NATS-tss and NAS-Bench-101 samples and each proxy set (NASWOT, LogSynflow,
Entropic Score, and all three together) three configurations score the same architectures:

* ``baseline``: ``benchmarks/reference.py``, the original code's way (a fresh network per
  proxy, deep copies, float32 matmul kernel for NASWOT), one process, torch's default threads;
* ``ours-w1``: ``zcproxy.runner.run_scoring`` in one process with 1 torch thread;
* ``ours-wN``: the same with ``--workers`` spawned processes, 1 thread each.

Each configuration lives in its own long-running child process (set up before any timing:
imports, benchmark tables, CIFAR batch, worker pool), and the parent hands the children the
sample block by block in rotating order, so that all three are measured in the same minutes of
a possibly loaded machine.  Per configuration it reports architectures per second (wall clock),
CPU seconds per architecture (all processes of the configuration; the load-independent cost),
peak RSS (``VmHWM`` of every process of the configuration, summed), and checks that every
score equals the baseline's (``--rtol``, default 1e-9).  It also times a large float32/float64
matmul to get the machine's FLOP rate per core, counts the FLOPs each proxy needs
(``torch.utils.flop_counter`` on the meta device, every sampled architecture) and reports the
FLOP-bound floor, and profiles one proxy set (cProfile) before (baseline) and after (ours).
Writes ``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
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

    def __init__(self, impl: str, bench: str, sets: Sequence[str], sample: int, seed: int,
                 workers: int):
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
            from zcproxy.runner import ScoringJob
            # One job with every proxy: the same workers then serve each proxy set.
            self.job = ScoringJob(bench=bench, proxies=self.all_proxies, seed=seed, threads=1)
            self.executor = (InProcessExecutor() if impl == "ours-w1"
                             else ProcessPoolExecutor(workers, threads=1))
            self.executor.start(self.job)
            if impl != "ours-w1":
                self.pool_pids = list(self.executor._pool._processes)
            self.folder = Path(tempfile.mkdtemp(prefix="zcbench-"))
        self.startup = time.perf_counter() - start

    def cpu(self) -> float:
        return _proc_stat()[0] + sum(_proc_stat(p)[0] for p in self.pool_pids)

    def score(self, set_name: str, indices: list[int]) -> dict:
        cpu0, wall0 = self.cpu(), time.perf_counter()
        scores = self._score(set_name, indices)
        return {"seconds": time.perf_counter() - wall0, "cpu": self.cpu() - cpu0,
                "scores": scores}

    def _score(self, set_name: str, indices: list[int]) -> dict:
        proxies = PROXY_SETS[set_name]
        if self.impl.startswith("baseline"):
            return {str(i): self.scorer.score(i, proxies) for i in indices}
        import dataclasses

        from zcproxy.runner import run_scoring
        job = dataclasses.replace(self.job, proxies=proxies)
        frame = run_scoring(job, indices, self.folder / f"journal-{set_name}.csv",
                            progress=False, executor=self.executor)
        frame = frame[frame["index"].isin(indices)]
        out: dict = {}
        for index, proxy, score, error in frame[["index", "proxy", "score", "error"]].itertuples(
                index=False):
            if isinstance(error, str) and error and "non-finite" not in error:
                raise RuntimeError(f"{self.impl}: arch {index} {proxy}: {error}")
            out.setdefault(str(index), {})[proxy] = float(score)
        return out

    def profile(self, set_name: str, indices: list[int], top: int) -> str:
        if not self.impl.startswith("baseline"):
            self.folder = Path(tempfile.mkdtemp(prefix="zcbench-"))  # score them afresh
        prof = cProfile.Profile()
        prof.enable()
        self._score(set_name, indices)
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
            _send(child.score(request["set"], request["indices"]))
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


def _close(a: float, b: float, rtol: float) -> bool:
    if a == b:
        return True
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def run_bench(bench: str, sets: Sequence[str], sample: int, args, env: dict, log) -> dict:
    """All configurations of one benchmark: one child each, every proxy set in turn (smallest
    memory first, so the RSS high-water mark, reset between sets, is that set's), blocks of
    the sample handed to the children in rotating order."""
    impls = ["baseline", "baseline-t1", "ours-w1", f"ours-w{args.workers}"]
    procs = {impl: _Proc({"impl": impl, "bench": bench, "sets": list(sets), "sample": sample,
                          "seed": args.seed, "workers": args.workers}, env)
             for impl in impls}
    ready = {impl: p.ask() for impl, p in procs.items()}
    indices = ready["baseline"]["indices"]
    blocks = [indices[i:i + args.block] for i in range(0, len(indices), args.block)]
    rows, profiles, flops = [], {}, None
    for set_name in sets:
        totals = {impl: {"seconds": 0.0, "cpu": 0.0, "scores": {}} for impl in impls}
        for p in procs.values():
            p.ask({"cmd": "reset_peaks"})
        for b, block in enumerate(blocks):
            shift = b % len(impls)
            for impl in impls[shift:] + impls[:shift]:  # rotate who goes first
                reply = procs[impl].ask({"cmd": "score", "set": set_name, "indices": block})
                totals[impl]["seconds"] += reply["seconds"]
                totals[impl]["cpu"] += reply["cpu"]
                totals[impl]["scores"].update(reply["scores"])
        peaks = {impl: p.ask({"cmd": "peaks"})["peaks"] for impl, p in procs.items()}
        base = totals["baseline"]["scores"]
        for impl in impls:
            t = totals[impl]
            pairs = [(i, p, base[i][p], v) for i, d in t["scores"].items() for p, v in d.items()]
            mismatches = [x for x in pairs if not _close(x[2], x[3], args.rtol)]
            exact = sum(a == v for _, _, a, v in pairs)
            rows.append({"bench": bench, "proxies": set_name, "impl": impl, "n": len(indices),
                         "arch_per_s": len(indices) / t["seconds"], "seconds": t["seconds"],
                         "cpu_per_arch": t["cpu"] / len(indices),
                         "peak_mb": sum(peaks[impl]), "peak_mb_processes": peaks[impl],
                         "startup_s": ready[impl]["startup"], "scores": len(pairs),
                         "exact": exact, "mismatches": mismatches[:3],
                         "n_mismatch": len(mismatches)})
            r = rows[-1]
            log(f"  {bench:8s} {set_name:10s} {impl:11s} {r['arch_per_s']:7.3f} arch/s  "
                f"cpu {r['cpu_per_arch']:.3f} s/arch  peak {r['peak_mb']:.0f} MB  "
                f"{'OK' if not mismatches else f'{len(mismatches)} MISMATCHES'} "
                f"({exact}/{len(pairs)} bit-identical)")
        if bench == args.profile_bench and set_name == args.profile_set:
            for impl in ("baseline-t1", "ours-w1"):
                profiles[impl] = procs[impl].ask(
                    {"cmd": "profile", "set": set_name, "indices": indices[:args.profile_n],
                     "top": args.profile_top})["text"]
    if "all" in sets:
        flops = procs["baseline"].ask({"cmd": "flops", "indices": indices})["flops"]
    forward = None
    if "naswot" in sets:
        forward = procs["ours-w1"].ask({"cmd": "naswot_forward", "indices": indices})["seconds"]
    for p in procs.values():
        p.ask({"cmd": "stop"})
        p.proc.wait()
    return {"bench": bench, "rows": rows, "profiles": profiles, "flops": flops,
            "naswot_forward": forward,
            "indices": indices, "startup": {k: v["startup"] for k, v in ready.items()}}


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


def write_results(path: Path, info: dict, command: str, results: list[dict], rates: dict,
                  args) -> None:
    rows = [r for res in results for r in res["rows"]]
    wn = f"ours-w{args.workers}"
    by = {(r["bench"], r["proxies"], r["impl"]): r for r in rows}
    other = info.get("other_cpu_cores")  # CPU used by processes outside the benchmark
    loaded = other is not None and other > 0.25
    if other is None:
        load_note = ("(Load averages include the benchmark's own processes and the minute "
                     "before it started, so they say little about other jobs.)")
    elif loaded:
        load_note = (f"**Other processes used {other:.2f} cores on average during the run**, "
                     "so wall-clock numbers are pessimistic and noisy.  The configurations "
                     f"were measured interleaved (blocks of {args.block} architectures in "
                     "rotating order), so they saw the same load and their ratios are fair; "
                     "CPU s/arch is the load-independent cost.")
    else:
        load_note = (f"Processes outside the benchmark used {other:.2f} cores on average "
                     "(all CPU time in /proc/stat minus the benchmark's own): the machine was "
                     "otherwise idle.")
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
        "Configurations: `baseline` = `benchmarks/reference.py`, one process, torch's default "
        f"threads ({info['torch_threads_default']}); `baseline-t1` = the same with 1 thread; "
        f"`ours-w1` = `zcproxy.runner.run_scoring`, 1 process × 1 thread; `{wn}` = "
        f"{args.workers} spawned worker processes × 1 thread.  **arch/s**: wall clock over the "
        "sample.  **ratio**: arch/s ÷ the baseline's (default threads | 1 thread).  "
        "**CPU s/arch**: CPU time of every process of the configuration per architecture.  "
        "**peak MB**: peak RSS (VmHWM, reset before each proxy set) summed over the "
        "configuration's processes (for a pool: the parent + each worker; a process that has "
        "only imported torch is ~300 MB).  **scores**: every score compared with the "
        f"baseline's (rtol {args.rtol:g}), with the count of bit-identical ones.", "",
        "| bench | proxies | n | config | arch/s | ratio (default thr.) | ratio (1 thr.) "
        "| CPU s/arch | peak MB | scores |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        base = by[(r["bench"], r["proxies"], "baseline")]
        t1 = by[(r["bench"], r["proxies"], "baseline-t1")]
        check = ("reference" if r["impl"] == "baseline" else
                 f"equal ({r['exact']}/{r['scores']} bit-identical)" if not r["n_mismatch"]
                 else f"**{r['n_mismatch']} differ**: {r['mismatches']}")
        lines.append(f"| {r['bench']} | {r['proxies']} | {r['n']} | {r['impl']} | "
                     f"{r['arch_per_s']:.2f} | {r['arch_per_s'] / base['arch_per_s']:.2f}× | "
                     f"{r['arch_per_s'] / t1['arch_per_s']:.2f}× | "
                     f"{r['cpu_per_arch']:.3f} | {r['peak_mb']:.0f} | {check} |")
    lines += ["", "## The issue's floors", ""]
    sss = by.get(("nats-sss", "all", wn))
    if sss:
        cores = info["affinity"]
        need = SSS_TOTAL / 5400
        wall_min = SSS_TOTAL / sss["arch_per_s"] / 60
        rate_cpu = cores / sss["cpu_per_arch"]
        cpu_min = SSS_TOTAL / rate_cpu / 60
        lines += [
            f"- **{SSS_TOTAL:,} NATS-sss architectures × (NASWOT, LogSynflow, Entropic Score) "
            f"in < 90 min on 2 cores (≥ {need:.2f} arch/s).**  `{wn}` measured "
            f"{sss['arch_per_s']:.2f} arch/s wall clock on this sample → "
            f"{wall_min:.0f} min projected ({'met' if wall_min <= 90 else 'not met'}"
            f"{' under this load' if loaded else ''}; the sample's architectures are not the "
            f"space's average, so only a full run decides).  Its CPU cost, "
            f"{sss['cpu_per_arch']:.3f} CPU s/arch, projects to "
            f"{rate_cpu:.2f} arch/s on {cores} dedicated cores → {cpu_min:.0f} min."]
    if sss:
        used = sss["cpu_per_arch"] * sss["arch_per_s"]
        lines.append(f"- `{wn}` kept {used:.1f} cores busy on average on nats-sss (CPU s/arch × "
                     "arch/s): " + ("the other jobs left it about one core, which is why its "
                                    "wall-clock rate is close to `ours-w1`'s here."
                                    if used < 0.75 * args.workers else "it got its cores."))
    for bench in dict.fromkeys(r["bench"] for r in rows):
        parts = []
        for s in PROXY_SETS:
            if (bench, s, wn) in by:
                ours = by[(bench, s, wn)]["arch_per_s"]
                parts.append(f"{s} {ours / by[(bench, s, 'baseline')]['arch_per_s']:.1f}× | "
                             f"{ours / by[(bench, s, 'baseline-t1')]['arch_per_s']:.1f}×")
        low_default = min(by[(bench, s, wn)]["arch_per_s"] / by[(bench, s, "baseline")]["arch_per_s"]
                          for s in PROXY_SETS if (bench, s, wn) in by)
        low_t1 = min(by[(bench, s, wn)]["arch_per_s"] / by[(bench, s, "baseline-t1")]["arch_per_s"]
                     for s in PROXY_SETS if (bench, s, wn) in by)
        per_core = {s: by[(bench, s, "baseline-t1")]["cpu_per_arch"] / by[(bench, s, wn)]["cpu_per_arch"]
                    for s in PROXY_SETS if (bench, s, wn) in by}
        projected = min(args.workers * v for v in per_core.values())
        lines.append(f"- **≥ 2× the baseline's throughput, {bench}** (measured `{wn}` ÷ baseline, "
                     f"default threads | 1 thread): {'; '.join(parts)}.  ≥ 2× on every proxy "
                     f"set: vs the default-thread baseline **{'yes' if low_default >= 2 else 'no'}**"
                     f", vs the 1-thread baseline **{'yes' if low_t1 >= 2 else 'no'}** as measured."
                     f"  Per core (baseline-t1 CPU s/arch ÷ `{wn}` CPU s/arch): "
                     + ", ".join(f"{s} {v:.2f}×" for s, v in per_core.items())
                     + f", so with {args.workers} dedicated cores `{wn}` ÷ baseline-t1 projects to "
                       f"≥ {projected:.1f}× ({'yes' if projected >= 2 else 'no'}).")
    for res in results:
        seconds = res.get("naswot_forward")
        key = (res["bench"], "naswot", "baseline")
        if not seconds or key not in by:
            continue
        bare = sum(seconds) / len(seconds)
        ceiling = args.workers / bare / by[key]["arch_per_s"]
        lines.append(
            f"- **What exact arithmetic allows, {res['bench']} NASWOT.**  The bare train-mode "
            f"forward of the 64-image batch alone (no hooks, codes or kernel; 1 thread, warm) "
            f"takes {bare:.3f} s/arch on this sample.  Every exact NASWOT has to run it, so "
            f"{args.workers} single-thread workers reach at most {args.workers / bare:.2f} "
            f"arch/s = **{ceiling:.2f}× the default-thread baseline** even with zero "
            f"overhead; measured: {by[(res['bench'], 'naswot', wn)]['arch_per_s'] / by[key]['arch_per_s']:.2f}×.")
    lines += ["", "## FLOP-bound floor", "",
              "FLOPs of the passes each proxy needs (`torch.utils.flop_counter` on the meta "
              "device: convolutions and linear layers; BN, activations, the NASWOT kernel and "
              "Python are extra), mean over the sampled architectures: NASWOT one float32 "
              "forward of 64 images, LogSynflow one float64 forward+backward of one image, the "
              "Entropic Score three float64 forwards of one image.  Divided by the single-thread "
              "matmul rate above, that is the time one core could not beat even at matmul speed; "
              "`ours-w1` CPU s/arch (all three proxies) is what one core spends.", "",
              "| bench | NASWOT GFLOP (f32) | LogSynflow GFLOP (f64) | ES GFLOP (f64) "
              "| floor s/arch/core | floor arch/s on 2 cores | ours-w1 CPU s/arch | ours ÷ floor |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        if not res["flops"]:
            continue
        bench = res["bench"]
        f = {k: sum(v) / len(v) for k, v in res["flops"].items()}
        floor = f["naswot"] / rates["float32"] + (f["logsynflow"] + f["entropic"]) / rates["float64"]
        ours = by[(bench, "all", "ours-w1")]["cpu_per_arch"]
        lines.append(f"| {bench} | {f['naswot'] / 1e9:.2f} | {f['logsynflow'] / 1e9:.3f} | "
                     f"{f['entropic'] / 1e9:.3f} | {floor:.3f} | {2 / floor:.1f} | {ours:.3f} | "
                     f"{ours / floor:.1f}× |")
    for res in results:
        for impl, text in res["profiles"].items():
            title = ("before: the baseline (1 thread)" if impl.startswith("baseline")
                     else "after: ours (in process, 1 thread)")
            lines += ["", f"## Profile {title}", "",
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
    p.add_argument("--workers", type=int, default=2, help="processes of ours-wN (default 2)")
    p.add_argument("--block", type=int, default=8,
                   help="architectures per interleaving block (default 8; the pool needs a few "
                        "per worker to stay busy)")
    p.add_argument("--rtol", type=float, default=1e-9,
                   help="relative tolerance of the score check (default 1e-9)")
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
    write_results(Path(args.out), info, command.strip(), results, rates, args)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"info": info, "rates": rates, "results": results, "command": command.strip(),
             "argv": list(sys.argv[1:] if argv is None else argv)}, indent=1, default=str))
    log(f"wrote {args.out}")
    bad = [r for res in results for r in res["rows"] if r["n_mismatch"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
