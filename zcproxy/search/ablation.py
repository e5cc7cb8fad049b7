"""The paper's Table 5 ablation at full length: three modes, several seeds, two ES readings.

``python -m zcproxy.search.ablation run --out DIR`` runs every search of the ablation that is
not finished (two at a time by default, each ``--resume``-able: stop it whenever, run the same
command again and it continues); ``python -m zcproxy.search.ablation report DIR`` tables them.

Why candidate budgets, and these ones.  The paper gives every search 45 minutes (5 ES-guided
multi-starts of 3 minutes, then 5-minute phases).  Minutes depend on the machine and on what
else runs on it, so each search here gets the number of candidates one core scores in the
paper's minutes, measured on this machine (2026-12-01, extended S1 space at 224 px, 6 M
parameters, one torch thread per search, two searches at once on the 2 cores, 3-minute
multi-starts of random architectures): LogSynflow 99.9 candidates per minute, the signed
Entropic Score 77.0.  So:

* ``logsynflow``: 300 per multi-start (3 x 99.9), 4,496 in all (45 x 99.9);
* ``combined`` (both proxies per candidate, 43.5 per minute): 130 per multi-start, 1,957 in all;
* ``decoupled``: 231 per ES-guided multi-start (3 x 77.0); the topology (ES) and size
  (LogSynflow) phases share one count, 435, the number for which a topology and a size phase
  take the paper's 10 minutes together (435 / 77.0 + 435 / 99.9 = 10.0 min); 3,765 in all
  (5 x 231 + 6 x 435, the paper's 15 + 30 minutes).

The ES reading (issue 17): ``entropic`` (signed weights, the default) in every mode, and the
decoupled mode again with ``entropic_abs`` (|weights|, the reading of the committed 15-minute
runs), so the effect of the reading is visible on its own.

The report gives, per run and per (mode, reading): Residual Bottlenecks / blocks, parameters,
MACs, and both ES readings and LogSynflow of the final network (rescored here, so that
runs guided by different readings are compared on the same scale), and, from
:func:`zcproxy.explain`, how much of each final network's ES comes from each block type, and
what changing one block's FFN type, everything else fixed, does to ES and to the size.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..atomic import write_text
from ..cli import UsageError, add_debug_flag, run_command

RATE_PER_MINUTE = {"logsynflow": 99.9, "entropic": 77.0}   # measured, see the docstring
PAPER_MINUTES = {"multistart": 3.0, "phase": 5.0, "total": 45.0}
SPACE_ARGS = ("--target", "s1", "--extended", "--max-params", "6")
READINGS = ("entropic", "entropic_abs")


def _budget_args(mode: str) -> tuple[str, ...]:
    """The candidate budgets of one mode (see the module docstring for the arithmetic)."""
    ls, es = RATE_PER_MINUTE["logsynflow"], RATE_PER_MINUTE["entropic"]
    m = PAPER_MINUTES
    if mode == "decoupled":
        pair = 2 / (1 / ls + 1 / es)  # a topology and a size phase together take 2 phases' time
        start = round(m["multistart"] * es)
        phase = round(m["phase"] * pair)
        phases = round((m["total"] - 5 * m["multistart"]) / m["phase"])
        return ("--multistart-candidates", str(start), "--phase-candidates", str(phase),
                "--total-candidates", str(5 * start + phases * phase))
    rates = {"logsynflow": ls, "combined": 1 / (1 / ls + 1 / es)}  # combined: both per candidate
    if mode not in rates:
        raise ValueError(f"unknown mode {mode!r}")
    return ("--multistart-candidates", str(round(m["multistart"] * rates[mode])),
            "--total-candidates", str(round(m["total"] * rates[mode])))


@dataclass(frozen=True)
class AblationRun:
    """One search of the ablation; ``name`` is its folder."""

    mode: str
    reading: str
    seed: int

    @property
    def name(self) -> str:
        reading = "" if self.reading == "entropic" else "-" + self.reading.removeprefix("entropic_")
        return f"{self.mode}{reading}-seed{self.seed}"

    def command(self, out: Path, device: str = "cpu") -> list[str]:
        return [sys.executable, "-m", "zcproxy.search", *SPACE_ARGS, "--mode", self.mode,
                "--es-proxy", self.reading, "--threads", "1", "--seed", str(self.seed),
                *_budget_args(self.mode), "--device", device, "--out", str(out / self.name),
                "--resume"]


def ablation_runs(seeds: Sequence[int] = (0, 1, 2)) -> list[AblationRun]:
    """Seed by seed (so a partial ablation has every mode at the first seeds): the three modes
    with the signed ES, then the decoupled mode with |weights|."""
    return [AblationRun(mode, reading, seed) for seed in seeds
            for mode, reading in (("decoupled", "entropic"), ("logsynflow", "entropic"),
                                  ("combined", "entropic"), ("decoupled", "entropic_abs"))]


def is_finished(folder: Path) -> bool:
    log = folder / "log.jsonl"
    if not (folder / "best.json").exists() or not log.exists():
        return False
    lines = log.read_text().splitlines()
    return bool(lines) and json.loads(lines[-1]).get("event") == "done"


def run_ablation(out: Path, runs: Sequence[AblationRun], parallel: int = 2,
                 device: str = "cpu") -> int:
    """Run every unfinished search (resuming those with a log), ``parallel`` at a time; each
    search's progress goes to ``out/NAME.log``.  Returns how many failed."""
    out.mkdir(parents=True, exist_ok=True)
    todo = [r for r in runs if not is_finished(out / r.name)]
    done = len(runs) - len(todo)
    if done:
        print(f"reusing {done} finished searches in {out} (their logs and best.json are kept)",
              flush=True)

    def one(run: AblationRun) -> int:
        started = (out / run.name / "log.jsonl").exists()
        print(f"{'resuming' if started else 'starting'} {run.name}", flush=True)
        with open(out / f"{run.name}.log", "a") as progress:
            code = subprocess.call(run.command(out, device), stdout=progress,
                                   stderr=subprocess.STDOUT)
        print(f"{run.name}: {'finished' if code == 0 else f'failed (exit {code}); see {out / run.name}.log'}",
              flush=True)
        return code

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return sum(code != 0 for code in pool.map(one, todo))


