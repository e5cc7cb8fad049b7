"""The straightforward baseline that ``bench_proxies.py`` measures zcproxy against.

Written the way the original reference code computes these proxies, so the speed comparison is
against what a user would otherwise run:

* NASWOT as in Mellor et al.'s repository: forward hooks on ``nn.ReLU`` modules, binary codes of
  each hooked input in float32, ``K += c @ c.T + (1 - c) @ (1 - c).T`` per layer (added into a
  float64 numpy matrix), ``np.linalg.slogdet``.  (The original additionally runs a
  forward+backward Jacobian pass before the hooked forward, only to mark the hooks as
  "visited"; it does not change K, and leaving it out makes this baseline *faster* than the
  original, so the measured ratios are conservative.)
* LogSynflow / Synflow as in FreeREA / zero-cost-nas: a deep copy, BatchNorm forward turned
  into a no-op, ``abs_`` on every ``state_dict`` entry, ``.double()``, an all-ones input of batch
  1, ``sum(output).backward()``, ``Σ |w · log(g + 1)|`` (or ``Σ |w · g|``) over conv/linear
  layers.
* Entropic Score: per repeat a deep copy, surgery (norm → Identity, activations → ReLU),
  ``.double()``, re-initialisation with seed ``s + r`` (``s`` the architecture's seed, as in
  zcproxy's runner), the signed weights (``abs_`` only for ``entropic_abs``, zcproxy 0.1's
  reading), a uniform-noise input in [-0.5, 0.5) drawn with the same seed, and the per-layer
  mean entropy of channel-normalised ReLU outputs.

The network is rebuilt for every proxy (one process, torch's default thread count), from the
same seed zcproxy's runner uses for that architecture, and every definition choice (float64 for
the Entropic Score, the seeds of its re-initialisations and inputs, the CIFAR-10 batch) is the
one zcproxy documents, so both produce the same numbers: the benchmark checks that they do.
Nothing here shares code with ``zcproxy.proxies``; only the benchmark adapters (to build the
networks) and the CIFAR-10 reader (to get the same images) come from zcproxy.  The networks'
pools are turned back into plain ``nn.AvgPool2d`` / ``nn.MaxPool2d`` (the benchmarks' own code),
so the baseline does not get zcproxy's channels-last pools (``zcproxy.nasbench.pooling``,
bit-identical, faster).
"""
from __future__ import annotations

import argparse
import copy
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from zcproxy.nasbench import get_benchmark
from zcproxy.runner import ScoringJob

REFERENCE_PROXIES = ("naswot", "synflow", "logsynflow", "entropic", "entropic_abs")


def _tensor_output(out):
    # NATS networks return (features, logits); the reference code takes output[1].
    return out[1] if isinstance(out, tuple) else out


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """log|det K| of the ReLU-code agreement matrix, Mellor et al.'s way."""
    n = x.shape[0]
    state = {"K": np.zeros((n, n))}

    def hook(module, inp, out):
        if isinstance(inp, tuple):
            inp = inp[0]
        c = (inp.reshape(n, -1) > 0).float()
        k1 = c @ c.t()
        k2 = (1.0 - c) @ (1.0 - c.t())
        state["K"] = state["K"] + k1.cpu().numpy() + k2.cpu().numpy()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    model.train()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    sign, logdet = np.linalg.slogdet(state["K"])
    return float("-inf") if sign == 0 else float(logdet)


def _no_op(self, x):
    return x


def synflow(model: nn.Module, input_shape: Sequence[int], log: bool = True) -> float:
    """LogSynflow (``log=True``, FreeREA) or Synflow (zero-cost-nas) of a deep copy."""
    net = copy.deepcopy(model)
    net.train()
    for layer in net.modules():
        if isinstance(layer, _BatchNorm):
            layer.forward = _no_op.__get__(layer)
    with torch.no_grad():
        for _, param in net.state_dict().items():
            param.abs_()
    net.zero_grad()
    net.double()
    ones = torch.ones([1] + list(input_shape)).double()
    torch.sum(_tensor_output(net(ones))).backward()
    total = 0.0
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)) and layer.weight.grad is not None:
                g = torch.log(layer.weight.grad + 1) if log else layer.weight.grad
                total = total + torch.sum(torch.abs(layer.weight * g))
    return float(total)


def _swap(module: nn.Module, pick: Callable[[nn.Module], nn.Module | None]) -> None:
    for name, child in list(module.named_children()):
        new = pick(child)
        if new is not None:
            setattr(module, name, new)
        else:
            _swap(child, pick)


ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU)
NORMS = (_BatchNorm, nn.LayerNorm, nn.GroupNorm)


