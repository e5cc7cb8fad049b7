"""Every model transformation a proxy needs, in one place.

Proxies never touch the caller's model: :func:`prepare` deep-copies it and applies a
:class:`Recipe` (suppress normalisation, swap activations for ReLU, re-initialise with a seed,
take |weights|, cast, move, set the mode).  :func:`capture_activations` is the single way to
observe "the activations" of any network, via forward hooks on activation modules, and
:func:`activation_census` counts the activation calls of a forward at the aten level, so that
activations the hooks cannot see (functional ``F.gelu``, or an activation lost in surgery) are
detected instead of silently scored as a smaller network.

Fused normalisation + activation modules (timm's ``BatchNormAct2d``, ``GroupNormAct``,
``LayerNormAct``, ... used inside ``ConvNormAct`` and most of timm's CNNs and hybrids) are norm
subclasses that apply their ``drop`` and ``act`` children after normalising.  Suppressing the
norm keeps those children (:class:`SuppressedNorm`); swapping activations reaches the ``act``
child like any other activation module.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import itertools
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

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


# Normalisation classes of other libraries that do not subclass torch's norms, matched by the
# names in their class hierarchy (so subclasses such as timm's RmsNormAct count too): timm's
# RMS and "simple" norms, torchvision's and timm's frozen BatchNorms.
NORM_NAMES = frozenset({
    "RmsNorm", "RmsNorm2d", "RmsNormFp32", "RmsNorm2dFp32", "SimpleNorm", "SimpleNorm2d",
    "SimpleNormFp32", "SimpleNorm2dFp32", "FrozenBatchNorm2d", "FrozenBatchNormAct2d",
})


def is_norm(module: nn.Module) -> bool:
    return _is_norm_class(type(module))


@functools.lru_cache(maxsize=1024)
def _is_norm_class(cls: type) -> bool:
    return issubclass(cls, NORM_TYPES) or any(c.__name__ in NORM_NAMES for c in cls.__mro__)


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
            replace_modules(clone, _Surgery(recipe, target).replace_in_place)
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

    def replacement(self, module: nn.Module, keep: Callable[[nn.Module], nn.Module]
                    ) -> nn.Module | None:
        """What stands for ``module`` in the copy, or None to keep (a copy of) it.  ``keep``
        gives the transformed copy of a child that a suppressed fused norm keeps."""
        if self.recipe.suppress_norm and is_norm(module):
            return without_norm(module, keep)
        if self.recipe.relu and _needs_relu(module):
            return nn.ReLU()
        return None

    def replace_in_place(self, module: nn.Module) -> nn.Module | None:
        """:meth:`replacement` for the step-by-step path, where ``module`` is already a copy."""
        return self.replacement(module, self._transform_in_place)

    def _transform_in_place(self, module: nn.Module) -> nn.Module:
        new = self.replace_in_place(module)
        if new is not None:
            return new
        replace_modules(module, self.replace_in_place)
        return module

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
        new = surgery.replacement(child, lambda c: _clone_child(c, memo, surgery))
        if new is not None:
            return new  # replace_modules gives each occurrence of a shared module its own
    return _clone(child, memo, surgery)


class SuppressedNorm(nn.Sequential):
    """What is left of a fused normalisation + activation module once its normalisation is
    suppressed: the children it applies after normalising (timm: ``drop`` then ``act``), in that
    order and under their own names, so ``bn1.act`` is still ``bn1.act`` for hooks and tables."""


def norm_tail(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The child modules a normalisation module applies after normalising, in order.

    Recognised by behaviour rather than by class name: a norm (see :func:`is_norm`) with child
    modules is a fused one, and its children are what it applies to the normalised tensor.  This
    holds for every fused norm of timm 1.0 (``BatchNormAct2d``, ``SyncBatchNormAct``,
    ``FrozenBatchNormAct2d``, ``GroupNormAct``, ``GroupNorm1Act``, ``LayerNormAct``,
    ``LayerNormAct2d``, ``RmsNormAct`` and their Fp32 variants, timm/layers/norm_act.py), all
    of which apply ``self.drop`` then ``self.act``.  They register them in that order, except
    ``SyncBatchNormAct`` (``convert_sync_batchnorm`` sets ``act`` first), hence ``drop`` first.
    Plain norms have no children and an empty tail.
    """
    children = [(name, child) for name, child in module.named_children() if child is not None]
    return sorted(children, key=lambda item: item[0] != "drop")  # stable: otherwise as registered


