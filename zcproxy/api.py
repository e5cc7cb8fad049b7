"""The public scoring functions: ``score`` and ``score_many``."""
from __future__ import annotations

import itertools
import math
import operator
import time
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal, Mapping, NamedTuple

import torch
from torch import nn

from .context import (ActivationCheckMode, InputShape, ModelFingerprint, ModelMutatedError,
                      OutputSelector, ProxyContext, ProxyInputError, logits_only,
                      resolve_input_shape)
from .registry import Proxy, ProxyUndefined, get_proxy

NonFinite = Literal["raise", "nan", "keep"]


class NonFiniteScoreError(ArithmeticError):
    """A proxy produced NaN or ±inf; raised unless the caller asked to record it."""


@dataclass(frozen=True)
class ScoreDetails:
    """One proxy's score with what it was computed on (``return_details=True``)."""

    proxy: str
    value: float
    reason: str                 # why the score is undefined (NaN/-inf), else ""
    seconds: float
    input_shape: tuple[int, ...]
    input_shape_source: str     # "inputs", "input_shape argument", "model.pretrained_cfg[...]", ...
    # Activation calls per forward that the proxy's hooks saw (None: it reads no activations,
    # or reused another proxy's), and that a plain forward of the model makes.
    activation_calls_seen: int | None
    activation_calls_traced: int | None


def score(model: nn.Module, proxy: str, *, inputs: torch.Tensor | None = None,
          targets: torch.Tensor | None = None, device: torch.device | str | None = None,
          output: OutputSelector | None = None, input_shape: InputShape = None,
          seed: int = 0, nonfinite: NonFinite = "raise",
          activation_check: ActivationCheckMode = "raise", return_details: bool = False,
          exact: bool = True, **options) -> float | ScoreDetails:
    """Score ``model`` with one proxy; the model is left exactly as it was.

    ``inputs``/``targets`` are a real batch for data-dependent proxies; data-free proxies
    build their own input of ``input_shape``: per sample, taken from ``inputs`` if given, else
    the size the model declares (timm's ``pretrained_cfg``, a ViT's ``img_size``; torchvision
    weights may be passed as ``input_shape``), else 3x32x32 (see
    :func:`~zcproxy.context.resolve_input_shape`).  ``output`` selects the tensor to score from
    what ``forward`` returns (default: the model returns a tensor).  ``nonfinite`` decides what
    a NaN/±inf score does: ``"raise"`` (the default) raises :class:`NonFiniteScoreError`,
    ``"nan"`` warns and returns NaN (for batch runs that record failures), ``"keep"`` returns
    the value as computed (NASWOT's -inf for duplicate images is mathematically right).
    ``activation_check`` decides what happens when a proxy's hooks see fewer activation calls
    than the model makes (functional activations): raise, warn, or nothing.
    ``return_details=True`` returns a :class:`ScoreDetails` instead of the bare value.
    ``exact=False`` takes the fast path (channels-last; bfloat16 NASWOT codes, float32 signed
    Entropic Score): last-bit differences, ranks unchanged on the benchmarks' networks
    (benchmarks/FIDELITY.md).  It is the default of ``correlate`` and the searches; here the
    default stays exact, because a model that ``view``s a convolution's output fails in
    channels-last and the gate was measured on benchmark networks only.  Other keyword
    ``options`` go to the proxy.
    """
    return score_many(model, {proxy: options}, inputs=inputs, targets=targets, device=device,
                      output=output, input_shape=input_shape, seed=seed, nonfinite=nonfinite,
                      activation_check=activation_check, return_details=return_details,
                      exact=exact)[proxy]


def score_many(model: nn.Module, proxies: Iterable[str] | Mapping[str, Mapping[str, object]],
               *, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None,
               device: torch.device | str | None = None, output: OutputSelector | None = None,
               input_shape: InputShape = None, seed: int = 0,
               nonfinite: NonFinite = "raise", activation_check: ActivationCheckMode = "raise",
               return_details: bool = False, exact: bool = True
               ) -> dict[str, float] | dict[str, ScoreDetails]:
    """Score ``model`` with several proxies, sharing prepared copies between them.

    ``proxies`` is a list of names or a mapping name -> options for that proxy; the other
    arguments are :func:`score`'s.
    """
    resolved = resolve_proxies(proxies)
    if nonfinite not in ("raise", "nan", "keep"):
        raise ValueError(f"nonfinite must be 'raise', 'nan' or 'keep', not {nonfinite!r}")
    ctx = make_context(model, inputs=inputs, targets=targets, device=device, output=output,
                       input_shape=input_shape, seed=seed, activation_check=activation_check,
                       exact=exact)
    results = list(score_timed(ctx, resolved, nonfinite))
    if not return_details:
        return {r.name: r.value for r in results}
    traced = ctx.activation_census(False).calls if resolved and any(
        p.needs_forward for p, _ in resolved) else None
    details = {}
    for r in results:
        seen, calls = ctx.activation_calls.get(r.name, (None, traced))
        details[r.name] = ScoreDetails(r.name, r.value, r.reason, r.seconds, ctx.shape(),
                                       ctx.input_shape_source, seen, calls)
    return details


