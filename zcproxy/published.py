"""Published correlations that our results are compared against (Kendall τ, Spearman ρ).

Keyed by (benchmark, proxy, dataset); a figure a paper gives only as ρ has τ = NaN.  Several
sources may exist for one key (FreeREA and VKDNW both report NASWOT on NAS-Bench-201):
:func:`published` returns the first, :func:`published_all` every one.
"""
from __future__ import annotations

import math

NAN = math.nan
Figure = tuple[float, float, str]

# The paper's Table 4: CIFAR-10 top-1 vs proxy, (a) NAS-Bench-101, (b) NATS-Bench size space.
# FreeREA (Cavagnero et al. 2022) for NAS-Bench-201 = NATS topology space, all 15,625 archs.
_PAPER: dict[tuple[str, str, str], Figure] = {
    ("nb101", "naswot", "cifar10"): (0.26, 0.37, "paper Table 4a"),
    ("nb101", "logsynflow", "cifar10"): (0.31, 0.45, "paper Table 4a"),
    ("nb101", "entropic", "cifar10"): (0.50, 0.68, "paper Table 4a"),
    ("nats-sss", "naswot", "cifar10"): (0.45, 0.63, "paper Table 4b"),
    ("nats-sss", "logsynflow", "cifar10"): (0.76, 0.92, "paper Table 4b"),
    ("nats-sss", "entropic", "cifar10"): (0.03, 0.04, "paper Table 4b"),
    ("nats-tss", "naswot", "cifar10"): (0.608, 0.793, "FreeREA"),
    ("nats-tss", "logsynflow", "cifar10"): (0.630, 0.826, "FreeREA"),
}

# VKDNW (CVPR 2025) Table 1: NAS-Bench-201, each proxy run with its authors' code, mean of 5
# runs; τ/ρ on CIFAR-10, CIFAR-100, ImageNet16-120.  The paper says the whole benchmark; its
# code ranks the 9,445 cells without a dead operation (results/leaderboard/README.md, and
# ``--population no-dead-ops`` for a table over those cells).  "aznas", "tenas" and
# "vkdnw" are rank aggregates of several components (zcproxy.ensemble), "n_trainable_layers"
# a depth baseline.
_VKDNW_SOURCE = "VKDNW (CVPR 2025) Table 1"
_VKDNW: dict[str, tuple[tuple[float, float], ...]] = {
    "n_flops": ((.623, .799), (.586, .763), (.545, .718)),
    "grad_norm": ((.328, .438), (.341, .451), (.310, .418)),
    "grasp": ((.352, .505), (.349, .498), (.359, .502)),
    "snip": ((.431, .591), (.440, .597), (.389, .521)),
    "synflow": ((.561, .758), (.553, .750), (.531, .719)),
    "jacob_cov": ((.616, .800), (.639, .820), (.602, .779)),
    "naswot": ((.571, .762), (.607, .799), (.605, .794)),
    "zen": ((.102, .103), (.079, .072), (.091, .109)),
    "zico": ((.607, .802), (.614, .809), (.587, .779)),
    "tenas": ((.536, .722), (.537, .723), (.523, .709)),
    "aznas": ((.712, .892), (.696, .880), (.673, .859)),
    "n_trainable_layers": ((.626, .767), (.646, .787), (.623, .764)),
    "vkdnw": ((.750, .919), (.753, .919), (.743, .906)),
}
_DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
# VKDNW's TE-NAS (ondratybl/VKDNW NB201/ZeroShotProxy/compute_te_nas_score.py, from AZ-NAS)
# counts linear regions over its 64 Gaussian inputs through the full-width network, where every
# input gets a pattern of its own (64 of 64 on 39 of the first 40 NATS-tss cells of our
# sample, measured), so its rank sum of NTK and region count orders cells by the NTK condition
# number alone: its row is also shown beside ``tenas_ntk``.
_VKDNW_TENAS_AS_NTK = "VKDNW (CVPR 2025) Table 1, TE-NAS: in effect the NTK alone"

# The NAS-Bench-Suite-Zero proxies' own authors (Abdelfattah et al., "Zero-Cost Proxies for
# Lightweight NAS", ICLR 2021): SamsungLabs/zero-cost-nas, notebooks/nasbench201_correlations.ipynb
# ("Table 1: Spearman ρ of zero-cost proxies on NAS-Bench-201"), all 15,625 cells, one random
# batch of 64 training images, |ρ| against NAS-Bench-201 v1.0 test accuracy (CIFAR-10: the
# network trained on the train split); ρ only.
_ABDELFATTAH_SOURCE = "Abdelfattah et al. (ICLR 2021) notebook, absolute ρ"
_ABDELFATTAH: dict[str, tuple[float, float, float]] = {
    "grad_norm": (.594, .637, .578),
    "snip": (.596, .637, .578),
    "grasp": (.514, .547, .549),
    "fisher": (.360, .385, .327),
    "synflow": (.737, .763, .751),
    "jacob_cov": (.731, .704, .701),
}

