"""Peak memory and time of ``tenas_ntk`` against the straightforward way of building its kernel.

TE-NAS's ``get_ntk_n`` (and zcproxy until this benchmark's change) collects the N per-sample
gradient rows, stacks them and converts the stack to float64 before Θ = J Jᵀ: at the moment of
the conversion the rows, the stack and its float64 copy are all alive, 16·N·P bytes for P
weights.  ``zcproxy.proxies.tenas.ntk_gram`` writes each gradient straight into its row of one
float64 J (8·N·P bytes).  Both multiply the same float64 matrix, so the condition numbers must
be bit-identical: the report checks that they are.

The baseline is written here, the way TE-NAS writes it (a deep copy in train mode, one backward
per sample of the summed logits, weights only), and measured in the same run on the same cells.
Each (cell, variant) runs in a fresh spawned process, and its peak is the growth of the
process's resident high-water mark during the score (reset to the resident memory just before
it, so a transient peak while loading the tables does not hide part of the score's).  The cells are those of the seed-0 sample
nearest the given quantiles of its parameter counts, built as the runner builds them and scored
on the runner's CIFAR-10 batch (its first ``--batch`` images).

    python benchmarks/bench_ntk_memory.py                      # NB101, 3 cells, batch 16
    python benchmarks/bench_ntk_memory.py --bench nats-tss --batch 64 --quantiles 0.1,0.5,0.9
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from memory_probe import (add_cell_arguments, chosen_cells, in_fresh_process,  # noqa: E402
                          load_cell, machine_line, measure_peak)

VARIANTS = ("stacked", "zcproxy")


def stacked_condition_number(model, x, output) -> float:
    """TE-NAS's way: per-sample gradient rows, stacked, converted to float64, then Θ = J Jᵀ."""
    import copy

    import torch

    net = copy.deepcopy(model).train()
    params = [p for name, p in net.named_parameters() if "weight" in name and p.requires_grad]
    s = output(net(x)).sum(dim=1)
    rows = []
    for i in range(s.shape[0]):
        grads = torch.autograd.grad(s[i], params, retain_graph=i < s.shape[0] - 1,
                                    allow_unused=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads if g is not None]))
    j = torch.stack(rows).to(torch.float64)
    eig = torch.linalg.eigvalsh(j @ j.T)
    return float(eig[-1]) / float(eig[0])


def measure(bench: str, index: int, variant: str, threads: int, batch: int,
            data_dir: str | None) -> dict:
    """One condition number in this (fresh) process: score, seconds, peak growth in MB."""
    import zcproxy

    b, model, x, _ = load_cell(bench, index, threads, 64, data_dir)
    x = x[:batch]  # the first N of the runner's batch, as tenas_ntk(batch_size=N) takes
    if variant == "stacked":
        def kernel() -> float:
            return stacked_condition_number(model, x, b.output_selector)
    else:
        def kernel() -> float:
            return zcproxy.score(model, "tenas_ntk", inputs=x, output=b.output_selector,
                                 nonfinite="keep")
    score, seconds, peak = measure_peak(kernel)
    return {"index": index, "variant": variant, "score": score, "seconds": seconds,
            "peak_mb": peak, "params_m": b.params(index)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cell_arguments(ap, quantiles="0.25,0.5,0.9", largest=", 49 M parameters on NB101",
                       report="NTK_MEMORY.md")
    ap.add_argument("--batch", type=int, default=16,
                    help="images per kernel, N (default 16; TE-NAS's recipe and zcproxy's "
                         "default is the runner's 64, 16x slower: N backward passes of N)")
    args = ap.parse_args(argv)
    if not 2 <= args.batch <= 64:
        ap.error(f"--batch must be in 2..64 (the runner's batch), got {args.batch}")
    cells = chosen_cells(args)
    started, load = datetime.now(timezone.utc), os.getloadavg()
    rows: list[dict] = []
    for index in cells:
        for variant in VARIANTS:
            row = in_fresh_process(measure, args.bench, index, variant, args.threads,
                                   args.batch, args.data_dir)
            rows.append(row)
            print(f"{args.bench} {index} ({row['params_m']:.2f} M params) {variant}: "
                  f"{row['peak_mb']:.0f} MB, {row['seconds']:.1f} s, score {row['score']!r}",
                  flush=True)
    report = render(args, cells, rows, started, load)
    Path(args.out).write_text(report)
    print(report)
    return 0


def render(args: argparse.Namespace, cells: list[int], rows: list[dict], started: datetime,
           load: tuple[float, float, float]) -> str:
    by = {(r["index"], r["variant"]): r for r in rows}
    same = sum(by[(i, "stacked")]["score"] == by[(i, "zcproxy")]["score"] for i in cells)
    lines = [
        "# `tenas_ntk`: peak memory and time against the stacked kernel", "",
        "Generated by `benchmarks/bench_ntk_memory.py` (see its docstring).", "",
        machine_line(args.threads, args.batch, started, load),
        f"- Command: `python benchmarks/bench_ntk_memory.py --bench {args.bench} --sample "
        f"{args.sample} --quantiles {args.quantiles} --batch {args.batch} --threads "
        f"{args.threads}`", "",
        "**stacked**: TE-NAS's kernel (rows stacked, then converted to float64), written in the "
        "benchmark.  **zcproxy**: `zcproxy.score(model, \"tenas_ntk\")`.  **peak MB**: growth of "
        "the process's resident high-water mark during the score, reset just before it (fresh "
        "process per score).  "
        "**ratio**: against stacked on the same cell.", "",
        "| cell | params (M) | variant | peak MB | peak ratio | seconds | time ratio | "
        "condition number |", "|---:|---:|:---|---:|---:|---:|---:|---:|"]
    for index in cells:
        base = by[(index, "stacked")]
        for variant in VARIANTS:
            r = by[(index, variant)]
            lines.append(
                f"| {index} | {r['params_m']:.2f} | {variant} | {r['peak_mb']:.0f} | "
                f"{r['peak_mb'] / base['peak_mb']:.2f}× | {r['seconds']:.1f} | "
                f"{r['seconds'] / base['seconds']:.2f}× | {r['score']!r} |")
    peak = statistics.median(by[(i, "zcproxy")]["peak_mb"] / by[(i, "stacked")]["peak_mb"]
                             for i in cells)
    secs = statistics.median(by[(i, "zcproxy")]["seconds"] / by[(i, "stacked")]["seconds"]
                             for i in cells)
    lines += ["", f"Median over the {len(cells)} cells: peak {peak:.2f}×, time {secs:.2f}× of "
              f"stacked; condition numbers bit-identical on {same} of {len(cells)}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