def make_context(model: nn.Module, *, inputs: torch.Tensor | None = None,
                 targets: torch.Tensor | None = None, device: torch.device | str | None = None,
                 output: OutputSelector | None = None, input_shape: InputShape = None,
                 seed: int = 0, activation_check: ActivationCheckMode = "raise",
                 exact: bool = True) -> ProxyContext:
    """The :class:`ProxyContext` of a user's model, after checking that it can be scored."""
    if activation_check not in ("raise", "warn", "off"):
        raise ValueError(f"activation_check must be 'raise', 'warn' or 'off', "
                         f"not {activation_check!r}")
    check_scorable(model, inputs)
    try:  # numpy's integers too: torch.Generator.manual_seed takes only Python ints
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an integer, not {type(seed).__name__} {seed!r}") from None
    shape, source = resolve_input_shape(model, input_shape, inputs)
    return ProxyContext(model=model, device=_resolve_device(model, device),
                        output=output or logits_only, inputs=inputs, targets=targets,
                        input_shape=shape, input_shape_source=source, seed=seed,
                        activation_check=activation_check, verify_unchanged=True, exact=exact)


def check_scorable(model: nn.Module, inputs: torch.Tensor | None = None) -> None:
    """One clear :class:`ProxyInputError` instead of a traceback deep in a proxy, for a model
    without values (meta device) and for inputs the model cannot take (integer images,
    another floating dtype than the model's)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"zcproxy scores a torch.nn.Module, not {type(model).__name__}")
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    meta = next((name for name, t in tensors if t.device.type == "meta"), None)
    if meta is not None:
        raise ProxyInputError(
            f"{type(model).__name__} is on the meta device ({meta} has a shape but no values), "
            "so there is nothing to score: materialise it first, e.g. "
            "model.to_empty(device='cpu') and then initialise its weights, or build it outside "
            "torch.device('meta')")
    if not isinstance(inputs, torch.Tensor):
        return
    if not inputs.is_floating_point():
        raise ProxyInputError(
            f"inputs are {inputs.dtype}; proxies need floating-point inputs prepared as for "
            "training: for uint8 images, inputs.float().div(255) followed by the model's "
            "normalisation (zcproxy.data.cifar10_batch returns such a batch)")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is not None and inputs.dtype != dtype:
        raise ProxyInputError(
            f"inputs are {inputs.dtype} but the model's parameters are {dtype}: pass "
            f"inputs.to({dtype}) (proxies that need another precision cast their own copies)")


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
    A proxy raising :class:`~zcproxy.registry.ProxyUndefined` gives its NaN/-inf and reason.
    With ``ctx.verify_unchanged``, a proxy that changes the caller's model (values, modes,
    gradients, hooks; checked with a :class:`~zcproxy.context.ModelFingerprint` after each)
    raises :class:`~zcproxy.context.ModelMutatedError` naming what it changed."""
    fingerprint = ctx.memo("model-fingerprint", lambda: ModelFingerprint(ctx.model)) \
        if ctx.verify_unchanged else None
    for proxy, opts in proxies:
        start = time.perf_counter()
        ctx.current_proxy = proxy.name
        try:
            value, reason = float(proxy.fn(ctx, **opts)), ""
        except ProxyUndefined as undefined:
            value, reason = undefined.value, undefined.reason
        finally:
            seconds = time.perf_counter() - start
            ctx.current_proxy = None
            changed = fingerprint.changes(ctx.model) if fingerprint is not None else []
            if changed:
                raise ModelMutatedError(
                    f"proxy {proxy.name!r} changed the caller's {type(ctx.model).__name__}: "
                    f"{'; '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}.  Proxies "
                    "must work on copies from ctx.prepared(...), never on ctx.model")
        value = _check_finite(proxy, value, nonfinite, reason)
        yield ScoreResult(proxy.name, value, seconds, reason)


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
