"""How much does the channels-last pool of NATS-Bench's ``avg_pool_3x3`` save, and is it exact?

``zcproxy.nasbench.cells.ChannelsLastAvgPool2d`` pools a channels-last copy of its input on the
CPU, because PyTorch's NCHW kernel is slow on NATS-Bench's small feature maps.  The baseline is
the straightforward ``nn.AvgPool2d`` forward, measured in the same run, interleaved with ours
(the two alternate inside every repeat, so they see the same machine load):

* **op level**: the pool alone, forward and forward + backward, at the three NATS-tss map
  shapes (16x32x32, 32x16x16, 64x8x8) and the proxies' batch sizes (64; SWAP's 16), beside the
  3x3 convolution of the same batch for scale;
* **network level**: forward + backward (batch 64, what the gradient proxies do) and forward
  only (batch 16, what SWAP does 32 times) of NATS-tss networks that hold at least one pool,
  a seeded sample.

Every measurement also checks that outputs and gradients are bit-identical.  Writes
``benchmarks/POOLING.md`` (``--out``); 1 torch thread (``--threads``).

    python benchmarks/bench_pooling.py                 # ~2 min on an idle core
    python benchmarks/bench_pooling.py --networks 40 --repeats 7
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from zcproxy.nasbench import cells  # noqa: E402

SHAPES = ((16, 32, 32), (32, 16, 16), (64, 8, 8))


def _seconds(fn: Callable[[], object], loops: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - start) / loops


def _plain(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return nn.AvgPool2d.forward(module, x)


def _pass(module: nn.Module, x: torch.Tensor, backward: bool, plain: bool = False):
    def run():
        if backward:
            x.grad = None
        out = _plain(module, x) if plain else module(x)
        if backward:
            out.pow(2).sum().backward()
            return out.detach(), x.grad.clone()
        return out, None
    return run


def op_rows(batches: Sequence[int], repeats: int, loops: int) -> list[dict]:
    """The pool alone, ours against nn.AvgPool2d, and a 3x3 convolution for scale."""
    pool = cells.ChannelsLastAvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for batch in batches:
        for c, h, w in SHAPES:
            conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
            for backward in (False, True):
                x = torch.randn(batch, c, h, w, generator=gen).requires_grad_(backward)
                ours, base = _pass(pool, x, backward), _pass(pool, x, backward, plain=True)
                conv_pass = _pass(conv, x, backward)
                same = all(a is None or torch.equal(a, b) for a, b in zip(ours(), base()))
                t_ours, t_base, t_conv = [], [], []
                with torch.set_grad_enabled(backward):
                    for _ in range(repeats):
                        t_base.append(_seconds(base, loops))
                        t_ours.append(_seconds(ours, loops))
                        t_conv.append(_seconds(conv_pass, loops))
                rows.append({"what": f"{batch}x{c}x{h}x{w}", "pass": "fwd+bwd" if backward
                             else "fwd", "base_ms": 1e3 * statistics.median(t_base),
                             "ours_ms": 1e3 * statistics.median(t_ours),
                             "conv_ms": 1e3 * statistics.median(t_conv),
                             "ratios": [b / o for b, o in zip(t_base, t_ours)], "same": same})
    return rows


def network_rows(count: int, repeats: int, seed: int) -> list[dict]:
    """Whole NATS-tss networks with pools: forward+backward at 64, forward at 16."""
    rng = np.random.default_rng(seed)
    archs: list[str] = []
    while len(archs) < count:
        ops = rng.choice(cells.OP_NAMES, size=6)
        if "avg_pool_3x3" in ops:
            archs.append("|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops))
    x64 = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    rows = []
    for label, batch, backward in (("fwd+bwd, batch 64", 64, True), ("fwd, batch 16", 16, False)):
        x = x64[:batch]
        nets = []
        for i, arch in enumerate(archs):
            torch.manual_seed(seed + i)
            nets.append(cells.tss_network(arch, 10).train())

        def run(plain: bool) -> tuple[float, list]:
            forward = cells.ChannelsLastAvgPool2d.forward
            if plain:
                cells.ChannelsLastAvgPool2d.forward = nn.AvgPool2d.forward
            try:
                results = []
                start = time.perf_counter()
                for net in nets:
                    net.zero_grad()
                    with torch.set_grad_enabled(backward):
                        logits = net(x)[1]
                    if backward:
                        logits.sum().backward()
                        results.append([p.grad.clone() for p in net.parameters()
                                        if p.grad is not None])
                    results.append([logits.detach()])
                return time.perf_counter() - start, results
            finally:
                cells.ChannelsLastAvgPool2d.forward = forward

        t_base, t_ours, same = [], [], True
        for _ in range(repeats):
            tb, base = run(True)
            to, ours = run(False)
            t_base.append(tb)
            t_ours.append(to)
            same = same and all(torch.equal(a, b) for ra, rb in zip(ours, base)
                                for a, b in zip(ra, rb))
        rows.append({"what": f"{count} networks", "pass": label,
                     "base_ms": 1e3 * statistics.median(t_base) / count,
                     "ours_ms": 1e3 * statistics.median(t_ours) / count, "conv_ms": float("nan"),
                     "ratios": [b / o for b, o in zip(t_base, t_ours)], "same": same})
    return rows


def markdown(op: list[dict], net: list[dict], args, load: tuple[float, float]) -> str:
    def table(rows: list[dict], conv: bool) -> list[str]:
        head = "| shape | pass | nn.AvgPool2d ms | channels-last ms | speed-up [min–max] |"
        head += " 3x3 conv ms |" if conv else ""
        lines = [head + " bit-identical |", "|" + "---|" * (7 if conv else 6)]
        for r in rows:
            ratio = (f"{statistics.median(r['ratios']):.2f}× [{min(r['ratios']):.2f}–"
                     f"{max(r['ratios']):.2f}]")
            lines.append(f"| {r['what']} | {r['pass']} | {r['base_ms']:.2f} | {r['ours_ms']:.2f} "
                         f"| {ratio} |" + (f" {r['conv_ms']:.2f} |" if conv else "")
                         + f" {'yes' if r['same'] else '**NO**'} |")
        return lines

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    return "\n".join([
        "# The channels-last pool of `avg_pool_3x3` (`benchmarks/bench_pooling.py`)", "",
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {cpu}, {os.cpu_count()} cores; torch "
        f"{torch.__version__}, {args.threads} thread(s); load average {load[0]:.2f} at the start, "
        f"{load[1]:.2f} at the end (other jobs included: the baseline and ours alternate inside "
        f"every repeat, so their ratio is fair). Median of {args.repeats} repeats; the "
        "speed-up is nn.AvgPool2d's time over ours, with its min–max over the repeats.", "",
        "## The pool alone", ""] + table(op, True) + [
        "", f"## Whole NATS-tss networks with at least one pool (seed {args.seed}), ms per "
        "network", ""] + table(net, False) + [""])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--networks", type=int, default=20, help="NATS-tss networks (default 20)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    p.add_argument("--loops", type=int, default=20, help="calls per op timing (default 20)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the networks (default 0)")
    p.add_argument("--out", default=str(HERE / "POOLING.md"), help="report (default "
                   "benchmarks/POOLING.md)")
    args = p.parse_args(argv)
    if min(args.networks, args.repeats, args.loops, args.threads) < 1:
        p.error("--networks, --repeats, --loops and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    start_load = os.getloadavg()[0]
    print("timing the pool alone ...", flush=True)
    op = op_rows((64, 16), args.repeats, args.loops)
    print(f"timing {args.networks} networks ...", flush=True)
    net = network_rows(args.networks, args.repeats, args.seed)
    text = markdown(op, net, args, (start_load, os.getloadavg()[0]))
    from zcproxy.atomic import write_text
    write_text(Path(args.out), text)
    print(text)
    return 0 if all(r["same"] for r in op + net) else 1


if __name__ == "__main__":
    raise SystemExit(main())
