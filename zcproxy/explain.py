"""Per-layer breakdowns of a proxy, so users can see where a score comes from."""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from .api import make_context
from .context import ActivationCheckMode, InputShape, OutputSelector


def explain(model: nn.Module, proxy: str = "entropic", *, device: torch.device | str | None = None,
            output: OutputSelector | None = None, input_shape: InputShape = None,
            seed: int = 0, activation_check: ActivationCheckMode = "raise",
            **options) -> pd.DataFrame:
    """One row per activation call: ``layer`` (module name), ``position`` and the layer's score,
    averaged over repeats.  Their sum is the proxy's score.  Only the Entropic Score and its
    named readings (``entropic_signed``, ``entropic_across``, ...) have a per-layer form so far.

    The table's ``attrs`` say what it was computed on: ``input_shape`` and
    ``input_shape_source`` (resolved as in :func:`zcproxy.score`), and
    ``activation_calls_traced``, the activation calls of a plain forward of the model, which
    the rows must match (otherwise :func:`zcproxy.score`'s activation check raises first)."""
    from .proxies.entropic import VARIANTS, entropic_layers
    if proxy not in VARIANTS:
        raise ValueError(f"explain() supports {', '.join(sorted(VARIANTS))}, not {proxy!r}")
    options = {**options, **VARIANTS[proxy]}
    options.pop("reduce", None)  # explain always shows every layer
    ctx = make_context(model, device=device, output=output, input_shape=input_shape, seed=seed,
                       activation_check=activation_check)
    runs = entropic_layers(ctx, **options)
    rows = [{"position": i, "layer": name,
             "entropy": sum(run[i][1] for run in runs) / len(runs)}
            for i, (name, _) in enumerate(runs[0])]
    table = pd.DataFrame(rows, columns=["position", "layer", "entropy"])
    table.attrs.update(input_shape=ctx.shape(), input_shape_source=ctx.input_shape_source,
                       activation_calls_traced=ctx.activation_census(False).calls)
    return table
