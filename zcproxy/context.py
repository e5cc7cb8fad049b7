"""What a proxy sees: the caller's model (read-only), its inputs, and shared prepared copies.

One context serves every proxy of a :func:`zcproxy.score_many` call, so work that several
proxies need (a prepared copy, Synflow's gradients) is done once and reused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable

import torch
from torch import nn

from .nasbench.base import OutputSelector, logits_only
from .surgery import Recipe, prepare


class ProxyInputError(ValueError):
    """The inputs do not fit the model (wrong shape, too few samples, missing labels)."""


@dataclass
class ProxyContext:
    model: nn.Module
    device: torch.device
    output: OutputSelector = logits_only
    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    input_shape: tuple[int, ...] = (3, 32, 32)
    seed: int = 0
    _memo: dict[Hashable, object] = field(default_factory=dict, repr=False)

    def prepared(self, recipe: Recipe, *, shared: bool = True) -> nn.Module:
        """A prepared copy of the model; shared copies must only be used for forward passes."""
        if not shared:
            return prepare(self.model, recipe, self.device)
        return self.memo(("prepared", recipe), lambda: prepare(self.model, recipe, self.device))

    def memo(self, key: Hashable, compute: Callable[[], object]):
        """Compute once per context: lets proxies share intermediate results."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def data(self, *, min_batch: int = 1, need_targets: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The caller's real batch on the context's device, checked for what a proxy needs."""
        if self.inputs is None:
            raise ProxyInputError(
                "this proxy needs real data: pass inputs=... (for CIFAR-10, "
                "zcproxy.data.cifar10_batch(64) reads the official python batches)")
        if not isinstance(self.inputs, torch.Tensor) or self.inputs.dim() < 2:
            raise ProxyInputError(f"inputs must be a batched tensor, got {_describe(self.inputs)}")
        if self.inputs.shape[0] < min_batch:
            raise ProxyInputError(
                f"this proxy needs a batch of at least {min_batch}, got {self.inputs.shape[0]}")
        if need_targets:
            if self.targets is None:
                raise ProxyInputError("this proxy needs labels: pass targets=... with the inputs")
            if self.targets.shape[0] != self.inputs.shape[0]:
                raise ProxyInputError(f"{self.targets.shape[0]} targets for "
                                      f"{self.inputs.shape[0]} inputs")
        x = self.inputs.to(self.device)
        y = None if self.targets is None else self.targets.to(self.device)
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


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