# ---- the report ---------------------------------------------------------------------------------
def block_type_of(arch, layer: str) -> str:
    """Which kind of block an activation layer of an ESFormer belongs to: ``stem``,
    ``downsample``, ``attention`` or the block's FFN type (``ibn``, ``convnext``,
    ``bottleneck``); ``other`` for anything else."""
    parts = layer.split(".")
    if parts[0] == "stem":
        return "stem"
    if parts[0] == "stages" and len(parts) > 2:
        stage = int(parts[1])
        if parts[2] == "downsample":
            return "downsample"
        if parts[2] == "blocks" and len(parts) > 3:
            block = int(parts[3])
            if arch.space.is_attention(stage, block):
                return "attention"
            return arch.stages[stage][block].ffn_type
    return "other"


def final_network(best: dict):
    """The final architecture, its network as the search scored it (its own seed, no layer
    scale) and that seed."""
    from ..esformer.space import Architecture
    from .scoring import ProxyScorer
    cfg = best["config"]
    arch = Architecture.from_dict(best["arch"])
    scorer = ProxyScorer(cfg["resolution"], layer_scale_init=cfg["score_layer_scale"],
                         seed=cfg["score_seed"], num_classes=cfg["num_classes"])
    return (arch, *scorer.network(arch))


def summarize_run(folder: Path, readings: Sequence[str] = READINGS) -> tuple[dict, pd.DataFrame]:
    """One finished search: its row of the table, and its ES per block type for each reading."""
    from ..explain import explain
    best = json.loads((folder / "best.json").read_text())
    cfg = best["config"]
    arch, model, seed = final_network(best)
    blocks = [g.ffn_type for _, _, g in arch.blocks()]  # attention blocks have an FFN too
    params: dict[str, int] = {}
    for name, tensor in model.named_parameters():
        kind = block_type_of(arch, name)
        params[kind] = params.get(kind, 0) + tensor.numel()
    shape = (3, cfg["resolution"], cfg["resolution"])
    row = {"run": folder.name, "mode": cfg["mode"], "reading": cfg.get("es_proxy", "entropic_abs"),
           "seed": cfg["seed"], "candidates": best["candidates"],
           "bottlenecks": blocks.count("bottleneck"), "convnext": blocks.count("convnext"),
           "ibn": blocks.count("ibn"), "blocks": len(blocks),
           "params_m": best["params_m"], "macs_g": best["macs_g"],
           "logsynflow": best["scores"]["logsynflow"]}
    parts = []
    for reading in readings:
        table = explain(model, reading, input_shape=shape, seed=seed)
        row[reading] = float(table["entropy"].sum())  # the layers of explain add up to ES
        table["block_type"] = [block_type_of(arch, layer) for layer in table["layer"]]
        part = table.groupby("block_type")["entropy"].agg(["sum", "count"]).reset_index()
        part["params"] = [params.get(kind, 0) for kind in part["block_type"]]
        part.insert(0, "reading", reading)
        part.insert(0, "run", folder.name)
        parts.append(part)
    return row, pd.concat(parts, ignore_index=True)


