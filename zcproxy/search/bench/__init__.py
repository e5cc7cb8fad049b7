"""Training-free search of the NAS benchmarks (NATS-tss, NATS-sss, NAS-Bench-101).

    python -m zcproxy.search.bench --bench nats-tss --guide logsynflow --evaluations 1000
    python -m zcproxy.search --bench nats-tss --guide naswot,logsynflow,entropic --combine rank
    python -m zcproxy.search.bench --bench nb101 --scores results/correlate/nb101 --repeats 30

    from zcproxy.search.bench import BenchSearchConfig, Guide, search_benchmark
    run = search_benchmark(BenchSearchConfig("nats-tss", Guide(("logsynflow",))), bench, scores)

Modules: ``engine`` (guides, the search on the shared REA engine, incumbents), ``sources``
(live scoring through the runner's Worker, cached score tables, both), ``study`` (many seeds
and guides: per-run CSV, summary, figure), ``__main__`` (the command line).
"""
from .engine import (NO_GUIDE, STRATEGIES, BenchRun, BenchSearchConfig, Candidate, Guide,
                     accuracies, accuracy_columns, checkpoints, search_benchmark)
from .sources import (CachedScores, HybridScores, LiveScores, ScoresMissing, ScoreTable,
                      StopScoring)
from .study import Method, StudySpec, comparisons, run_study, summarize, welch_interval

__all__ = ["BenchSearchConfig", "BenchRun", "Candidate", "Guide", "search_benchmark",
           "accuracies", "accuracy_columns", "checkpoints", "STRATEGIES", "NO_GUIDE",
           "ScoreTable", "CachedScores", "LiveScores", "HybridScores", "ScoresMissing",
           "StopScoring", "Method", "StudySpec", "run_study", "summarize", "comparisons",
           "welch_interval"]
