"""Training-free search of ESFormer architectures: the paper's decoupled ES/LogSynflow evolution.

    python -m zcproxy.search --target s1 --out runs/s1          # the paper's 45-minute search
    python -m zcproxy.search --help                             # every option, explained

    from zcproxy.search import SearchConfig, run_search
    result = run_search(SearchConfig(target="s0", resolution=128), "runs/s0", device="cuda")
    result.best["arch"], result.best["params"], result.best["scores"]

Modules: ``rea`` (generic regularized evolution), ``decoupled`` (the schedule of phases and the
three modes), ``cost`` (exact, memoised parameter/MAC counts for the budget), ``scoring``
(proxies on candidates, cached), ``log`` (the resumable log), ``trajectory`` (the plot),
``ablation`` (the paper's Table 5: every mode and seed, run and reported).
The NAS benchmarks (NATS-tss, NATS-sss, NB101) are searched by ``zcproxy.search.bench`` on the
same ``rea`` engine: ``python -m zcproxy.search --bench nats-tss --guide logsynflow``.
"""
from .cost import CostModel
from .decoupled import (
    MODES, BudgetError, SearchConfig, SearchResult, combined_rank, crossover_genes, run_search,
)
from .log import ResumeMismatch, read_events
from .rea import Member, Proposal, RegularizedEvolution
from .scoring import CachedScorer, ProxyScorer

__all__ = [
    "SearchConfig", "SearchResult", "run_search", "MODES", "BudgetError", "ResumeMismatch",
    "CostModel", "ProxyScorer", "CachedScorer", "RegularizedEvolution", "Member", "Proposal",
    "crossover_genes", "combined_rank", "read_events",
]