def block_type_swaps(target: str = "s1", readings: Sequence[str] = READINGS,
                     resolution: int = 224, progress: bool = True) -> pd.DataFrame:
    """ES's preference between FFN types with everything else held fixed: in
    EfficientFormerV2's own architecture (every block an IBN, in the extended space), each
    FFN block in turn becomes each FFN type; one row per (block, type) with the parameter
    count, every reading's ES and LogSynflow, scored as the search scores a candidate (its own
    seed, no layer scale)."""
    from ..api import score_many
    from ..esformer.space import efficientformer_v2
    from .cost import CostModel
    from .scoring import ProxyScorer
    base = efficientformer_v2(target, extended=True)
    space, cost, scorer = base.space, CostModel(224), ProxyScorer(resolution)
    positions = [(s, b) for s, b, _ in base.blocks() if not space.is_attention(s, b)]
    rows = []
    for i, (s, b) in enumerate(positions, 1):
        if progress:
            print(f"[{i}/{len(positions)}] block {s + 1}.{b + 1}: every FFN type", flush=True)
        for ffn in space.choices(s, b, "ffn_type"):
            arch = base.replace_block(s, b, ffn_type=ffn)
            model, seed = scorer.network(arch)
            scores = score_many(model, [*readings, "logsynflow"],
                                input_shape=(3, resolution, resolution),
                                seed=seed, nonfinite="nan")
            rows.append({"stage": s + 1, "block": b + 1, "ffn_type": ffn,
                         "params": cost.params(arch), **scores})
    return pd.DataFrame(rows)


def swap_summary(swaps: pd.DataFrame,
                 scores: Sequence[str] = (*READINGS, "logsynflow")) -> pd.DataFrame:
    """Per FFN type: the mean change, against an IBN at the same position, of parameters and
    of each score, and in how many positions the score rises."""
    ibn = swaps[swaps["ffn_type"] == "ibn"].set_index(["stage", "block"])
    rows = []
    for ffn, g in swaps[swaps["ffn_type"] != "ibn"].groupby("ffn_type"):
        g = g.set_index(["stage", "block"])
        row = {"ffn_type": ffn, "blocks": len(g),
               "d_params_m": float((g["params"] - ibn.loc[g.index, "params"]).mean() / 1e6)}
        for score in scores:
            delta = g[score] - ibn.loc[g.index, score]
            row[f"d_{score}"] = float(delta.mean())
            row[f"rises_{score}"] = int((delta > 0).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values: Sequence[float], fmt: str) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def report(out: Path, runs: Sequence[AblationRun]) -> str:
    """Write ``runs.csv``, ``block_types.csv`` and ``table5.md`` into ``out`` from the
    finished searches; returns the markdown."""
    finished = [r for r in runs if is_finished(out / r.name)]
    if not finished:
        raise UsageError(f"no finished search of the ablation in {out}; run it first "
                         f"(python -m zcproxy.search.ablation run --out {out})")
    rows, parts = [], []
    for i, run in enumerate(finished, 1):
        print(f"[{i}/{len(finished)}] rescoring the final network of {run.name}", flush=True)
        row, part = summarize_run(out / run.name)
        rows.append(row)
        parts.append(part)
    table = pd.DataFrame(rows)
    types = pd.concat(parts, ignore_index=True)
    config = json.loads((out / finished[0].name / "best.json").read_text())["config"]
    swaps = block_type_swaps(config["target"], resolution=config["resolution"])
    write_text(out / "runs.csv", table.to_csv(index=False, float_format="%.12g"))
    write_text(out / "block_types.csv", types.to_csv(index=False, float_format="%.12g"))
    write_text(out / "block_swaps.csv", swaps.to_csv(index=False, float_format="%.12g"))
    text = markdown(table, types, len(runs), swap_summary(swaps))
    write_text(out / "table5.md", text)
    return text