def without_norm(module: nn.Module, keep: Callable[[nn.Module], nn.Module] | None = None
                 ) -> nn.Module:
    """The stand-in for a suppressed normalisation module: ``nn.Identity`` for a plain norm; for
    a fused norm + activation module, a :class:`SuppressedNorm` of its :func:`norm_tail`, so
    that suppressing the norm never drops the activation applied after it.

    ``keep`` maps each kept child to what goes into the stand-in (:func:`prepare` passes its
    transformed copy; default: the child itself).  ``module`` is never modified.  Kept in-place
    children (timm's fused norms default to ``inplace=True`` activations) become out-of-place
    copies: once the norm is gone they would overwrite the norm's input, which the network may
    still read (the shortcut of a pre-activation block, or autograd for Synflow's backward).
    """
    tail = norm_tail(module)
    if not tail:
        return nn.Identity()
    kept = OrderedDict()
    for name, child in tail:
        new = keep(child) if keep is not None else child
        if getattr(new, "inplace", False) is True:
            if new is child:
                new = clone_module(child)
            new.inplace = False
        kept[name] = new
    return SuppressedNorm(kept)


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

    The global RNG is forked, so the caller's random state is the same afterwards.  The values
    depend on the dtype and memory layout drawn in (torch's initialisers fill in memory order,
    and draw other numbers in float32): to compute in another dtype or layout with the same
    weights, draw within :func:`drawn_in`.
    """
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset) and any(p is not None for p in module._parameters.values()):
                reset()


@contextlib.contextmanager
def drawn_in(model: nn.Module, dtype: torch.dtype):
    """Within the block, every floating tensor of ``model`` is ``dtype`` and contiguous, so that
    :func:`reinitialise` draws exactly what it draws for such a copy; afterwards each goes back
    to its dtype and memory format (values rounded).  The fast path computes the Entropic
    Score of float64 draws in float32 channels-last this way, at the cost of a cast per tensor
    (a second prepared copy cost ~10 ms per NATS network in Python overhead)."""
    tensors = [t for t in itertools.chain(model.parameters(), model.buffers())
               if t.is_floating_point()]
    layouts = [(t.dtype, torch.channels_last if t.dim() == 4 and not t.is_contiguous()
                and t.is_contiguous(memory_format=torch.channels_last)
                else torch.contiguous_format) for t in tensors]
    with torch.no_grad():
        for t in tensors:
            t.data = t.data.to(dtype, memory_format=torch.contiguous_format)
        try:
            yield model
        finally:
            for t, (was, layout) in zip(tensors, layouts):
                t.data = t.data.to(was, memory_format=layout)


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


# (model, activation-hook calls, forward calls of the model, the model's mode at the first one)
ActivationCheck = Callable[[nn.Module, int, int, bool], None]
# model -> a callable that returns its check, or None once the check's owner is gone
_ACTIVATION_CHECKS: weakref.WeakKeyDictionary[
    nn.Module, Callable[[], ActivationCheck | None]] = weakref.WeakKeyDictionary()


def check_activation_calls(model: nn.Module, check: ActivationCheck) -> None:
    """Have ``check(model, hook_calls, forwards, training)`` called at the end of every
    :func:`capture_activations` block on ``model`` that ran ``model`` itself and ended normally.

    :class:`~zcproxy.context.ProxyContext` registers every copy it prepares, so any proxy that
    reads activations through :func:`capture_activations` is checked against the activation
    calls of the caller's model (see :func:`activation_census`) without doing anything itself.

    A bound method is held weakly (``weakref.WeakMethod``): the registry is keyed weakly by
    ``model``, but its values are strong, and a context's method refers to the context, which
    holds the caller's model and its shared copies.  Held strongly, that cycle through the
    registry kept every scored model alive for the life of the process (about 50 MB per
    ESFormer candidate at 224 px, 23 GB after 1,500 candidates of a search).  A plain function
    is held as it is, so it must not refer to ``model``.
    """
    _ACTIVATION_CHECKS[model] = weakref.WeakMethod(check) if inspect.ismethod(check) else \
        (lambda: check)


@contextlib.contextmanager
def capture_activations(model: nn.Module, on_output: Callable[[str, torch.Tensor], None]
                        ) -> Iterator[int]:
    """Call ``on_output(name, tensor)`` with each activation module's output during forwards.

    A module applied several times fires once per application, so weight-shared activations
    count as separate layers, as they are in the computation.  Hooks are removed on exit even
    if the forward fails.  Yields the number of hooked modules.  If a check is registered for
    ``model`` (:func:`check_activation_calls`), it runs when the block ends normally.
    """
    mods = activation_modules(model)
    if not mods:
        raise NoActivationsError(
            f"{type(model).__name__} has no activation modules (nn.ReLU, nn.GELU, ...); "
            "activations applied functionally (F.relu) are invisible to zcproxy's hooks")
    calls = [0]
    handles = [m.register_forward_hook(_hook(name, on_output, calls)) for name, m in mods]
    registered = _ACTIVATION_CHECKS.get(model)
    check = registered() if registered is not None else None  # None: its context is gone
    modes: list[bool] = []  # the model's mode at each of its forward calls
    if check is not None:
        handles.append(model.register_forward_pre_hook(lambda m, _: modes.append(m.training)))
    try:
        yield len(mods)
    finally:
        for h in handles:
            h.remove()
    if check is not None and modes:
        check(model, calls[0], len(modes), modes[0])


def _hook(name: str, on_output: Callable[[str, torch.Tensor], None], calls: list[int]):
    def hook(_module, _inputs, output):
        calls[0] += 1
        on_output(name, output)
    return hook


aten = torch.ops.aten
# Activation functions at the aten level, where functional calls (F.gelu, torch.relu,
# x.relu_()) and module calls look the same.  ReLU6 and Hardtanh are aten.hardtanh, SELU is
# aten.elu; gates (sigmoid, hardsigmoid, softmax, tanh) are not activations here, as in
# ACTIVATION_TYPES.
ACTIVATION_OPS = tuple(
    getattr(aten, name).default for name in (
        "relu", "relu_", "gelu", "gelu_", "silu", "silu_", "hardswish", "hardswish_",
        "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_", "celu", "celu_",
        "mish", "mish_", "threshold", "threshold_", "_prelu_kernel", "rrelu_with_noise",
        "rrelu_with_noise_")
    if hasattr(aten, name))
ACTIVATION_PACKETS = frozenset(f.overloadpacket for f in ACTIVATION_OPS)


@dataclass(frozen=True)
class ActivationCensus:
    """The activation calls of one forward pass, as proxies' hooks can and cannot see them.

    ``module_calls`` counts applications of activation modules (what
    :func:`capture_activations` hooks see on an intact copy); ``functional`` counts aten
    activation ops executed outside any activation module (``F.gelu`` in a block's
    ``forward``), which no hook sees; ``sites`` says where the first of those were called.
    """

    module_calls: int
    functional: int = 0
    sites: tuple[str, ...] = ()

    @property
    def calls(self) -> int:
        """Every activation call of the forward pass."""
        return self.module_calls + self.functional


class _FunctionalActivations(TorchDispatchMode):
    """Counts aten activation ops while no activation module is running."""

    def __init__(self):
        super().__init__()
        self.inside = 0  # activation modules currently running
        self.count = 0
        self.sites: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.inside and getattr(func, "overloadpacket", None) in ACTIVATION_PACKETS:
            self.count += 1
            if len(self.sites) < 5:
                self.sites.append(f"{func.overloadpacket.__name__} at {_caller()}")
        return func(*args, **(kwargs or {}))


def _caller() -> str:
    """file:line of the innermost frame outside torch and this module (where F.gelu was called)."""
    import os
    import sys
    frame = sys._getframe(2)
    torch_dir = os.path.dirname(torch.__file__)
    while frame is not None and (frame.f_code.co_filename.startswith(torch_dir)
                                 or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} ({frame.f_code.co_name})"


def activation_census(model: nn.Module, run: Callable[[], object]) -> ActivationCensus:
    """Count the activation calls while ``run()`` runs ``model`` (for example one forward).

    Module calls are counted by hooks, functional ones by an aten-level dispatch mode that is
    switched off while an activation module runs, so each call counts once: a ``GELUTanh``
    module calling ``F.gelu`` is one module call, and a ``Swish`` module computing
    ``x * sigmoid(x)`` (no aten activation op) is still one.  One pass costs one forward with
    a Python-level dispatch of each op.
    """
    counter = _FunctionalActivations()
    calls = 0

    def enter(_module, _inputs):
        counter.inside += 1

    def leave(_module, _inputs, _output):
        nonlocal calls
        counter.inside -= 1
        calls += 1

    handles = []
    for _, m in activation_modules(model):
        handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
    try:
        with counter:
            run()
    finally:
        for h in handles:
            h.remove()
    return ActivationCensus(calls, counter.count, tuple(counter.sites))


# A module attribute, set by whoever builds a network (the benchmark adapters), copied with the
# module by prepare/clone_module.  See mark_chain_links.
CHAIN_LINK = "_zcproxy_chain_link"


def mark_chain_links(modules: Iterable[nn.Module]) -> None:
    """Declare ``modules`` links of a chain: the network's forward feeds each one's output to
    the next and nothing else, so every path from the input to the output passes through each
    of them (the stem and cells of a NAS-Bench network, whose forward loops over them).

    A proxy that knows its network is positively homogeneous may rescale a link's output by a
    constant and so rescale everything downstream of it (and every gradient) by the same one:
    Synflow's float32 pass keeps R and ∂R/∂θ within float32's range that way.  A module marked
    wrongly (a branch, a block a skip connection bypasses) would change what is computed, so
    only code that builds the network marks it.
    """
    for module in modules:
        setattr(module, CHAIN_LINK, True)


def chain_links(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` marked by :func:`mark_chain_links`, in module order."""
    return [m for m in model.modules() if getattr(m, CHAIN_LINK, False)]


