"""Command line of the ESFormer search: ``python -m zcproxy.search --help``."""
from __future__ import annotations

import argparse
import sys

import torch

from ..cli import UsageError, add_debug_flag, positive, run_command
from .decoupled import MODES, SearchConfig, run_search

DESCRIPTION = """\
Search an ESFormer architecture without training (the ESFormer paper, section 3.5).

A regularized evolution (REA with FreeREA's several mutations, crossover and ageing) first
evolves 5 random populations for 3 minutes each, guided by the Entropic Score (ES); their best
architectures seed the main search, which alternates 5-minute *topology* phases (only block
types and kernel sizes change, ranked by ES) and *size* phases (only widths, expansion ratios,
heads and head widths change, ranked by LogSynflow), 45 minutes in all (S2: 6-minute phases,
55 minutes).  Every candidate respects the parameter budget of --target (3.5 / 6 / 12.5 M
parameters at 224 px) before it is scored.

Writes into --out: best.json (the architecture, its parameters, MACs and both scores),
log.jsonl (every candidate scored, and the phase boundaries) and trajectory.png.  Interrupt
it at any time and continue with --resume: the log is replayed (nothing is rescored) and the
search continues as if it had never stopped (with time budgets, the interrupted phase's clock
restarts where the log left it)."""

EPILOG = """\
examples:
  python -m zcproxy.search --target s1 --out runs/s1                  # the paper's S1 search
  python -m zcproxy.search --target s2 --device cuda --out runs/s2
  python -m zcproxy.search --target s1 --extended --mode combined --out runs/abl-combined
  python -m zcproxy.search --target s0 --resolution 128 --out runs/s0-fast
  python -m zcproxy.search --target s0 --resolution 64 --phase-candidates 40 \\
      --total-candidates 400 --seed 1 --out runs/repro          # machine-independent run
  python -m zcproxy.search --out runs/s1 --target s1 --resume         # continue after a kill
  python -m zcproxy.search.trajectory runs/s1/log.jsonl               # redraw the plot
  python -m zcproxy.search --bench nats-tss --guide logsynflow        # a NAS benchmark instead
                                             (python -m zcproxy.search.bench --help)

Table 5 ablation (the paper: --target s1 --extended, i.e. 6 M parameters, Residual
Bottlenecks allowed): --mode logsynflow (LogSynflow only), --mode combined (one score from
both proxies: the mean of their normalised ranks in the population), --mode decoupled (ours).
"""


