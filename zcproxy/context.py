"""What a proxy sees: the caller's model (read-only), its inputs, and shared prepared copies.

One context serves every proxy of a :func:`zcproxy.score_many` call, so work that several
proxies need (a prepared copy, Synflow's gradients) is done once and reused.

Two checks keep a proxy honest about the network it scores:

* with ``activation_check`` on, every copy handed out by :meth:`ProxyContext.prepared` is
  registered with :func:`~zcproxy.surgery.check_activation_calls`: when a proxy reads
  activations through :func:`~zcproxy.surgery.capture_activations`, the hooks' calls per forward
  must equal the activation calls of a plain forward of the caller's model
  (:meth:`activation_census`), or the proxy would score part of the network (issue 18: timm's
  fused ``BatchNormAct2d`` lost two thirds of EfficientNet-B0's activations in surgery;
  functional ``F.gelu`` is never seen);
* with ``verify_unchanged`` on, :func:`zcproxy.api.score_timed` checks a
  :class:`ModelFingerprint` of the caller's model after every proxy.

:func:`zcproxy.score`, ``score_many`` and ``explain`` turn both on (a user's model may be
anything, and the checks cost little beside a forward at 224x224).  A context built directly,
as the benchmark runner builds one per architecture, has both off: the census is one more
forward with Python-level dispatch of every op, 10-60 ms of one core per NATS-Bench-201 network
and mode (NASWOT hooks a train-mode copy, the Entropic Score an eval-mode one), about a tenth of
what NASWOT + LogSynflow + ES cost there, and benchmark networks are plain modules
(tests/test_surgery.py checks that their census finds nothing functional).  On a timm or
torchvision model at 224x224 the census costs ~1.2 batch-1 forwards.
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Literal, Union

import numpy as np
import torch
from torch import nn

from .surgery import ActivationCensus, Recipe, activation_census, check_activation_calls, prepare

# Picks the tensor a proxy should treat as "the output" from whatever forward() returned.
OutputSelector = Callable[[object], torch.Tensor]
ActivationCheckMode = Literal["raise", "warn", "off"]
DEFAULT_INPUT_SHAPE = (3, 32, 32)
# A per-sample shape, torchvision weights (their transforms' crop size), or None (the model's).
InputShape = Union[tuple[int, ...], Any, None]


def logits_only(output: object) -> torch.Tensor:
    """Output selector for networks that return a bare tensor."""
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"expected the model to return a tensor, got {type(output).__name__}")
    return output


def last_of_tuple(output: object) -> torch.Tensor:
    """Output selector for NATS-Bench networks, whose forward returns ``(features, logits)``."""
    if not isinstance(output, (tuple, list)) or not isinstance(output[-1], torch.Tensor):
        raise TypeError(f"expected a (features, logits) tuple, got {type(output).__name__}")
    return output[-1]


class ProxyInputError(ValueError):
    """The inputs do not fit the model (wrong shape, too few samples, missing labels)."""


class ProxyBatchError(ProxyInputError):
    """The caller's batch cannot serve this proxy on any network (none, too few samples, no
    labels, labels that are not class indices): a batch run stops on it, as on
    :class:`~zcproxy.registry.ProxyOptionError`, instead of recording every architecture's
    failure."""


class ActivationMismatchError(ValueError):
    """A proxy's hooks saw fewer (or more) activation calls than the model makes, so its score
    would describe part of the network.  The message says where the unseen calls are."""


def check_class_indices(targets: object) -> None:
    """ProxyInputError unless ``targets`` are labels the data-dependent proxies' cross-entropy
    can take: a 1-D integer tensor of class indices, >= 0 (any integer dtype; it is cast to
    int64).  One-hot or soft labels, numpy arrays and lists are refused with that reason
    instead of a dtype error from inside a proxy's loss."""
    if not isinstance(targets, torch.Tensor):
        raise ProxyBatchError(f"targets must be a tensor of class indices, got "
                              f"{_describe(targets)} (torch.as_tensor(...) converts it)")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ProxyBatchError(f"targets must be integer class indices, got {targets.dtype} "
                              "(one-hot or soft labels are not supported: pass "
                              "labels.argmax(1))")
    if targets.dim() != 1:
        raise ProxyBatchError(f"targets must be one class index per input (1-D), got shape "
                              f"{tuple(targets.shape)}")
    if targets.numel() and int(targets.min()) < 0:
        raise ProxyBatchError(f"targets must be class indices >= 0, got {int(targets.min())}")


