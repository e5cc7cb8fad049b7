"""Published correlations that our results are compared against (Kendall τ, Spearman ρ)."""
from __future__ import annotations

# The paper's Table 4: CIFAR-10 top-1 vs proxy, (a) NAS-Bench-101, (b) NATS-Bench size space.
# FreeREA (Cavagnero et al. 2022) for NAS-Bench-201 = NATS topology space, all 15,625 archs.
PUBLISHED: dict[tuple[str, str], tuple[float, float, str]] = {
    ("nb101", "naswot"): (0.26, 0.37, "paper Table 4a"),
    ("nb101", "logsynflow"): (0.31, 0.45, "paper Table 4a"),
    ("nb101", "entropic"): (0.50, 0.68, "paper Table 4a"),
    ("nats-sss", "naswot"): (0.45, 0.63, "paper Table 4b"),
    ("nats-sss", "logsynflow"): (0.76, 0.92, "paper Table 4b"),
    ("nats-sss", "entropic"): (0.03, 0.04, "paper Table 4b"),
    ("nats-tss", "naswot"): (0.608, 0.793, "FreeREA"),
    ("nats-tss", "logsynflow"): (0.630, 0.826, "FreeREA"),
}


def published(bench: str, proxy: str) -> tuple[float, float, str] | None:
    return PUBLISHED.get((bench, proxy))
