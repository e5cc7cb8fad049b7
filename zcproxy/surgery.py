"""Every model transformation a proxy needs, in one place.

Proxies never touch the caller's model: :func:`prepare` deep-copies it and applies a
:class:`Recipe` (suppress normalisation, swap activations for ReLU, re-initialise with a seed,
take |weights|, cast, move, set the mode).  :func:`capture_activations` is the single way to
observe "the activations" of any network, via forward hooks on activation modules.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
)
if hasattr(nn, "RMSNorm"):
    NORM_TYPES += (nn.RMSNorm,)

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.CELU,
    nn.SELU, nn.PReLU, nn.Mish, nn.Softplus, nn.RReLU, nn.Tanhshrink,
)
# Activation classes of other libraries (timm, HF) that do not subclass torch's own; matched by
# class name so that zcproxy needs none of them installed.  Gates (Sigmoid, Hardsigmoid,
# Softmax) are deliberately absent: replacing a gate by ReLU changes what the block computes.
ACTIVATION_NAMES = frozenset({
    "GELU", "GELUTanh", "QuickGELU", "Swish", "SiLU", "HardSwish", "Hardswish", "HardMish",
    "Mish", "ReLU6", "LeakyReLU", "ELU", "PReLU", "StarReLU", "SquaredReLU",
})


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES)


def is_activation(module: nn.Module) -> bool:
    return isinstance(module, ACTIVATION_TYPES) or type(module).__name__ in ACTIVATION_NAMES


@dataclass(frozen=True)
class Recipe:
    """How to prepare a copy of a model for one proxy; hashable so copies can be shared."""

    suppress_norm: bool = False
    relu: bool = False
    reinit_seed: int | None = None
    absolute: bool = False
    dtype: torch.dtype | None = None
    train: bool | None = None  # None keeps the caller's mode


def prepare(model: nn.Module, recipe: Recipe, device: torch.device | str | None = None) -> nn.Module:
    """A transformed deep copy of ``model``; ``model`` itself is never modified."""
    target = None if device is None else torch.device(device)
    if recipe.reinit_seed is None and _fusable(model):
        # One walk: norms and activations are replaced instead of copied, every tensor is
        # copied straight to its final device, dtype and sign.  Same values as the step-by-step
        # path below (casts and abs are exact and commute), at half the cost for a NATS network.
        clone = _clone(model, {}, _Surgery(recipe, target))
    else:
        clone = clone_module(model)
        if recipe.suppress_norm or recipe.relu:
            replace_modules(clone, _Surgery(recipe, target).replacement)
        if target is not None and _needs_move(clone, target):
            clone.to(target)
        if recipe.reinit_seed is not None:
            reinitialise(clone, recipe.reinit_seed)
        if recipe.absolute:
            absolute_(clone)
        if recipe.dtype is not None:
            clone.to(recipe.dtype)
        for p in clone.parameters():  # the one-walk copy makes fresh parameters, without grads
            p.grad = None
    if recipe.train is not None:
        clone.train(recipe.train)
    return clone


@dataclass(frozen=True)
class _Surgery:
    """A recipe's structural and per-tensor parts, applied while cloning."""

    recipe: Recipe
    device: torch.device | None

    def replacement(self, module: nn.Module) -> nn.Module | None:
        if self.recipe.suppress_norm and is_norm(module):
            return nn.Identity()
        if self.recipe.relu and _needs_relu(module):
            return nn.ReLU()
        return None

    def copy(self, t: torch.Tensor | None, memo: dict, is_parameter: bool
             ) -> torch.Tensor | None:
        """What .to(device), absolute_ (parameters only) and .to(dtype) (floating point
        only) would make of the deep copy of ``t``, as one copy."""
        if t is None:
            return None
        if id(t) in memo:  # an attribute aliasing a parameter stays an alias, as in deepcopy
            return memo[id(t)]
        dtype = self.recipe.dtype if self.recipe.dtype is not None and t.is_floating_point() \
            else t.dtype
        out = t.detach().to(device=self.device or t.device, dtype=dtype, copy=True)
        if is_parameter:
            if self.recipe.absolute:
                out.abs_()
            out = nn.Parameter(out, requires_grad=t.requires_grad)
        memo[id(t)] = out
        return out


def _fusable(model: nn.Module) -> bool:
    """Can :func:`prepare` copy and transform in one walk?  Only for standard modules and
    tensors, none sharing storage with another (deepcopy would keep such sharing)."""
    storages: set[int] = set()
    for m in model.modules():
        if not _is_plain_module(type(m)) or type(m)._apply is not nn.Module._apply:
            return False
        for kind, tensors in ((nn.Parameter, m._parameters), (torch.Tensor, m._buffers)):
            for t in tensors.values():
                if t is None:
                    continue
                if type(t) is not kind or t.__dict__ or t.is_complex() or (
                        kind is torch.Tensor and (t.requires_grad or t.grad is not None)):
                    return False
                key = t.untyped_storage().data_ptr()
                if key in storages and t.numel():
                    return False  # the same tensor twice is also refused: rare, and safe
                storages.add(key)
    return True


def _needs_move(model: nn.Module, device: torch.device) -> bool:
    # .to() walks every module even when nothing moves: 0.7 ms of a 126-module NATS network.
    return any(t.device != device
               for t in itertools.chain(model.parameters(), model.buffers()))