def weight_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Convolution (1-, 2-, 3-d, transposed too) and linear layers: the parameters
    pruning-style proxies sum over (NASLib's and FreeREA's code count ``nn.Conv2d`` and
    ``nn.Linear`` only, which is every weight of the benchmarks' networks)."""
    for m in model.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m.weight is not None:
            yield m


def gaussian_init_(model: nn.Module, generator: torch.Generator, *,
                   reset_running_stats: bool = True) -> None:
    """ZenNAS's initialisation, in place (idstcv/ZenNAS, ZeroShotProxy/compute_zen_score.py,
    ``network_weight_gaussian_init``): conv and linear weights ~ N(0, 1) and their biases 0;
    affine normalisation scales 1 and shifts 0.  ``reset_running_stats`` also gives BatchNorm
    the running statistics of a freshly built network (ZenNAS scores fresh networks).

    Draws come from ``generator`` (a CPU one) in ``model.modules()`` order and are then copied
    to each weight's device and dtype, so values do not depend on the device or the global RNG.
    """
    _redraw_(model, generator, lambda w: 1.0, reset_running_stats)


def kaiming_normal_init_(model: nn.Module, generator: torch.Generator, *,
                         mode: str = "fan_in", reset_running_stats: bool = True) -> None:
    """He-normal initialisation with the ReLU gain, in place, as AZ-NAS and TE-NAS use it
    (``nn.init.kaiming_normal_(w, mode=mode, nonlinearity="relu")``): conv and linear weights
    ~ N(0, 2/fan) and their biases 0; affine normalisation scales 1 and shifts 0.
    ``reset_running_stats`` also gives BatchNorm the running statistics of a freshly built
    network, so a network scored in eval mode after the re-draw carries nothing of the caller's
    (in train mode, the default of every proxy that re-draws, they are never read).

    Draws come from ``generator`` (a CPU one) in ``model.modules()`` order and are then copied
    to each weight's device and dtype, so values do not depend on the device or the global RNG.
    """
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', not {mode!r}")

    def he_std(w: torch.Tensor) -> float:
        receptive = w[0][0].numel() if w.dim() > 2 else 1
        fan = (w.shape[1] if mode == "fan_in" else w.shape[0]) * receptive
        return (2.0 / max(fan, 1)) ** 0.5
    _redraw_(model, generator, he_std, reset_running_stats)


def _redraw_(model: nn.Module, generator: torch.Generator,
             std: Callable[[torch.Tensor], float], reset_running_stats: bool) -> None:
    """Conv and linear weights ~ N(0, std(weight)²) drawn from ``generator`` in module order,
    biases 0; norm scales 1 and shifts 0, and (``reset_running_stats``) BatchNorm's running
    statistics those of a freshly built network."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                draw = torch.randn(m.weight.shape, generator=generator, dtype=torch.float32)
                m.weight.copy_(draw * std(m.weight))
                if m.bias is not None:
                    m.bias.zero_()
            elif is_norm(m):
                _reset_affine(m)
                if reset_running_stats and isinstance(m, nn.modules.batchnorm._BatchNorm) \
                        and m.track_running_stats:
                    m.reset_running_stats()


_LAZY_CONV = {nn.Conv1d: nn.LazyConv1d, nn.Conv2d: nn.LazyConv2d, nn.Conv3d: nn.LazyConv3d}
_LAZY_BN = {nn.BatchNorm1d: nn.LazyBatchNorm1d, nn.BatchNorm2d: nn.LazyBatchNorm2d,
            nn.BatchNorm3d: nn.LazyBatchNorm3d}


def narrow_copy(model: nn.Module, width: int, example: torch.Tensor, seed: int) -> nn.Module:
    """A copy of ``model`` in which every convolution outputs ``width`` channels (TE-NAS counts
    linear regions on such a "thin" network, width 1).

    Each Conv1d/2d/3d becomes a lazy convolution with ``width`` outputs, the same kernel, stride,
    padding and dilation, ``groups=1`` and an input width inferred from what reaches it; each
    BatchNorm becomes a lazy BatchNorm; each Linear keeps its output size with a lazy input size.
    Other normalisations (LayerNorm, GroupNorm, ...) fix a channel count and become identities.
    Parameters are created by one forward pass of ``example`` (which may have a different
    number of channels than the model's input), freshly initialised with the modules' default
    initialisers under ``seed`` (the global RNG is forked).  Code that hard-wires channel counts
    outside these modules (views, channel slicing) may not run on the narrowed copy.
    """
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")

    def narrowed(m: nn.Module) -> nn.Module | None:
        if type(m) in _LAZY_CONV:
            return _LAZY_CONV[type(m)](width, m.kernel_size, stride=m.stride, padding=m.padding,
                                       dilation=m.dilation, bias=m.bias is not None,
                                       padding_mode=m.padding_mode)
        if type(m) in _LAZY_BN:
            return _LAZY_BN[type(m)](eps=m.eps, momentum=m.momentum, affine=m.affine,
                                     track_running_stats=m.track_running_stats)
        if type(m) is nn.Linear:
            return nn.LazyLinear(m.out_features, bias=m.bias is not None)
        if is_norm(m):  # a fused norm (timm's BatchNormAct2d) keeps its activation
            return without_norm(m)
        return None

    clone = clone_module(model)
    replace_modules(clone, narrowed)
    clone.to(example.device)
    devices = [example.device.index or 0] if example.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        try:
            clone(example)
        except (RuntimeError, ValueError, AssertionError) as err:
            raise ValueError(
                f"the {width}-channel copy of {type(model).__name__} cannot run "
                f"({type(err).__name__}: {err}): code outside its convolutions fixes channel "
                "counts or input sizes (a channel truncation such as NAS-Bench-101's, a "
                "reshape by channel count, an input-size check); score the full-width network "
                "instead (tenas_lr: width=None, channels=None)") from err
    return clone


def _reset_affine(norm: nn.Module) -> None:
    """Scale 1 and shift 0 for a normalisation layer's affine parameters (where it has them)."""
    if isinstance(getattr(norm, "weight", None), torch.Tensor):
        norm.weight.fill_(1.0)
    if isinstance(getattr(norm, "bias", None), torch.Tensor):
        norm.bias.zero_()
