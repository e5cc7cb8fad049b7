"""The public scoring functions: ``score`` and ``score_many``."""
from __future__ import annotations

import math
import time
import warnings
from typing import Iterable, Iterator, Literal, Mapping, NamedTuple

import torch
from torch import nn

from .context import ProxyContext
from .nasbench.base import OutputSelector, logits_only
from .registry import Proxy, ProxyUndefined, get_proxy

NonFinite = Literal["raise", "nan", "keep"]


class NonFiniteScoreError(ArithmeticError):
    """A proxy produced NaN or ±inf; raised unless the caller asked to record it."""


def score(model: nn.Module, proxy: str, *, inputs: torch.Tensor | None = None,
          targets: torch.Tensor | None = None, device: torch.device | str | None = None,
          output: OutputSelector | None = None, input_shape: tuple[int, ...] = (3, 32, 32),
          seed: int = 0, nonfinite: NonFinite = "raise", **options) -> float:
    """Score ``model`` with one proxy; the model is left exactly as it was.

    ``inputs``/``targets`` are a real batch for data-dependent proxies; data-free proxies
    build their own input of ``input_shape`` (per sample, taken from ``inputs`` if given).
    ``output`` selects the tensor to score from what ``forward`` returns (default: the model
    returns a tensor).  ``nonfinite`` decides what a NaN/±inf score does: ``"raise"`` (the
    default) raises :class:`NonFiniteScoreError`, ``"nan"`` warns and returns NaN (for batch
    runs that record failures), ``"keep"`` returns the value as computed (NASWOT's -inf for
    duplicate images is mathematically right).  Other keyword ``options`` go to the proxy.
    """
    return score_many(model, {proxy: options}, inputs=inputs, targets=targets, device=device,
                      output=output, input_shape=input_shape, seed=seed,
                      nonfinite=nonfinite)[proxy]


def score_many(model: nn.Module, proxies: Iterable[str] | Mapping[str, Mapping[str, object]],
               *, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None,
               device: torch.device | str | None = None, output: OutputSelector | None = None,
               input_shape: tuple[int, ...] = (3, 32, 32), seed: int = 0,
               nonfinite: NonFinite = "raise") -> dict[str, float]:
    """Score ``model`` with several proxies, sharing prepared copies between them.

    ``proxies`` is a list of names or a mapping name -> options for that proxy.
    """
    resolved = resolve_proxies(proxies)
    if nonfinite not in ("raise", "nan", "keep"):
        raise ValueError(f"nonfinite must be 'raise', 'nan' or 'keep', not {nonfinite!r}")
    ctx = ProxyContext(model=model, device=_resolve_device(model, device),
                       output=output or logits_only, inputs=inputs, targets=targets,
                       input_shape=tuple(input_shape), seed=seed)
    return {r.name: r.value for r in score_timed(ctx, resolved, nonfinite)}


class ScoreResult(NamedTuple):
    """One proxy's score on one model, how long it took, and why it is undefined (if it is)."""

    name: str
    value: float
    seconds: float
    reason: str = ""


def score_timed(ctx: ProxyContext, proxies: list[tuple[Proxy, dict]], nonfinite: NonFinite
                ) -> Iterator[ScoreResult]:
    """A :class:`ScoreResult` for each proxy on one shared context.  Work shared between
    proxies (a prepared copy, Synflow's backward) is charged to the first proxy that needs it.
    A proxy raising :class:`~zcproxy.registry.ProxyUndefined` gives its NaN/-inf and reason."""
    for proxy, opts in proxies:
        start = time.perf_counter()
        try:
            value, reason = float(proxy.fn(ctx, **opts)), ""
        except ProxyUndefined as undefined:
            value, reason = undefined.value, undefined.reason
        value = _check_finite(proxy, value, nonfinite, reason)
        yield ScoreResult(proxy.name, value, time.perf_counter() - start, reason)


def resolve_proxies(proxies: Iterable[str] | Mapping[str, Mapping[str, object]]
                    ) -> list[tuple[Proxy, dict]]:
    """Look up proxies and check their options before any work starts."""
    requests = dict(proxies) if isinstance(proxies, Mapping) else {p: {} for p in proxies}
    resolved = [(get_proxy(name), dict(opts)) for name, opts in requests.items()]
    for proxy, opts in resolved:
        _check_options(proxy, opts)
    return resolved


def _check_options(proxy: Proxy, opts: dict) -> None:
    accepted = proxy.accepted_options()
    unknown = set(opts) - accepted if accepted is not None else set()
    if unknown:
        raise TypeError(f"proxy {proxy.name!r} takes no option(s) {sorted(unknown)}; "
                        f"it accepts {sorted(accepted) or 'none'}")


def _check_finite(proxy: Proxy, value: float, nonfinite: NonFinite, reason: str = "") -> float:
    if math.isfinite(value) or nonfinite == "keep":
        return value
    message = f"proxy {proxy.name!r} produced a non-finite score ({value})"
    if reason:
        message = f"proxy {proxy.name!r} is undefined on this model ({value}): {reason}"
    if nonfinite == "raise":
        raise NonFiniteScoreError(message + "; pass nonfinite='nan' to record it as NaN")
    warnings.warn(message + "; recorded as NaN", RuntimeWarning, stacklevel=3)
    return math.nan


def _resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