def _none_or_float(text: str) -> float | None:
    if text.lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zcproxy.search", description=DESCRIPTION,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = SearchConfig()
    g = p.add_argument_group("what to search")
    g.add_argument("--target", choices=("s0", "s1", "s2"), default=d.target,
                   help="EfficientFormerV2 skeleton and default budget: s0 = 3.5 M, s1 = 6 M, "
                        "s2 = 12.5 M parameters (default: %(default)s)")
    g.add_argument("--extended", action="store_true",
                   help="add the ResNet Residual Bottleneck block to the FFN choices (the "
                        "paper's Table 5 ablation space)")
    g.add_argument("--max-params", type=float, metavar="M",
                   help="parameter budget in millions, overriding --target's")
    g.add_argument("--max-macs", type=float, metavar="G",
                   help="also cap multiply-accumulates at 224 px, in billions (e.g. 1.0)")
    g.add_argument("--mode", choices=MODES, default=d.mode,
                   help="decoupled: ES for topology phases, LogSynflow for size phases (the "
                        "paper); combined: one rank-based score from both, all genes mutate; "
                        "logsynflow: LogSynflow only, all genes mutate (default: %(default)s)")

    g = p.add_argument_group("budgets (time by default; candidate counts for reproducible runs)")
    g.add_argument("--multistart-minutes", type=float, metavar="MIN",
                   help="per multi-start population (default 3)")
    g.add_argument("--phase-minutes", type=float, metavar="MIN",
                   help="per topology or size phase (default 5; 6 for s2)")
    g.add_argument("--total-minutes", type=float, metavar="MIN",
                   help="whole search, multi-start included (default 45; 55 for s2)")
    g.add_argument("--multistart-candidates", type=int, metavar="N",
                   help="candidates per multi-start population (default: --phase-candidates)")
    g.add_argument("--phase-candidates", type=int, metavar="N",
                   help="candidates per topology or size phase")
    g.add_argument("--total-candidates", type=int, metavar="N",
                   help="candidates in the whole search.  Giving any candidate count turns off "
                        "every time budget not given explicitly, so the run no longer depends "
                        "on the machine's speed")

    g = p.add_argument_group("scoring")
    g.add_argument("--resolution", type=int, default=d.resolution, metavar="PX",
                   help="input size the proxies score at, a multiple of 32: 224 is the paper's; "
                        "128 scores 1.3-1.5x more candidates per minute on a CPU (much of a "
                        "candidate's cost is per-layer overhead) (default: %(default)s).  "
                        "Budgets are always counted at 224")
    g.add_argument("--score-layer-scale", type=_none_or_float, default=d.score_layer_scale,
                   metavar="X|none",
                   help="layer scale of the networks the proxies see.  'none' (default) removes "
                        "it: EfficientFormerV2's 1e-5 hides every residual branch from proxies "
                        "computed at initialisation.  The trained network keeps 1e-5")
    g.add_argument("--score-seed", type=int, default=d.score_seed,
                   help="seed of the proxies' noise inputs and re-initialisations, the same for "
                        "every candidate (default: %(default)s)")
    g.add_argument("--es-proxy", default=d.es_proxy, metavar="NAME",
                   help="the reading of the Entropic Score that guides topology: entropic "
                        "(signed weights, the default), entropic_abs (|weights|, the reading of "
                        "the searches committed before issue 17) or another entropic_* variant "
                        "(python -m zcproxy.correlate --list-proxies lists them) "
                        "(default: %(default)s)")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where candidates are built and scored (default: %(default)s)")
    g.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (on a machine shared with other jobs, 1 per process "
                        "avoids oversubscription)")

    g = p.add_argument_group("evolution (the paper's values by default)")
    g.add_argument("--starts", type=int, default=d.starts, help="multi-start populations (%(default)s)")
    g.add_argument("--start-population", type=int, default=d.start_population,
                   help="multi-start population size (%(default)s)")
    g.add_argument("--start-tournament", type=int, default=d.start_tournament,
                   help="multi-start tournament size (%(default)s)")
    g.add_argument("--population", type=int, default=d.population,
                   help="main-search population size (%(default)s)")
    g.add_argument("--tournament", type=int, default=d.tournament,
                   help="main-search tournament size (%(default)s)")
    g.add_argument("--mutations", type=int, default=d.mutations,
                   help="point mutations per mutated child (%(default)s)")
    g.add_argument("--seeds", type=int, default=d.seeds,
                   help="best architectures of a phase that seed the next (%(default)s)")
    g.add_argument("--seed", type=int, default=d.seed,
                   help="random seed of the search: same seed, same settings, same result "
                        "(with candidate budgets) (default: %(default)s)")

    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="folder for best.json, log.jsonl and trajectory.png")
    g.add_argument("--resume", action="store_true",
                   help="continue the search logged in --out (same settings required); "
                        "without it an existing log is an error")
    g.add_argument("--stop-after", type=int, metavar="N",
                   help="stop after N newly scored candidates, leaving a log to --resume "
                        "(for tests and for splitting a search into jobs)")
    g.add_argument("--quiet", action="store_true", help="no progress lines")
    add_debug_flag(p)
    return p


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(
        target=args.target, extended=args.extended, mode=args.mode, max_params=args.max_params,
        max_macs=args.max_macs, seed=args.seed, resolution=args.resolution,
        score_layer_scale=args.score_layer_scale, score_seed=args.score_seed,
        es_proxy=args.es_proxy, starts=args.starts, start_population=args.start_population,
        start_tournament=args.start_tournament, population=args.population,
        tournament=args.tournament, mutations=args.mutations, seeds=args.seeds,
        multistart_minutes=args.multistart_minutes, phase_minutes=args.phase_minutes,
        total_minutes=args.total_minutes, multistart_candidates=args.multistart_candidates,
        phase_candidates=args.phase_candidates, total_candidates=args.total_candidates)


def check_arguments(args: argparse.Namespace) -> None:
    """Budgets and counts that cannot work (``inf``, 0, negative), before anything is built."""
    for flag in ("max_params", "max_macs", "multistart_minutes", "phase_minutes",
                 "total_minutes"):
        positive("--" + flag.replace("_", "-"), getattr(args, flag))
    for flag in ("multistart_candidates", "phase_candidates", "total_candidates", "stop_after",
                 "threads", "starts", "start_population", "start_tournament", "population",
                 "tournament", "mutations", "seeds"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} {value}: must be at least 1")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and search; a mistake ends as one line on stderr and exit status 2."""
    given = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--bench" or a.startswith("--bench=") for a in given):
        from .bench.__main__ import main as bench_main  # the NAS-benchmark search
        return bench_main(given)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
        config = config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    return run_command(lambda: _run(args, config), prog="search", debug=args.debug)


def _run(args: argparse.Namespace, config: SearchConfig) -> int:
    from ..runner import check_device
    check_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        result = run_search(config, args.out, device=args.device, resume=args.resume,
                            progress=not args.quiet, stop_after=args.stop_after)
    except KeyboardInterrupt:
        print(f"interrupted; continue with the same command plus --resume (log: "
              f"{args.out}/log.jsonl)", file=sys.stderr)
        return 130
    if result.interrupted:
        print(f"stopped after {args.stop_after} newly scored candidates; continue with --resume",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