def entropic(model: nn.Module, input_shape: Sequence[int], seed: int, repeats: int = 3,
             eps: float = 1e-8, abs_weights: bool = False) -> float:
    """Entropic Score: mean over ``repeats`` fresh surgical copies of Σ_layers mean entropy
    (signed re-initialised weights; |weights| with ``abs_weights``)."""
    totals = []
    for r in range(repeats):
        net = copy.deepcopy(model)
        _swap(net, lambda m: nn.Identity() if isinstance(m, NORMS)
              else nn.ReLU() if isinstance(m, ACTIVATIONS) else None)
        net.double()
        net.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + r)
            for m in net.modules():
                if hasattr(m, "reset_parameters") and len(list(m.parameters(recurse=False))):
                    m.reset_parameters()
        if abs_weights:
            with torch.no_grad():
                for p in net.parameters():
                    p.abs_()
        gen = torch.Generator().manual_seed(seed + r)
        x = -0.5 + 1.0 * torch.rand([1] + list(input_shape), generator=gen, dtype=torch.float64)
        entropies = []

        def hook(module, inp, out):
            spatial = (2, 3) if out.dim() == 4 else (1,) if out.dim() == 3 else ()
            if spatial:
                peak = out.amax(dim=spatial, keepdim=True)
                a = torch.where(peak > 0, out / peak, 0.0)
            else:
                a = (out > 0).double()
            entropies.append((-(a * torch.log(a + eps)).mean()).item())

        handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
        with torch.no_grad():
            net(x)
        for h in handles:
            h.remove()
        totals.append(sum(entropies))
    return sum(totals) / len(totals)


class ReferenceScorer:
    """Scores architectures of one benchmark the reference way: a fresh network per proxy."""

    def __init__(self, bench: str, *, seed: int = 0, batch_size: int = 64,
                 dataset: str = "cifar10", data_dir: str | None = None):
        self.bench = get_benchmark(bench, data_dir=data_dir)
        self.bench.table(dataset)  # loaded before any seeded build (it may draw random numbers)
        self.job = ScoringJob(bench=bench, proxies=(), seed=seed, dataset=dataset,
                              batch_size=batch_size, data_dir=data_dir)
        self.dataset = dataset
        self.seed = seed
        self.shape = self.bench.input_shape(dataset)
        self._batch = None
        self.data_dir = data_dir
        self.batch_size = batch_size

    def batch(self) -> torch.Tensor:
        if self._batch is None:
            from zcproxy.data import cifar10_batch
            self._batch, _ = cifar10_batch(self.batch_size, seed=self.seed, root=self.data_dir)
        return self._batch

    def build(self, index: int) -> nn.Module:
        # The architecture's network exactly as zcproxy's runner builds it (same seed), with
        # the pools the benchmark's own code has.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.job.arch_seed(index))
            model = self.bench.build(index, self.dataset)
        for module in model.modules():
            for torch_pool in (nn.AvgPool2d, nn.MaxPool2d):
                if isinstance(module, torch_pool):
                    module.__class__ = torch_pool
        return model

    def score(self, index: int, proxies: Sequence[str]) -> dict[str, float]:
        out = {}
        for proxy in proxies:
            model = self.build(index)
            if proxy == "naswot":
                out[proxy] = naswot(model, self.batch())
            elif proxy in ("synflow", "logsynflow"):
                out[proxy] = synflow(model, self.shape, log=proxy == "logsynflow")
            elif proxy in ("entropic", "entropic_abs"):
                # zcproxy seeds each architecture's re-initialisations and noise input with
                # the architecture's own seed (see zcproxy.runner.Worker.score).
                out[proxy] = entropic(model, self.shape, self.job.arch_seed(index),
                                      abs_weights=proxy == "entropic_abs")
            else:
                raise ValueError(f"the reference scorer has {REFERENCE_PROXIES}, not {proxy!r}")
        return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Score architectures with the reference-style "
                                            "baseline (see the module docstring).")
    p.add_argument("--bench", required=True, choices=("nats-sss", "nats-tss", "nb101"),
                   help="benchmark whose architectures are scored")
    p.add_argument("--index", type=int, nargs="+", required=True,
                   help="benchmark indices of the architectures to score, e.g. 0 1 2")
    p.add_argument("--proxies", default="naswot,logsynflow,entropic",
                   help="comma-separated proxies (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="run seed: each architecture's weights and the CIFAR-10 batch derive "
                        "from it, as in zcproxy's runner (default: %(default)s)")
    args = p.parse_args(argv)
    scorer = ReferenceScorer(args.bench, seed=args.seed)
    for index in args.index:
        scores = scorer.score(index, args.proxies.split(","))
        print(index, " ".join(f"{k}={v!r}" for k, v in scores.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
