"""What does the mutation check after every proxy cost, next to what it guards?

``zcproxy.context.ModelFingerprint`` is taken before the proxies run and compared after each
one, so that a proxy that writes into the user's model is named instead of silently spoiling
the next proxy's score.  It reads the metadata of every module and tensor and, of the values,
at most 4,096 evenly spaced samples per tensor.  Two references are measured in the same run,
interleaved with the check so that both see the same machine load:

* **a batch-1 forward** of the network (``torch.no_grad``), the cheapest thing any proxy does
  to it: the check should cost less;
* **a full-read check** (the float64 sum and sum of absolute values of every value of every
  parameter and buffer), the straightforward way to catch a write through ``.data``: the
  sampled check should cost far less on a large network.

Networks: NATS-Bench topology cell 8177 (~0.4 M parameters), a NAS-Bench-101 cell with
maxpools (its data folder is needed; skipped without it) and torchvision's ResNet-18 (11.7 M).
Writes ``benchmarks/FINGERPRINT.md`` (``--out``); 1 torch thread (``--threads``).

    python benchmarks/bench_fingerprint.py            # ~1 min
    python benchmarks/bench_fingerprint.py --repeats 21
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from zcproxy.context import ModelFingerprint  # noqa: E402


def full_read(model: nn.Module) -> list[float]:
    """The straightforward baseline: every value of every tensor, summed in float64."""
    with torch.no_grad():
        return [v for t in list(model.parameters()) + list(model.buffers())
                for v in (t.sum(dtype=torch.float64).item(),
                          t.abs().sum(dtype=torch.float64).item())]


def best_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Each function once per repeat, in rotating order (same load for all), best of 3 calls."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            calls = []
            for _ in range(3):
                start = time.perf_counter()
                fns[name]()
                calls.append(time.perf_counter() - start)
            times[name].append(min(calls))
    return times


def networks() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    from zcproxy.nasbench import get_benchmark
    import torchvision
    nets = [("NATS-tss 8177", get_benchmark("nats-tss").build(8177), (3, 32, 32))]
    try:
        nb101 = get_benchmark("nb101")
        nets.append(("NB101 cell 0 (sample seed 0)",
                     nb101.build(int(nb101.sample(1, seed=0)[0])), (3, 32, 32)))
    except Exception as error:  # no NB101 data: the other rows still say what the check costs
        print(f"NAS-Bench-101 left out: {error}", flush=True)
    nets.append(("ResNet-18 (torchvision)", torchvision.models.resnet18(), (3, 224, 224)))
    return nets


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--repeats", type=int, default=9, help="interleaved repeats (default 9)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", default=str(HERE / "FINGERPRINT.md"),
                   help="report (default benchmarks/FINGERPRINT.md)")
    args = p.parse_args(argv)
    if min(args.repeats, args.threads) < 1:
        p.error("--repeats and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    load = [os.getloadavg()[0]]
    rows, ok = [], True
    for name, model, shape in networks():
        model.eval()
        x = torch.randn(1, *shape)
        fingerprint = ModelFingerprint(model)
        ok &= fingerprint.changes(model) == []

        def forward(model=model, x=x):
            with torch.no_grad():
                model(x)
        print(f"timing {name} ...", flush=True)
        t = best_times({"check": lambda m=model, f=fingerprint: f.changes(m),
                        "forward": forward, "full read": lambda m=model: full_read(m)},
                       args.repeats)
        med = {k: statistics.median(v) for k, v in t.items()}
        ratio = [c / f for c, f in zip(t["check"], t["forward"])]
        speedup = [r / c for r, c in zip(t["full read"], t["check"])]
        params = sum(q.numel() for q in model.parameters())
        rows.append(f"| {name} | {params / 1e6:.2f} M | {med['check'] * 1e3:.2f} | "
                    f"{med['forward'] * 1e3:.2f} | {statistics.median(ratio):.2f} "
                    f"[{min(ratio):.2f}–{max(ratio):.2f}] | {med['full read'] * 1e3:.2f} | "
                    f"{statistics.median(speedup):.1f}× [{min(speedup):.1f}–{max(speedup):.1f}] |")
    load.append(os.getloadavg()[0])
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    text = "\n".join([
        "# The mutation check after every proxy (`benchmarks/bench_fingerprint.py`)", "",
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {cpu}, {os.cpu_count()} cores; torch "
        f"{torch.__version__}, {args.threads} thread(s); load average {load[0]:.2f} at the "
        f"start, {load[1]:.2f} at the end.  Median of {args.repeats} interleaved repeats (each "
        "the best of 3 calls), ms; ratios with their min–max over the repeats.  A check that "
        "found a change where there was none would fail the run.", "",
        "| network | parameters | check | batch-1 forward | check / forward | full read | "
        "full read / check |", "|---|---|---|---|---|---|---|", *rows, ""])
    from zcproxy.atomic import write_text
    write_text(Path(args.out), text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