# ZiCo (Li et al., ICLR 2023) Fig. 3: τ and ρ against NAS-Bench-101 CIFAR-10 test accuracy
# (the paper does not say on how many cells), read from the figure's bar labels: the text
# confirms τ for ZiCo (0.46) and #Params (0.31), the rest follows the bars' order.
_ZICO_NB101_SOURCE = "ZiCo (ICLR 2023) Fig. 3"
_ZICO_NB101: dict[str, tuple[float, float]] = {
    "grad_norm": (-.17, -.25), "snip": (-.12, -.17), "grasp": (.20, .29),
    "fisher": (-.20, -.28), "synflow": (.23, .35), "zen": (.46, .63), "n_flops": (.31, .44),
    "n_params": (.31, .43), "zico": (.46, .63),
}

# GradSign and MeCo: ρ over all 15,625 NAS-Bench-201 cells, none dropped, against the
# 200-epoch seed-averaged accuracy that ``get_more_info(i, "cifar10-valid", hp="200")`` returns
# (for CIFAR-10 the test accuracy of networks trained on the 25k train split; x-test for the
# other two).  GradSign (cmu-catalyst/GradSign zero-cost-nas-code/build.py, gs.py): batches of
# 128 training images, a fresh shuffled batch per cell, one seed (42), default init, Spearman
# with nan_policy="omit".  MeCo (HamsterMimi/MeCo correlation/NAS_Bench_201.py): one training
# image (--batch_size 1) shared by every cell, seed 42, default init, train-mode BatchNorm.
_OTHERS: dict[tuple[str, str, str], Figure] = {
    ("nats-tss", "gradsign", "cifar10"): (NAN, 0.765, "GradSign (ICLR 2022)"),
    ("nats-tss", "gradsign", "cifar100"): (NAN, 0.793, "GradSign (ICLR 2022)"),
    ("nats-tss", "gradsign", "ImageNet16-120"): (NAN, 0.783, "GradSign (ICLR 2022)"),
    ("nats-tss", "meco", "cifar10"): (NAN, 0.89, "MeCo (NeurIPS 2023) abstract"),
    ("nats-tss", "swap_reg", "cifar100"): (NAN, 0.90, "SWAP (ICLR 2024) abstract"),
}


def _all_figures() -> dict[tuple[str, str, str], list[Figure]]:
    table: dict[tuple[str, str, str], list[Figure]] = {}
    for key, figure in _PAPER.items():
        table.setdefault(key, []).append(figure)
    for proxy, rows in _VKDNW.items():
        for dataset, (tau, rho) in zip(_DATASETS, rows):
            table.setdefault(("nats-tss", proxy, dataset), []).append((tau, rho, _VKDNW_SOURCE))
    for dataset, (tau, rho) in zip(_DATASETS, _VKDNW["tenas"]):
        table.setdefault(("nats-tss", "tenas_ntk", dataset), []).append(
            (tau, rho, _VKDNW_TENAS_AS_NTK))
    for proxy, rhos in _ABDELFATTAH.items():
        for dataset, rho in zip(_DATASETS, rhos):
            table.setdefault(("nats-tss", proxy, dataset), []).append(
                (NAN, rho, _ABDELFATTAH_SOURCE))
    for proxy, (tau, rho) in _ZICO_NB101.items():
        table.setdefault(("nb101", proxy, "cifar10"), []).append((tau, rho, _ZICO_NB101_SOURCE))
    for key, figure in _OTHERS.items():
        table.setdefault(key, []).append(figure)
    return table


PUBLISHED_ALL = _all_figures()
# Backwards-compatible view: (bench, proxy) -> the first CIFAR-10 figure.
PUBLISHED: dict[tuple[str, str], Figure] = {
    (bench, proxy): figures[0] for (bench, proxy, dataset), figures in PUBLISHED_ALL.items()
    if dataset == "cifar10"}


def published(bench: str, proxy: str, dataset: str = "cifar10") -> Figure | None:
    """The first published (τ, ρ, source) for this benchmark, proxy and dataset, or None."""
    figures = PUBLISHED_ALL.get((bench, proxy, dataset))
    return figures[0] if figures else None


def published_all(bench: str, proxy: str, dataset: str = "cifar10") -> list[Figure]:
    """Every published (τ, ρ, source) for this benchmark, proxy and dataset."""
    return list(PUBLISHED_ALL.get((bench, proxy, dataset), []))