def _needs_relu(module: nn.Module) -> bool:
    # A plain nn.ReLU is kept (re-creating the ~50 of a NATS network cost 1 ms per copy); an
    # in-place one is replaced, because once a norm before it is an Identity it would overwrite
    # the norm's input, which the network may still read (a residual branch).
    return is_activation(module) and not (type(module) is nn.ReLU and not module.inplace)


def clone_module(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, faster for plain module trees.

    Proxies copy every network, and for a 500-module NATS network ``copy.deepcopy`` spends most
    of its time in its generic reduce/reconstruct machinery, on the dozen empty hook dicts and
    the empty set of every module.  A module that pickles the standard ``nn.Module`` way is
    rebuilt here exactly as deepcopy rebuilds it (``cls.__new__``, its state copied with one
    shared memo, the class's ``__setstate__``), only with empty dicts, sets of names and the
    child-module dict copied directly; anything else (a custom ``__deepcopy__``, ``__reduce__``
    or ``__getstate__``) goes through ``copy.deepcopy`` itself.  Shared submodules and tensors
    stay shared in the copy, as with deepcopy.
    """
    return _clone(model, {}, None)


_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes, type})
_PLAIN_DICTS = (dict, OrderedDict)


@functools.lru_cache(maxsize=1024)
def _is_plain_module(cls: type) -> bool:
    return (getattr(cls, "__deepcopy__", None) is None
            and cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__
            and cls.__getstate__ is nn.Module.__getstate__
            and not hasattr(cls, "__getnewargs_ex__") and not hasattr(cls, "__getnewargs__"))


def _clone(module: nn.Module, memo: dict, surgery: _Surgery | None) -> nn.Module:
    if id(module) in memo:
        return memo[id(module)]
    cls = type(module)
    if not _is_plain_module(cls):
        return copy.deepcopy(module, memo)
    new = cls.__new__(cls)
    memo[id(module)] = new
    state = {}
    for key, value in module.__dict__.items():
        if key == "_compiled_call_impl":  # dropped by nn.Module.__getstate__
            continue
        kind = type(value)
        if kind in _ATOMIC:
            state[key] = value
        elif kind in _PLAIN_DICTS and id(value) not in memo:
            if key == "_modules":
                copied = kind((k, _clone_child(m, memo, surgery)) for k, m in value.items())
            elif surgery is not None and key in ("_parameters", "_buffers"):
                copied = kind((k, surgery.copy(t, memo, key == "_parameters"))
                              for k, t in value.items())
            elif value:
                copied = kind((k, copy.deepcopy(v, memo)) for k, v in value.items())
            else:
                copied = kind()
            memo[id(value)] = copied
            state[key] = copied
        elif kind is set and id(value) not in memo and all(type(v) in _ATOMIC for v in value):
            state[key] = memo[id(value)] = set(value)  # e.g. _non_persistent_buffers_set
        else:
            state[key] = copy.deepcopy(value, memo)
    new.__setstate__(state)
    return new


def _clone_child(child: nn.Module | None, memo: dict, surgery: _Surgery | None
                 ) -> nn.Module | None:
    if child is None:
        return None
    if surgery is not None and id(child) not in memo:
        new = surgery.replacement(child)
        if new is not None:
            return new  # replace_modules gives each occurrence of a shared module its own
    return _clone(child, memo, surgery)


def replace_modules(model: nn.Module, replacement: Callable[[nn.Module], nn.Module | None]) -> int:
    """Swap, in place, every submodule for which ``replacement`` returns a module.

    Works on any container (Sequential, ModuleList, ModuleDict, attributes) because it goes
    through ``named_children``/``setattr``; returns how many modules were replaced.
    """
    count = 0
    for name, child in list(model.named_children()):
        new = replacement(child)
        if new is not None:
            setattr(model, name, new)
            count += 1
        else:
            count += replace_modules(child, replacement)
    return count


def reinitialise(model: nn.Module, seed: int) -> None:
    """Re-draw every parameter with its module's default initialiser, reproducibly.

    The global RNG is forked, so the caller's random state is the same afterwards.
    """
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and any(p is not None for p in module._parameters.values()):
                reset()


def absolute_(model: nn.Module) -> None:
    """Replace every parameter by its absolute value, in place."""
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()


def activation_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every activation module of ``model`` in registration order, with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if is_activation(m)]


class NoActivationsError(ValueError):
    """The model has no activation modules for a proxy that reads activations."""


@contextlib.contextmanager
def capture_activations(model: nn.Module, on_output: Callable[[str, torch.Tensor], None]
                        ) -> Iterator[int]:
    """Call ``on_output(name, tensor)`` with each activation module's output during forwards.

    A module applied several times fires once per application, so weight-shared activations
    count as separate layers, as they are in the computation.  Hooks are removed on exit even
    if the forward fails.  Yields the number of hooked modules.
    """
    mods = activation_modules(model)
    if not mods:
        raise NoActivationsError(
            f"{type(model).__name__} has no activation modules (nn.ReLU, nn.GELU, ...); "
            "activations applied functionally (F.relu) are invisible to zcproxy's hooks")
    handles = [m.register_forward_hook(_hook(name, on_output)) for name, m in mods]
    try:
        yield len(mods)
    finally:
        for h in handles:
            h.remove()


def _hook(name: str, on_output: Callable[[str, torch.Tensor], None]):
    def hook(_module, _inputs, output):
        on_output(name, output)
    return hook


def weight_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Convolution and linear layers: the parameters pruning-style proxies sum over."""
    for m in model.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m.weight is not None:
            yield m
