"""How much do the channels-last pools of the benchmark networks save, and are they exact?

``zcproxy.nasbench.pooling`` pools a channels-last copy of the input on the CPU, because
PyTorch's NCHW kernels are slow: ``ChannelsLastAvgPool2d`` is NATS-Bench's ``avg_pool_3x3``,
``ChannelsLastMaxPool2d`` NAS-Bench-101's ``maxpool3x3`` and 2x2 downsampling (forward only
when no gradient flows; otherwise it is ``nn.MaxPool2d``).  The baseline is the torch layer's
own forward, measured in the same run, interleaved with ours (the two alternate inside every
repeat, so they see the same machine load):

* **op level**: the pool alone at the benchmark's map shapes (NATS-tss 16x32x32, 32x16x16,
  64x8x8, forward and forward + backward; NAS-Bench-101 128x32x32, 256x16x16, 512x8x8, forward)
  and the proxies' batch sizes (64; SWAP's 16), beside the 3x3 convolution of the same batch
  for scale;
* **network level**: for NATS-tss, forward + backward (batch 64, what the gradient proxies do)
  and forward only (batch 16, what SWAP does 32 times) of networks that hold at least one pool,
  a seeded sample; for NAS-Bench-101 (its data folder is needed), the forward at batch 16 of
  sampled cells with a ``maxpool3x3``.

Every measurement also checks that outputs and gradients are bit-identical.  Writes
``benchmarks/POOLING.md`` (``--out``); 1 torch thread (``--threads``).

    python benchmarks/bench_pooling.py                 # ~5 min on an idle core
    python benchmarks/bench_pooling.py --networks 40 --repeats 7
    python benchmarks/bench_pooling.py --pools avg     # NATS-Bench's pool only
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

from zcproxy.nasbench import cells, pooling  # noqa: E402

NATS_SHAPES = ((16, 32, 32), (32, 16, 16), (64, 8, 8))
NB101_SHAPES = ((128, 32, 32), (256, 16, 16), (512, 8, 8))


def _seconds(fn: Callable[[], object], loops: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - start) / loops


def _pass(module: nn.Module, x: torch.Tensor, backward: bool, plain: Callable | None = None):
    """One timed call: ``module``'s forward (``plain``: the torch layer's forward instead)."""
    def run():
        if backward:
            x.grad = None
        out = plain(module, x) if plain is not None else module(x)
        if backward:
            out.pow(2).sum().backward()
            return out.detach(), x.grad.clone()
        return out, None
    return run


def op_rows(pool: nn.Module, plain: Callable, shapes: Sequence[tuple[int, int, int]],
            batches: Sequence[int], passes: Sequence[bool], repeats: int,
            loops: int) -> list[dict]:
    """The pool alone, ours against the torch layer's forward, and a 3x3 convolution for
    scale; ``passes`` says which of forward (False) and forward + backward (True) to time."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    for batch in batches:
        for c, h, w in shapes:
            conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
            for backward in passes:
                x = torch.randn(batch, c, h, w, generator=gen).requires_grad_(backward)
                ours, base = _pass(pool, x, backward), _pass(pool, x, backward, plain)
                conv_pass = _pass(conv, x, backward)
                with torch.set_grad_enabled(backward):
                    same = all(a is None or torch.equal(a, b) for a, b in zip(ours(), base()))
                    t_ours, t_base, t_conv = [], [], []
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


def interleaved(nets: Sequence[nn.Module], x: torch.Tensor, backward: bool, layer: type,
                plain: Callable, repeats: int, label: str) -> dict:
    """Whole networks, ours against the same networks with ``layer.forward`` set to the torch
    layer's (``plain``), alternating inside every repeat; outputs and gradients compared."""
    def run(use_plain: bool) -> tuple[float, list]:
        forward = layer.forward
        if use_plain:
            layer.forward = plain
        try:
            results = []
            start = time.perf_counter()
            for net in nets:
                net.zero_grad()
                with torch.set_grad_enabled(backward):
                    out = net(x)
                    logits = out[1] if isinstance(out, tuple) else out
                if backward:
                    logits.sum().backward()
                    results.append([p.grad.clone() for p in net.parameters()
                                    if p.grad is not None])
                results.append([logits.detach()])
            return time.perf_counter() - start, results
        finally:
            layer.forward = forward

    t_base, t_ours, same = [], [], True
    for _ in range(repeats):
        tb, base = run(True)
        to, ours = run(False)
        t_base.append(tb)
        t_ours.append(to)
        same = same and all(torch.equal(a, b) for ra, rb in zip(ours, base)
                            for a, b in zip(ra, rb))
    return {"what": f"{len(nets)} networks", "pass": label,
            "base_ms": 1e3 * statistics.median(t_base) / len(nets),
            "ours_ms": 1e3 * statistics.median(t_ours) / len(nets), "conv_ms": float("nan"),
            "ratios": [b / o for b, o in zip(t_base, t_ours)], "same": same}


def nats_network_rows(count: int, repeats: int, seed: int) -> list[dict]:
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
        nets = []
        for i, arch in enumerate(archs):
            torch.manual_seed(seed + i)
            nets.append(cells.tss_network(arch, 10).train())
        rows.append(interleaved(nets, x64[:batch], backward, pooling.ChannelsLastAvgPool2d,
                                nn.AvgPool2d.forward, repeats, label))
    return rows


