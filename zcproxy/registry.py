"""The proxy registry: each proxy declares what it needs, the scorer provides it.

A proxy is a plain function ``fn(ctx, **options) -> float`` registered with
:func:`register_proxy`.  It reads the caller's model only through ``ctx`` (a
:class:`~zcproxy.context.ProxyContext`), which hands out prepared *copies*; so a proxy written
by a user outside the package gets the same guarantees (no mutation, seeded, device-aware)
as the built-in ones.  Registration is the only thing importing a proxy module does.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

ProxyFn = Callable[..., float]


@dataclass(frozen=True)
class Proxy:
    """A registered proxy and what it declares about itself."""

    name: str
    fn: ProxyFn = field(repr=False, compare=False)
    needs_data: bool = False
    higher_is_better: bool = True
    description: str = ""
    # False for structural proxies that never run the network (e.g. #params).
    needs_forward: bool = True
    # A trivial structural measure reported beside the proxies, as the bar they must clear.
    baseline: bool = False
    # Bumped whenever the proxy's definition (its default reading) changes, so that a journal
    # never mixes scores of two definitions under one name (runs record the versions they used).
    # Journals hold the benchmark adapters' networks: a fix confined to layers none of them
    # builds (checked on them and on the model zoo, and said in the commit) keeps the version.
    # A change that keeps some old scores bumps it and names those in ``carries_over``.
    version: str = "1"
    # For a proxy whose options can make it read no image (a recipe on Gaussian inputs):
    # whether it reads the image batch under the given options; None means ``needs_data``.
    reads_images_with: Callable[[Mapping[str, Any]], bool] | None = field(
        default=None, repr=False, compare=False)
    # For a new version that changes the value of only some networks: {older version:
    # predicate(score, error) of a journal row of that version}, true where the row is provably
    # what the current definition gives (e.g. a looser undefined-limit keeps every finite
    # score).  Such rows are reused as the current version, and the runner says so; the others
    # are rescored.
    carries_over: Mapping[str, Callable[[float, str], bool]] = field(
        default_factory=dict, repr=False, compare=False)

    def reads_images(self, options: Mapping[str, Any] | None = None) -> bool:
        """Whether a score under ``options`` depends on the real-image batch: what a table
        must label when that batch was not the networks' own dataset."""
        if self.reads_images_with is None or not self.needs_data:
            return self.needs_data
        return bool(self.reads_images_with(dict(options or {})))

    def accepted_options(self) -> set[str] | None:
        """Keyword options ``fn`` accepts beyond ``ctx``; None if it takes ``**kwargs``."""
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return {p.name for p in params}


_REGISTRY: dict[str, Proxy] = {}


class ProxyOptionError(ValueError):
    """An option value a proxy cannot take on any network (out of range, not one of its
    choices): a mistake in the call, not a property of the architecture.  A batch run stops on
    it with the message instead of recording it as every architecture's failure."""


class ProxyUndefined(ArithmeticError):
    """Raised by a proxy whose score is undefined on this network, with the reason.

    Examples: a kernel that cannot be inverted because the output does not depend on the input
    (NAS-Bench-201 cells with no path from input to output), a log of zero, a variance of zero.
    The scorer turns it into ``value`` (NaN by default, or -inf where the limit is meaningful)
    and keeps ``reason`` beside it, so a batch run records *why* instead of a traceback, and one
    proxy's undefined score never stops the others.
    """

    def __init__(self, reason: str, value: float = float("nan")):
        super().__init__(reason)
        self.reason = reason
        self.value = float(value)


class UnknownProxyError(KeyError):
    """A proxy name that is not registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def register_proxy(name: str, *, needs_data: bool = False, higher_is_better: bool = True,
                   description: str = "", needs_forward: bool = True,
                   baseline: bool = False, replace: bool = False, version: str = "1",
                   reads_images_with: Callable[[Mapping[str, Any]], bool] | None = None,
                   carries_over: Mapping[str, Callable[[float, str], bool]] | None = None
                   ) -> Callable[[ProxyFn], ProxyFn]:
    """Decorator that registers ``fn(ctx, **options) -> float`` under ``name``.

    ``reads_images_with(options)``, for a ``needs_data`` proxy some of whose options read no
    image, says whether the batch is read under ``options`` (:meth:`Proxy.reads_images`).
    ``carries_over`` names the journal rows of older versions that the current one keeps
    unchanged (:attr:`Proxy.carries_over`).

    Registering a name twice is an error unless ``replace=True``, so that two plug-ins cannot
    silently shadow each other.
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"proxy names are alphanumeric with - or _, got {name!r}")

    def decorate(fn: ProxyFn) -> ProxyFn:
        if name in _REGISTRY and not replace:
            raise ValueError(f"a proxy named {name!r} is already registered; pass replace=True")
        _REGISTRY[name] = Proxy(name, fn, needs_data, higher_is_better,
                                description or (fn.__doc__ or "").strip().split("\n")[0],
                                needs_forward, baseline, version, reads_images_with,
                                dict(carries_over or {}))
        return fn

    return decorate


def unregister_proxy(name: str) -> None:
    """Remove a proxy (mainly for tests and notebooks that register throw-away proxies)."""
    get_proxy(name)
    del _REGISTRY[name]


def get_proxy(name: str) -> Proxy:
    _load_builtin_proxies()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownProxyError(
            f"unknown proxy {name!r}; available: {', '.join(available_proxies())}") from None


def available_proxies() -> list[str]:
    """Names of every registered proxy, sorted."""
    _load_builtin_proxies()
    return sorted(_REGISTRY)


def proxy_versions(names: Sequence[str]) -> dict[str, str]:
    """The current definition version of each named proxy this process knows: what a recorded
    version is compared with (plug-ins that only worker processes import are left out, and
    their recorded rows are taken as they are)."""
    versions = {}
    for name in names:
        try:
            versions[name] = get_proxy(name).version
        except KeyError:
            pass
    return versions


def proxy_info() -> list[Proxy]:
    """Every registered proxy with its metadata, sorted by name."""
    return [get_proxy(n) for n in available_proxies()]


def _load_builtin_proxies() -> None:
    # Imported lazily so that `import zcproxy` stays cheap; importing registers them.
    from . import proxies  # noqa: F401
