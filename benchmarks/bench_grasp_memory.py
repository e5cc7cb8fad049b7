"""How much memory does GraSP's ``split`` option save, at what cost in time and in ranking?

GraSP's double backward keeps the graph of a whole backward pass; on a large NAS-Bench-101
cell with the runner's batch of 64 it peaks at about 10 GB, so two workers do not fit a 24 GB
machine.  ``grasp(split=k)`` (NASLib's ``split_data``) runs both passes on k chunks of the
batch and holds one chunk's graph at a time.  The baseline is ``split=1`` (the published
recipe, what the committed tables use), measured in the same run on the same cells.

Each (cell, split) is scored in a fresh spawned process, so its peak resident memory belongs
to that one score: the reported peak is the growth of the resident high-water mark during the
score, reset just before it (the process before it, with torch imported, the network built and
the batch loaded, is subtracted; ``ru_maxrss`` would keep a transient peak of the loading and
understate the score's own).  The cells are the NB101 seed-0 sample's cells nearest to the
given quantiles of its parameter counts (the zoo's sample), built as the runner builds them
(seeded by index) and scored on the runner's CIFAR-10 batch.  The report also gives each split's score beside
``split=1``'s: with BatchNorm in train mode each chunk is normalised with its own statistics,
so the scores move; Spearman ρ over the cells says whether their order does.

    python benchmarks/bench_grasp_memory.py                          # 3 cells, splits 1,2,4
    python benchmarks/bench_grasp_memory.py --quantiles 0.1,0.5,0.9 --splits 1,2,4,8
    python benchmarks/bench_grasp_memory.py --bench nats-tss --quantiles 0.25,0.5,0.75,1
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from memory_probe import (cpu_name, in_fresh_process, load_cell, peak_mb,  # noqa: E402
                          pick_cells, resident_mb)


def measure(bench: str, index: int, split: int, threads: int, batch: int,
            data_dir: str | None) -> dict:
    """One GraSP score in this (fresh) process: score, seconds, peak growth in MB."""
    import zcproxy

    b, model, x, y = load_cell(bench, index, threads, batch, data_dir)
    before = resident_mb(reset_peak=True)
    start = time.perf_counter()
    score = zcproxy.score(model, "grasp", inputs=x, targets=y, split=split,
                          output=b.output_selector)
    seconds = time.perf_counter() - start
    return {"index": index, "split": split, "score": score, "seconds": seconds,
            "peak_mb": peak_mb() - before, "params_m": b.params(index)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="nb101", choices=["nb101", "nats-tss", "nats-sss"],
                    help="benchmark whose cells to measure (default nb101)")
    ap.add_argument("--sample", type=int, default=1000,
                    help="the seed-0 sample the cells are picked from (default 1000)")
    ap.add_argument("--quantiles", default="0.25,0.5,0.75",
                    help="parameter-count quantiles of the cells to measure (default "
                         "0.25,0.5,0.75; 1 is the largest cell: ~10 GB at split 1 on NB101)")
    ap.add_argument("--splits", default="1,2,4", help="splits to compare; 1 is the baseline")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per score (default 1)")
    ap.add_argument("--batch", type=int, default=64, help="batch size (default 64, the runner's)")
    ap.add_argument("--data-dir", default=None, help="benchmark data folder (default: zcproxy's)")
    ap.add_argument("--out", default=str(HERE / "GRASP_MEMORY.md"),
                    help="report to write (default benchmarks/GRASP_MEMORY.md)")
    args = ap.parse_args(argv)
    splits = sorted({int(s) for s in args.splits.split(",")} | {1})
    quantiles = [float(q) for q in args.quantiles.split(",")]
    cells = pick_cells(args.bench, args.sample, quantiles, args.data_dir)
    started, load = datetime.now(timezone.utc), os.getloadavg()
    rows: list[dict] = []
    for index in cells:
        for split in splits:
            row = in_fresh_process(measure, args.bench, index, split, args.threads, args.batch,
                                   args.data_dir)
            rows.append(row)
            print(f"{args.bench} {index} ({row['params_m']:.2f} M params) split {split}: "
                  f"{row['peak_mb']:.0f} MB, {row['seconds']:.1f} s, score {row['score']:.6g}",
                  flush=True)
    report = render(args, cells, splits, rows, started, load)
    Path(args.out).write_text(report)
    print(report)
    return 0


def render(args: argparse.Namespace, cells: list[int], splits: list[int], rows: list[dict],
           started: datetime, load: tuple[float, float, float]) -> str:
    from scipy.stats import spearmanr

    by = {(r["index"], r["split"]): r for r in rows}
    lines = [
        "# GraSP's `split` option: peak memory, time and scores against `split=1`", "",
        "Generated by `benchmarks/bench_grasp_memory.py` (see its docstring).", "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {started:%Y-%m-%d %H:%M} UTC; {args.threads} torch "
        f"thread(s) per score, batch {args.batch}; load average at start "
        f"{load[0]:.2f}, at end {os.getloadavg()[0]:.2f} (times are wall clock: compare "
        "them within a run).",
        f"- Command: `python benchmarks/bench_grasp_memory.py --bench {args.bench} --sample "
        f"{args.sample} --quantiles {args.quantiles} --splits {args.splits} --threads "
        f"{args.threads}`", "",
        "**peak MB**: growth of the resident high-water mark during the score, reset just "
        "before it (fresh process per score).  **ratio**: against `split=1` on the same "
        "cell.  **score / split 1**: how far the chunked recipe moves the score (BatchNorm statistics per chunk).",
        "", "| cell | params (M) | split | peak MB | peak ratio | seconds | time ratio | score | "
        "score / split 1 |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for index in cells:
        base = by[(index, 1)]
        for split in splits:
            r = by[(index, split)]
            lines.append(
                f"| {index} | {r['params_m']:.2f} | {split} | {r['peak_mb']:.0f} | "
                f"{r['peak_mb'] / base['peak_mb']:.2f}× | {r['seconds']:.1f} | "
                f"{r['seconds'] / base['seconds']:.2f}× | {r['score']:.6g} | "
                f"{r['score'] / base['score']:.3f} |")
    lines += ["", "| split | median peak ratio | median time ratio | Spearman ρ with split 1 "
              "over the cells |", "|---:|---:|---:|---:|"]
    for split in splits[1:]:
        peak = statistics.median(by[(i, split)]["peak_mb"] / by[(i, 1)]["peak_mb"] for i in cells)
        secs = statistics.median(by[(i, split)]["seconds"] / by[(i, 1)]["seconds"] for i in cells)
        rho = (spearmanr([by[(i, 1)]["score"] for i in cells],
                         [by[(i, split)]["score"] for i in cells]).statistic
               if len(cells) >= 3 else float("nan"))
        lines.append(f"| {split} | {peak:.2f}× | {secs:.2f}× | {rho:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