def nb101_network_rows(count: int, repeats: int, seed: int) -> list[dict]:
    """Sampled NAS-Bench-101 cells with a ``maxpool3x3`` op: forward at batch 16 (SWAP's), the
    pass the channels-last max-pool speeds up."""
    from zcproxy.nasbench import get_benchmark
    bench = get_benchmark("nb101")
    picked = [i for i in bench.sample(20 * count, seed=seed) if "maxpool3x3" in bench.arch(i)]
    nets = []
    for i, index in enumerate(picked[:count]):
        torch.manual_seed(seed + i)
        nets.append(bench.build(index).train())
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return [interleaved(nets, x, False, pooling.ChannelsLastMaxPool2d, nn.MaxPool2d.forward,
                        repeats, "fwd, batch 16")]


def table(rows: list[dict], layer: str, conv: bool) -> list[str]:
    head = f"| shape | pass | {layer} ms | channels-last ms | speed-up [min–max] |"
    head += " 3x3 conv ms |" if conv else ""
    lines = [head + " bit-identical |", "|" + "---|" * (7 if conv else 6)]
    for r in rows:
        ratio = (f"{statistics.median(r['ratios']):.2f}× [{min(r['ratios']):.2f}–"
                 f"{max(r['ratios']):.2f}]")
        lines.append(f"| {r['what']} | {r['pass']} | {r['base_ms']:.2f} | {r['ours_ms']:.2f} "
                     f"| {ratio} |" + (f" {r['conv_ms']:.2f} |" if conv else "")
                     + f" {'yes' if r['same'] else '**NO**'} |")
    return lines


def markdown(sections: list[tuple[str, list[str]]], args, load: tuple[float, float]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    lines = [
        "# The channels-last pools of the benchmark networks (`benchmarks/bench_pooling.py`)", "",
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {cpu}, {os.cpu_count()} cores; torch "
        f"{torch.__version__}, {args.threads} thread(s); load average {load[0]:.2f} at the start, "
        f"{load[1]:.2f} at the end (other jobs included: the baseline and ours alternate inside "
        f"every repeat, so their ratio is fair). Median of {args.repeats} repeats; the "
        "speed-up is the torch layer's time over ours, with its min–max over the repeats.", "",
        f"Command: `python benchmarks/bench_pooling.py --pools {args.pools} --networks "
        f"{args.networks} --repeats {args.repeats} --loops {args.loops} --threads {args.threads} "
        f"--seed {args.seed}`", ""]
    for title, rows in sections:
        lines += [f"## {title}", ""] + rows + [""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--pools", default="avg,max", help="which to measure: avg (NATS-Bench's "
                   "avg_pool_3x3), max (NAS-Bench-101's max-pools); default both")
    p.add_argument("--networks", type=int, default=20, help="networks per benchmark (default 20)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    p.add_argument("--loops", type=int, default=20, help="calls per op timing (default 20)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the networks (default 0)")
    p.add_argument("--out", default=str(HERE / "POOLING.md"), help="report (default "
                   "benchmarks/POOLING.md)")
    args = p.parse_args(argv)
    pools = [name.strip() for name in args.pools.split(",") if name.strip()]
    if not pools or set(pools) - {"avg", "max"}:
        p.error(f"--pools {args.pools!r}: name avg, max or both")
    if min(args.networks, args.repeats, args.loops, args.threads) < 1:
        p.error("--networks, --repeats, --loops and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    start_load = os.getloadavg()[0]
    sections: list[tuple[str, list[str]]] = []
    every_row: list[dict] = []
    if "avg" in pools:
        print("timing NATS-Bench's average pool ...", flush=True)
        avg = pooling.ChannelsLastAvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        op = op_rows(avg, nn.AvgPool2d.forward, NATS_SHAPES, (64, 16), (False, True),
                     args.repeats, args.loops)
        net = nats_network_rows(args.networks, args.repeats, args.seed)
        sections += [("`avg_pool_3x3` (NATS-Bench) alone", table(op, "nn.AvgPool2d", True)),
                     (f"Whole NATS-tss networks with at least one pool (seed {args.seed}), "
                      "ms per network", table(net, "nn.AvgPool2d", False))]
        every_row += op + net
    if "max" in pools:
        print("timing NAS-Bench-101's max-pool ...", flush=True)
        op = op_rows(pooling.ChannelsLastMaxPool2d(3, stride=1, padding=1), nn.MaxPool2d.forward,
                     NB101_SHAPES, (64, 16), (False,), args.repeats, args.loops)
        net = nb101_network_rows(args.networks, args.repeats, args.seed)
        sections += [("`maxpool3x3` (NAS-Bench-101) alone, forward (with a gradient to come it "
                      "is nn.MaxPool2d)", table(op, "nn.MaxPool2d", True)),
                     (f"Whole NAS-Bench-101 networks with a `maxpool3x3` (sample seed "
                      f"{args.seed}), ms per network", table(net, "nn.MaxPool2d", False))]
        every_row += op + net
    text = markdown(sections, args, (start_load, os.getloadavg()[0]))
    from zcproxy.atomic import write_text
    write_text(Path(args.out), text)
    print(text)
    return 0 if all(r["same"] for r in every_row) else 1


if __name__ == "__main__":
    raise SystemExit(main())
