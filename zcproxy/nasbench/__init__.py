"""NAS benchmarks: architectures, their trained accuracy, and their untrained networks."""
from __future__ import annotations

import os

from .base import Benchmark, BenchmarkDataMissing, last_of_tuple, logits_only

BENCHMARKS = ("nats-sss", "nats-tss", "nb101")


def get_benchmark(name: str, *, data_dir: str | os.PathLike | None = None,
                  official_path: str | os.PathLike | None = None) -> Benchmark:
    """An adapter by name; nothing is read until it is used."""
    if name == "nats-sss":
        from .nats import NatsSss
        return NatsSss(data_dir=data_dir, official_path=official_path)
    if name == "nats-tss":
        from .nats import NatsTss
        return NatsTss(data_dir=data_dir, official_path=official_path)
    if name == "nb101":
        from .nb101 import NB101
        return NB101(data_dir=data_dir, official_path=official_path)
    raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")


__all__ = ["Benchmark", "BenchmarkDataMissing", "BENCHMARKS", "get_benchmark",
           "last_of_tuple", "logits_only"]