@dataclass
class ProxyContext:
    """Everything a proxy reads: the caller's model (never to be modified; work on
    :meth:`prepared` copies), the device, the output selector, the real batch if any, the
    per-sample input shape, the seed, and work memoised for the other proxies of the call."""

    model: nn.Module
    device: torch.device
    output: OutputSelector = logits_only
    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE
    seed: int = 0
    # What a mismatch between hooked and actual activation calls does (see the module doc).
    activation_check: ActivationCheckMode = "off"
    # Whether score_timed verifies after each proxy that the model is unchanged.
    verify_unchanged: bool = False
    # Where input_shape came from (an argument, the inputs, the model's declared input size).
    input_shape_source: str = "argument"
    # False: the fast path for the proxies whose fidelity gate holds (they ask for it with
    # ``prepared(..., fast=True)`` and :meth:`pick_dtype`): channels-last memory format
    # (oneDNN's blocked convolutions) and lower precision, which change scores in the last
    # bits but not their ranks (benchmarks/FIDELITY.md); True: the bit-exact path.
    exact: bool = True
    _memo: dict[Hashable, object] = field(default_factory=dict, repr=False)
    _channels_last: set[int] = field(default_factory=set, repr=False)  # ids of fast copies
    # By proxy name (score_timed sets ``current_proxy``): activation calls per forward that
    # the proxy's hooks saw, and that a plain forward of the model in the same mode makes.
    activation_calls: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    current_proxy: str | None = field(default=None, repr=False)

    def prepared(self, recipe: Recipe, *, shared: bool = True, fast: bool = False
                 ) -> nn.Module:
        """A prepared copy of the model; shared copies must only be used for forward passes.

        ``fast=True`` (a proxy whose fidelity gate holds): on the fast path the copy is put in
        channels-last memory format where that pays, and :meth:`forward` feeds it so."""
        fast = fast and not self.exact
        if not shared:
            return self._watched(prepare(self.model, recipe, self.device), fast)
        return self.memo(("prepared", recipe, fast),
                         lambda: self._watched(prepare(self.model, recipe, self.device), fast))

    def _watched(self, net: nn.Module, fast: bool = False) -> nn.Module:
        if fast and _blocked_layout_helps(net):
            net = net.to(memory_format=torch.channels_last)
            self._channels_last.add(id(net))
        if self.activation_check != "off":
            check_activation_calls(net, self._check_activation_calls)
        return net

    def activation_census(self, training: bool = False) -> ActivationCensus:
        """The activation calls of one plain forward of the caller's model in the given mode
        (memoised per mode): a copy, so the model's mode and BatchNorm statistics stay as they
        are; a batch of 2 in training mode, where BatchNorm needs more than one value."""
        def compute() -> ActivationCensus:
            if training:  # a train-mode forward updates running statistics: never a shared copy
                net = prepare(self.model, Recipe(train=True), self.device)
            else:
                net = self.prepared(Recipe(train=False))
            x = self.random_input(batch=2 if training else 1, seed=self.seed,
                                  dtype=self.model_dtype)
            with torch.no_grad():
                return activation_census(net, lambda: self.forward(net, x))
        return self.memo(("activation-census", training), compute)

    def _check_activation_calls(self, net: nn.Module, calls: int, forwards: int,
                                training: bool) -> None:
        census = self.activation_census(training)
        proxy = repr(self.current_proxy) if self.current_proxy else "a proxy"
        if self.current_proxy and calls % forwards == 0:
            self.activation_calls[self.current_proxy] = (calls // forwards, census.calls)
        if calls == census.calls * forwards:
            return
        seen = calls / forwards
        name = type(self.model).__name__
        if census.functional:
            sites = "; ".join(census.sites) + (", ..." if census.functional > len(census.sites)
                                               else "")
            message = (
                f"{name} makes {census.calls} activation calls per forward, {census.functional} "
                f"of them functionally ({sites}), where zcproxy's hooks cannot see them: "
                f"{proxy} saw {seen:g}.  Apply those activations through modules (nn.GELU, "
                "nn.ReLU, ...) to score the whole network")
        else:
            message = (
                f"{proxy} saw {seen:g} activation calls per forward of its prepared copy of "
                f"{name}, but a plain forward of the model makes {census.calls}: the copy lost "
                "(or gained) activations in surgery, please report it with the model's class")
        if self.activation_check == "raise":
            raise ActivationMismatchError(
                message + "; pass activation_check='warn' to score the visible part anyway")
        warnings.warn(message + "; scoring the visible part (activation_check='warn')",
                      RuntimeWarning, stacklevel=2)

    @property
    def model_dtype(self) -> torch.dtype:
        """The dtype of the model's first weight matrix or kernel (else of its first floating
        tensor; float32 if it has none): what an input a proxy builds itself (noise, zeros for
        a trace) must be, so a float64 or bfloat16 model is scored in its own dtype instead of
        failing in its first layer (a float64 scalar parameter does not decide it)."""
        floating = [t for t in itertools.chain(self.model.parameters(), self.model.buffers())
                    if t.is_floating_point()]
        weights = [t for t in floating if t.dim() >= 2]  # a conv kernel or a weight matrix
        return (weights or floating or [torch.empty(0)])[0].dtype

    def pick_dtype(self, exact: torch.dtype | None, fast: torch.dtype | None
                   ) -> torch.dtype | None:
        """The dtype a proxy computes in: ``exact`` on the exact path, ``fast`` on the fast
        path where the device runs it natively (bfloat16 needs AVX-512 on the CPU, compute
        capability 8.0 on CUDA), else ``exact``.  None means the model's own dtype."""
        if self.exact or not _runs_natively(fast, self.device):
            return exact
        return fast

    def memo(self, key: Hashable, compute: Callable[[], object]):
        """Compute once per context: lets proxies share intermediate results."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def data(self, *, min_batch: int = 1, need_targets: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The caller's real batch on the context's device, checked for what a proxy needs."""
        if self.inputs is None:
            raise ProxyBatchError(
                "this proxy needs real data: pass inputs=... (for CIFAR-10, "
                "zcproxy.data.cifar10_batch(64) reads the official python batches)")
        if not isinstance(self.inputs, torch.Tensor) or self.inputs.dim() < 2:
            raise ProxyBatchError(
                f"inputs must be a batched tensor, got {_describe(self.inputs)}")
        if self.inputs.shape[0] < min_batch:
            raise ProxyBatchError(
                f"this proxy needs a batch of at least {min_batch}, got {self.inputs.shape[0]}")
        if need_targets:
            if self.targets is None:
                raise ProxyBatchError("this proxy needs labels: pass targets=... with the inputs")
            check_class_indices(self.targets)
            if self.targets.shape[0] != self.inputs.shape[0]:
                raise ProxyBatchError(f"{self.targets.shape[0]} targets for "
                                      f"{self.inputs.shape[0]} inputs")
        x = self.inputs.to(self.device)
        y = None if self.targets is None else self.targets.to(self.device)
        if y is not None and not y.dtype.is_floating_point and y.dtype != torch.bool:
            y = y.long()  # int32 / uint8 labels (numpy's defaults): cross-entropy takes int64
        return x, y

    def random_input(self, *, batch: int, seed: int, low: float = -0.5, high: float = 0.5,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform noise in [low, high) of the model's input shape, drawn on the CPU with its
        own generator so the value does not depend on the device or the global RNG."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand((batch, *self.shape()), generator=gen, dtype=torch.float64)
        return (low + (high - low) * x).to(dtype=dtype, device=self.device)

    def ones_input(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.ones((1, *self.shape()), dtype=dtype, device=self.device)

    def shape(self) -> tuple[int, ...]:
        """Per-sample input shape: the real inputs' if given, else ``input_shape``."""
        if isinstance(self.inputs, torch.Tensor) and self.inputs.dim() >= 2:
            return tuple(self.inputs.shape[1:])
        return tuple(self.input_shape)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run ``model`` and select its output tensor, turning shape errors into clear ones."""
        if x.dim() == 4 and id(model) in self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            out = model(x)
        except RuntimeError as err:
            text = str(err)
            if any(s in text for s in ("shape", "size", "dimension", "channels", "expected input")):
                raise ProxyInputError(
                    f"the model rejected an input of shape {tuple(x.shape)}: {text.splitlines()[0]}"
                    " (set input_shape=... or pass inputs of the size the model expects)") from err
            raise
        try:
            return self.output(out)
        except TypeError as err:
            raise ProxyInputError(
                f"{err}; pass output=... to select the tensor to score, e.g. "
                "output=zcproxy.last_of_tuple for NATS-Bench networks") from err


def _runs_natively(dtype: torch.dtype | None, device: torch.device) -> bool:
    if dtype != torch.bfloat16:
        return True
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return False


def _blocked_layout_helps(net: nn.Module) -> bool:
    """Whether channels-last pays: the network has 2-d convolutions in a dtype oneDNN runs
    (float32, bfloat16, float16).  Float64 convolutions have no blocked kernels and ran 0.8x
    as fast in channels-last (LogSynflow on NATS-sss)."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    return bool(convs) and convs[0].weight.dtype in (torch.float32, torch.bfloat16, torch.float16)


class ModelMutatedError(RuntimeError):
    """A proxy changed the caller's model (its values, modes, gradients, hooks or modules)."""


class ModelFingerprint:
    """What a proxy could change in a model, recorded cheaply enough to verify after each proxy.

    Per module: identity, class, mode and hook counts; per parameter and buffer: identity,
    storage, shape, dtype, device, ``requires_grad``, the gradient's identity and the autograd
    version counter (every in-place write through the tensor or a ``detach()``/``state_dict()``
    alias bumps it).  Writes through ``.data`` bump no counter, so the values are checked too,
    on up to 4,096 evenly spaced elements of each tensor (a write to the whole tensor, as an
    initialiser, ``abs_()``, a rescale or a sign flip makes, cannot miss them; a write to a few
    elements through ``.data`` can): the float64 sum and the float64 sum of absolute values of
    those samples, for all tensors of one device and dtype at once; per tensor, to name what
    changed, only when those differ.  Reading all values instead cost ~100 ms per check on
    ResNet-18 (11.7M parameters), a tenth of scoring every proxy; the samples cost ~2 ms.
    """

    def __init__(self, model: nn.Module):
        self.meta, tensors = self._take(model)
        self.totals = _totals(tensors)
        self.per_tensor = [(label, _sums(t)) for label, t in tensors]

    @staticmethod
    def _take(model: nn.Module) -> tuple[list[tuple], list[tuple[str, torch.Tensor]]]:
        meta: list[tuple] = []
        tensors: list[tuple[str, torch.Tensor]] = []
        for name, m in model.named_modules(remove_duplicate=False):
            meta.append((f"module {name or '(root)'}", id(m), type(m), m.training,
                         (len(m._forward_hooks), len(m._forward_pre_hooks),
                          len(m._backward_hooks), len(m._backward_pre_hooks))))
            for kind, group in (("parameter", m._parameters), ("buffer", m._buffers)):
                for key, t in group.items():
                    label = f"{kind} {name + '.' if name else ''}{key}"
                    if t is None:
                        meta.append((label, None))
                        continue
                    try:
                        version = t._version
                    except RuntimeError:  # inference tensors keep no version counter
                        version = None
                    meta.append((label, id(t), t.data_ptr(), tuple(t.shape), t.dtype, t.device,
                                 t.requires_grad, None if t.grad is None else id(t.grad),
                                 version))
                    if t.device.type != "meta" and t.numel():
                        tensors.append((label, t))
        return meta, tensors

    def changes(self, model: nn.Module) -> list[str]:
        """What differs between ``model`` now and when the fingerprint was taken."""
        meta, tensors = self._take(model)
        if [row[0] for row in meta] != [row[0] for row in self.meta]:
            before, after = {row[0] for row in self.meta}, {row[0] for row in meta}
            diff = sorted((before - after) | (after - before))
            return [f"modules or tensors added or removed ({', '.join(diff[:5]) or 'reordered'})"]
        changed = [f"{old[0]} ({_what_changed(old, new)})"
                   for old, new in zip(self.meta, meta) if old != new]
        if changed or _totals(tensors) == self.totals:
            return changed
        return [f"{label} (values)" for (label, old), (_, t) in zip(self.per_tensor, tensors)
                if _sums(t) != old] or ["values"]


_MODULE_FIELDS = ("object", "class", "mode", "hooks")
_TENSOR_FIELDS = ("object", "storage", "shape", "dtype", "device", "requires_grad", "grad",
                  "in-place writes")


_SAMPLES = 4096  # values read per tensor


def _flat(t: torch.Tensor) -> torch.Tensor | np.ndarray:
    """At most _SAMPLES evenly spaced values of ``t``, as a strided view: a numpy array on the
    CPU (numpy reduces on one thread; torch's two-thread reductions of these small arrays took
    20-150 ms instead of 1 ms when the cores were busy), else a tensor."""
    t = t.detach()
    flat = (torch.view_as_real(t) if t.is_complex() else t).reshape(-1)
    flat = flat[::-(-flat.numel() // _SAMPLES)]
    if flat.device.type != "cpu":
        return flat
    if flat.dtype == torch.bool or flat.dtype not in _NUMPY_DTYPES:
        flat = flat.to(torch.float64)  # bool, bfloat16, float8: no numpy twin (a small copy)
    return flat.numpy()


_NUMPY_DTYPES = {torch.float16, torch.float32, torch.float64, torch.uint8, torch.int8,
                 torch.int16, torch.int32, torch.int64}


def _reduce(flat: torch.Tensor | np.ndarray) -> list[float]:
    """(Σx, Σ|x|) in float64."""
    if isinstance(flat, np.ndarray):
        return [float(flat.sum(dtype=np.float64)), float(np.abs(flat).sum(dtype=np.float64))]
    return torch.stack([flat.sum(dtype=torch.float64),
                        flat.abs().sum(dtype=torch.float64)]).tolist()


def _totals(tensors: list[tuple[str, torch.Tensor]]) -> list:
    groups: dict[tuple, list] = {}
    for _, t in tensors:
        flat = _flat(t)
        key = (str(flat.dtype), None if isinstance(flat, np.ndarray) else flat.device)
        groups.setdefault(key, []).append(flat)
    with torch.no_grad():
        sums = [_reduce(np.concatenate(g) if isinstance(g[0], np.ndarray) else torch.cat(g))
                for g in groups.values()]
    return _plain([v for pair in sums for v in pair])


def _sums(t: torch.Tensor) -> list:
    with torch.no_grad():
        return _plain(_reduce(_flat(t)))


def _plain(values: list[float]) -> list:
    return [("nan" if math.isnan(v) else v) for v in values]  # NaN != NaN


def _what_changed(old: tuple, new: tuple) -> str:
    fields = _MODULE_FIELDS if old[0].startswith("module") else _TENSOR_FIELDS
    return ", ".join(f for f, a, b in zip(fields, old[1:], new[1:]) if a != b) or "set or unset"


def resolve_input_shape(model: nn.Module, input_shape: InputShape = None,
                        inputs: torch.Tensor | None = None) -> tuple[tuple[int, ...], str]:
    """The per-sample input shape to score ``model`` at, and where it came from.

    In order: the real ``inputs``' shape; an explicit ``input_shape`` tuple; torchvision
    weights passed as ``input_shape`` (their ``transforms().crop_size``, 3 channels); what the
    model declares: timm's ``patch_embed.img_size`` (what a ViT's position embedding is built
    for, even when created with another ``img_size`` than its pretrained config), an
    ``img_size`` of the model itself (zcproxy's ESFormer), then timm's
    ``pretrained_cfg["input_size"]`` / ``default_cfg["input_size"]``, then torchvision's
    ``VisionTransformer.image_size``; else CIFAR-10's 3x32x32.  Proxies are defined at the
    resolution the network is built for: ViTs reject other sizes, and a CNN scored at 32x32
    instead of its 224x224 sees a different network (timm/torchvision stems downsample 32x).
    """
    if isinstance(inputs, torch.Tensor) and inputs.dim() >= 2:
        return tuple(inputs.shape[1:]), "inputs"
    if isinstance(input_shape, (tuple, list, torch.Size)):
        return tuple(int(d) for d in input_shape), "input_shape argument"
    if input_shape is not None and callable(getattr(input_shape, "transforms", None)):
        crop = getattr(input_shape.transforms(), "crop_size", None)
        if crop:
            size = tuple(crop) * (2 // len(crop))
            return (3, *size), f"{input_shape}.transforms().crop_size"
    if input_shape is not None:
        raise TypeError(f"input_shape must be a tuple such as (3, 224, 224) or torchvision "
                        f"weights, not {type(input_shape).__name__}")
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    cfg_size = cfg.get("input_size") if isinstance(cfg, dict) else None
    channels = cfg_size[0] if cfg_size else 3
    for owner, where in ((getattr(model, "patch_embed", None), "model.patch_embed.img_size"),
                         (model, "model.img_size")):
        img_size = getattr(owner, "img_size", None)
        if _is_size(img_size):
            return (channels, *_pair(img_size)), where
    if cfg_size and len(cfg_size) == 3:
        source = "pretrained_cfg" if getattr(model, "pretrained_cfg", None) else "default_cfg"
        return tuple(int(d) for d in cfg_size), f"model.{source}['input_size']"
    image_size = getattr(model, "image_size", None)
    if _is_size(image_size):
        return (3, *_pair(image_size)), "model.image_size"
    return DEFAULT_INPUT_SHAPE, "default (CIFAR-10 size; the model declares no input size)"


def _is_size(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value > 0) or (
        isinstance(value, (tuple, list)) and len(value) == 2
        and all(isinstance(v, int) and v > 0 for v in value))


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
