"""Per-layer breakdowns of a proxy, so users can see where a score comes from."""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from .api import _resolve_device
from .context import ProxyContext
from .nasbench.base import OutputSelector, logits_only


def explain(model: nn.Module, proxy: str = "entropic", *, device: torch.device | str | None = None,
            output: OutputSelector | None = None, input_shape: tuple[int, ...] = (3, 32, 32),
            seed: int = 0, **options) -> pd.DataFrame:
    """One row per activation call: ``layer`` (module name), ``position`` and the layer's score,
    averaged over repeats.  Their sum is the proxy's score.  Only the Entropic Score and its
    named readings (``entropic_signed``, ``entropic_across``, ...) have a per-layer form so far."""
    from .proxies.entropic import VARIANTS, entropic_layers
    if proxy not in VARIANTS:
        raise ValueError(f"explain() supports {', '.join(sorted(VARIANTS))}, not {proxy!r}")
    options = {**options, **VARIANTS[proxy]}
    options.pop("reduce", None)  # explain always shows every layer
    ctx = ProxyContext(model=model, device=_resolve_device(model, device),
                       output=output or logits_only, input_shape=tuple(input_shape), seed=seed)
    runs = entropic_layers(ctx, **options)
    rows = [{"position": i, "layer": name,
             "entropy": sum(run[i][1] for run in runs) / len(runs)}
            for i, (name, _) in enumerate(runs[0])]
    return pd.DataFrame(rows, columns=["position", "layer", "entropy"])
