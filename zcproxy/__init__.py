"""zcproxy: zero-cost proxies for training-free neural architecture search.

Public API::

    import zcproxy
    zcproxy.score(model, "entropic")                  # one proxy -> float
    zcproxy.score_many(model, ["logsynflow", "entropic"])
    zcproxy.available_proxies()
    @zcproxy.register_proxy("my_proxy") ...           # add your own
"""
from . import data
from .api import NonFiniteScoreError, ScoreDetails, score, score_many
from .context import (ActivationMismatchError, ModelMutatedError, ProxyBatchError, ProxyContext,
                      ProxyInputError, last_of_tuple, logits_only)
from .explain import explain
from .registry import (Proxy, ProxyOptionError, ProxyUndefined, UnknownProxyError,
                       available_proxies, get_proxy, proxy_info, register_proxy)
from .surgery import NoActivationsError, Recipe

__all__ = [
    "data", "score", "score_many", "available_proxies", "register_proxy", "get_proxy", "proxy_info",
    "explain", "Proxy", "ProxyContext", "Recipe", "ScoreDetails", "last_of_tuple", "logits_only",
    "NonFiniteScoreError", "ProxyOptionError", "ProxyUndefined", "ProxyInputError",
    "ProxyBatchError", "NoActivationsError", "UnknownProxyError",
    "ActivationMismatchError", "ModelMutatedError",
]
__version__ = "0.1.0"