def markdown(table: pd.DataFrame, types: pd.DataFrame, planned: int,
             swaps: pd.DataFrame | None = None) -> str:
    lines = [f"# Table 5 at full length: {len(table)} of {planned} searches finished", "",
             "Residual Bottlenecks / FFN blocks, size and scores of each mode's final network "
             "(mean ± std over seeds). ES columns rescore every final network with both readings "
             "(`entropic` signed, `entropic_abs` |weights|), whichever guided the search.", "",
             "| mode | guiding ES | seeds | candidates | bottlenecks / blocks | params (M) | "
             "MACs (G) | ES signed | ES abs | LogSynflow |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (mode, reading), g in table.groupby(["mode", "reading"], sort=False):
        lines.append(
            f"| {mode} | `{reading}` | {', '.join(map(str, g['seed']))} | "
            f"{_mean_std(g['candidates'], ',.0f')} | "
            f"{_mean_std(g['bottlenecks'], '.1f')} / {_mean_std(g['blocks'], '.0f')} | "
            f"{_mean_std(g['params_m'], '.2f')} | {_mean_std(g['macs_g'], '.2f')} | "
            f"{_mean_std(g['entropic'], '.2f')} | {_mean_std(g['entropic_abs'], '.2f')} | "
            f"{_mean_std(g['logsynflow'], '.3g')} |")
    lines += ["", "## Every search", "",
              "| run | candidates | bottlenecks / convnext / ibn | params (M) | MACs (G) | "
              "ES signed | ES abs | LogSynflow |", "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| `{r.run}` | {r.candidates:,} | {r.bottlenecks} / {r.convnext} / {r.ibn} | "
                     f"{r.params_m:.2f} | {r.macs_g:.2f} | {r.entropic:.2f} | "
                     f"{r.entropic_abs:.2f} | {r.logsynflow:.4g} |")
    lines += ["", "## Where ES comes from (`explain`, pooled over the final networks)", "",
              "Per block type (attention blocks, with their FFN, are one type): activation "
              "layers, the mean entropy each contributes, the type's share of ES and of the "
              "parameters. A type whose share of ES exceeds its share of parameters is one ES "
              "buys cheaply.", "",
              "| block type | reading | activation layers | mean entropy per layer | "
              "share of ES | share of parameters |", "|---|---|---|---|---|---|"]
    pooled = types.groupby(["block_type", "reading"])[["sum", "count", "params"]].sum().reset_index()
    totals = types.groupby("reading")[["sum", "params"]].sum()
    for r in pooled.sort_values(["block_type", "reading"]).itertuples():
        lines.append(f"| {r.block_type} | `{r.reading}` | {r.count} | {r.sum / r.count:.3f} | "
                     f"{r.sum / totals.loc[r.reading, 'sum']:.1%} | "
                     f"{r.params / totals.loc[r.reading, 'params']:.1%} |")
    if swaps is not None and len(swaps):
        lines += ["", "## One block changed, everything else fixed (`block_swaps.csv`)", "",
                  "EfficientFormerV2's own architecture (all IBN); each FFN block in turn "
                  "becomes another type. Mean change against the IBN at the same position, and "
                  "in how many positions ES rises.", "",
                  "| FFN type | positions | Δ params (M) | Δ ES signed (rises) | "
                  "Δ ES abs (rises) | Δ LogSynflow (rises) |", "|---|---|---|---|---|---|"]
        for r in swaps.itertuples():
            lines.append(f"| {r.ffn_type} | {r.blocks} | {r.d_params_m:+.3f} | "
                         f"{r.d_entropic:+.3f} ({r.rises_entropic}) | "
                         f"{r.d_entropic_abs:+.3f} ({r.rises_entropic_abs}) | "
                         f"{r.d_logsynflow:+.3g} ({r.rises_logsynflow}) |")
    return "\n".join(lines) + "\n"


DESCRIPTION = __doc__.split("\n\n")[0] + """

  run     run (or continue) every unfinished search of the ablation into --out
  report  rescore the finished searches' final networks and write table5.md, runs.csv and
          block_types.csv into the folder"""

EPILOG = """\
examples:
  python -m zcproxy.search.ablation run --out results/search/table5-full        # ~9 h on 2 cores
  python -m zcproxy.search.ablation run --out runs/t5 --seeds 0 --parallel 1
  python -m zcproxy.search.ablation report results/search/table5-full
Stop a run whenever (Ctrl-C, or kill); the same command continues every search where its log
stopped.  Budgets and the rates they come from: see the module docstring
(python -c "import zcproxy.search.ablation as a; help(a)")."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zcproxy.search.ablation", description=DESCRIPTION,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the unfinished searches")
    r.add_argument("--out", required=True, type=Path, help="folder of the ablation's searches")
    r.add_argument("--parallel", type=int, default=2, help="searches at a time (default 2)")
    r.add_argument("--device", default="cpu", help="device of every search (default cpu)")
    s = sub.add_parser("report", help="table the finished searches")
    s.add_argument("out", type=Path, help="folder of the ablation's searches")
    for q in (r, s):
        q.add_argument("--seeds", default="0,1,2", help="seeds of each mode (default 0,1,2)")
        add_debug_flag(q)
    args = p.parse_args(argv)

    def go() -> int:
        try:
            seeds = [int(x) for x in args.seeds.split(",")]
        except ValueError:
            raise UsageError(f"--seeds {args.seeds!r}: expected integers separated by commas")
        runs = ablation_runs(seeds)
        if args.command == "run":
            if args.parallel < 1:
                raise UsageError("--parallel must be at least 1")
            return 1 if run_ablation(args.out, runs, args.parallel, args.device) else 0
        print(report(args.out, runs), end="")
        return 0
    return run_command(go, prog="search.ablation", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
