"""``python -m zcproxy.models_table``: every proxy on a zoo of real timm and torchvision models.

The README promises ``zcproxy.score(model, ...)`` on any ``torch.nn.Module``.  ``ZOO`` is the
set of real architectures that promise is checked on (tests/test_models.py) and tabled
(results/models/README.md): the small variant of each family (ResNet, MobileNetV2/V3,
EfficientNet, RegNet, ConvNeXt, EfficientFormerV2, LeViT, MobileViT, ViT/DeiT, Swin) from timm
and torchvision, untrained (nothing is downloaded), ``num_classes=10``, at the input size the
model declares (see :func:`zcproxy.context.resolve_input_shape`; torchvision models declare
none, so their size comes from their weights' metadata, as a user would pass it, or is 224x224
for the classes built directly).  Where a family has no
CPU-friendly variant (Swin; torchvision's ConvNeXt and ViT), the zoo builds the library's own
class with fewer blocks and channels, which exercises the same modules.

Data-dependent proxies get a batch of random normal images with random labels (there is no
ImageNet here): the table says whether each proxy runs and what it costs, not what it means.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from .api import make_context, resolve_proxies, score_timed
from .context import resolve_input_shape
from .registry import available_proxies


@dataclass(frozen=True)
class ZooModel:
    """One architecture of the zoo: how to build it and how it is tested."""

    name: str                      # "<library>/<model>", e.g. "timm/efficientnet_b0"
    family: str
    build: Callable[[], nn.Module] = field(repr=False, compare=False)
    # The slower half (7-19 s of one core's time each with every proxy, against 1-7 s), marked
    # ``slow`` in tests/test_models.py.
    slow: bool = False
    # What to pass as ``input_shape`` (None: what the model declares), made when scoring.
    input_shape: Callable[[], object] | None = field(default=None, repr=False, compare=False)


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm
        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    return build


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision
        return torchvision.models.get_model(name, weights=None, num_classes=10)
    return build


def _weights(name: str) -> Callable[[], object]:
    """The model's default torchvision weights enum: metadata only, nothing is downloaded."""
    def weights() -> object:
        import torchvision
        return torchvision.models.get_model_weights(name).DEFAULT
    return weights


def _size_224() -> tuple[int, int, int]:
    return (3, 224, 224)


def _torchvision_convnext() -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)],
                    num_classes=10)


def _torchvision_vit() -> nn.Module:
    from torchvision.models import VisionTransformer
    return VisionTransformer(image_size=224, patch_size=16, num_layers=2, num_heads=2,
                             hidden_dim=64, mlp_dim=128, num_classes=10)


def _torchvision_swin() -> nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer
    return SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[1, 1, 2, 1],
                           num_heads=[1, 2, 4, 8], window_size=[7, 7], num_classes=10)


ZOO: tuple[ZooModel, ...] = (
    ZooModel("timm/resnet10t", "ResNet", _timm("resnet10t"), slow=True),
    ZooModel("timm/mobilenetv2_035", "MobileNetV2", _timm("mobilenetv2_035")),
    ZooModel("timm/mobilenetv3_small_050", "MobileNetV3", _timm("mobilenetv3_small_050")),
    ZooModel("timm/efficientnet_b0", "EfficientNet", _timm("efficientnet_b0"), slow=True),
    ZooModel("timm/regnetx_002", "RegNet", _timm("regnetx_002")),
    ZooModel("timm/convnext_atto", "ConvNeXt", _timm("convnext_atto")),
    ZooModel("timm/efficientformerv2_s0", "EfficientFormerV2", _timm("efficientformerv2_s0"),
             slow=True),
    ZooModel("timm/levit_128s", "LeViT", _timm("levit_128s")),
    ZooModel("timm/mobilevit_xxs", "MobileViT", _timm("mobilevit_xxs"), slow=True),
    ZooModel("timm/vit_tiny_patch16_224", "ViT", _timm("vit_tiny_patch16_224"), slow=True),
    ZooModel("timm/deit_tiny_patch16_224", "DeiT", _timm("deit_tiny_patch16_224"), slow=True),
    ZooModel("timm/swin (2 stages of 1, 2 of 2 blocks; dim 32)", "Swin",
             _timm("swin_tiny_patch4_window7_224", embed_dim=32, depths=(1, 1, 2, 1),
                   num_heads=(1, 2, 4, 8))),
    *(ZooModel(f"torchvision/{name}", family, _torchvision(name), slow, _weights(name))
      for name, family, slow in (("resnet18", "ResNet", True),
                                 ("mobilenet_v3_small", "MobileNetV3", False),
                                 ("efficientnet_b0", "EfficientNet", True),
                                 ("regnet_y_400mf", "RegNet", True))),
    ZooModel("torchvision/convnext (3 stages of 1 block; dim 16)", "ConvNeXt",
             _torchvision_convnext, input_shape=_size_224),
    ZooModel("torchvision/vit (2 layers; dim 64)", "ViT", _torchvision_vit),
    ZooModel("torchvision/swin (2 stages of 1, 2 of 2 blocks; dim 32)", "Swin",
             _torchvision_swin, input_shape=_size_224),
)


@dataclass(frozen=True)
class ProxyOutcome:
    """What one proxy did on one model."""

    value: float
    seconds: float
    reason: str = ""      # why the value is undefined (ProxyUndefined), else ""
    error: str = ""       # the exception, if the proxy failed
    activation_calls: tuple[int, int] | None = None  # (seen by its hooks, traced), per forward


@dataclass(frozen=True)
class ModelOutcome:
    name: str
    input_shape: tuple[int, ...]
    input_shape_source: str
    params: int
    seconds: float
    proxies: dict[str, ProxyOutcome]


def build(entry: ZooModel, seed: int = 0) -> nn.Module:
    """The untrained model, with weights that depend on ``seed`` only (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return entry.build().eval()


def score_model(model: nn.Module, proxies: Mapping[str, Mapping[str, object]], *,
                name: str = "", input_shape: object = None, batch: int = 8, seed: int = 0,
                device: torch.device | str = "cpu") -> ModelOutcome:
    """Every proxy on one model, each on its own (one that fails is recorded with its error
    and never stops the others), sharing one context as :func:`zcproxy.score_many` does.
    ``input_shape`` is resolved as :func:`zcproxy.score` resolves it."""
    shape, source = resolve_input_shape(model, input_shape)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *shape), generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    ctx = make_context(model, inputs=x, targets=y, device=device, seed=seed)
    outcomes: dict[str, ProxyOutcome] = {}
    start = time.perf_counter()
    for proxy, opts in resolve_proxies(proxies):
        begin = time.perf_counter()
        try:
            (result,) = score_timed(ctx, [(proxy, opts)], nonfinite="keep")
        except Exception as err:  # recorded, as the runner does
            message = " ".join(str(err).split())[:300]
            outcomes[proxy.name] = ProxyOutcome(math.nan, time.perf_counter() - begin,
                                                error=f"{type(err).__name__}: {message}")
            continue
        outcomes[proxy.name] = ProxyOutcome(result.value, result.seconds, result.reason,
                                            activation_calls=ctx.activation_calls.get(proxy.name))
    return ModelOutcome(name or type(model).__name__, shape, source,
                        sum(p.numel() for p in model.parameters()),
                        time.perf_counter() - start, outcomes)


def markdown(outcomes: Sequence[ModelOutcome], proxies: Sequence[str], *, batch: int,
             threads: int, load: float | None = None, device: str = "cpu") -> str:
    """The committed table: proxies as rows (they outnumber the models), models as columns."""
    lines = [
        "# Every proxy on real models",
        "",
        "Generated by `python -m zcproxy.models_table --out results/models/README.md` "
        "(zcproxy's zoo, `zcproxy.models_table.ZOO`; "
        + (f"{platform.machine()} CPU, " if device == "cpu" else f"device {device}, ") +
        f"{threads} torch thread{'s' if threads != 1 else ''}, torch {torch.__version__}"
        + (f", load average {load:.1f} on {os.cpu_count()} cores when it started: seconds grow "
           "with the load" if load is not None else "") + ").  "
        "Untrained models with `num_classes=10`, weights drawn with seed 0, at the input size "
        f"each declares; data proxies on {batch} random normal images with random labels, so "
        "the values say that a proxy runs and what it costs, not what it predicts.  Default "
        "options for every proxy.  `undefined`: the proxy raised `ProxyUndefined` (reason "
        "below); `error`: it failed (message below).",
        "",
    ]
    short = [f"m{i + 1}" for i in range(len(outcomes))]
    lines += ["| | model | input | params | seconds (all proxies) |", "|---|---|---|---|---|"]
    for key, o in zip(short, outcomes):
        lines.append(f"| {key} | {o.name} | {'x'.join(map(str, o.input_shape))} | "
                     f"{o.params / 1e6:.2f}M | {o.seconds:.1f} |")
    lines += ["", "| proxy | " + " | ".join(short) + " |", "|---" * (len(short) + 1) + "|"]
    notes: list[str] = []
    for proxy in proxies:
        cells = []
        for key, o in zip(short, outcomes):
            r = o.proxies.get(proxy)
            if r is None:
                cells.append("")
            elif r.error:
                cells.append("error")
                notes.append(f"- {proxy} on {key} ({o.name}): {r.error}")
            elif not math.isfinite(r.value):
                cells.append("undefined" if r.reason else f"{r.value}")
                if r.reason:
                    notes.append(f"- {proxy} on {key} ({o.name}): {r.reason}")
            else:
                cells.append(f"{r.value:.4g}")
        lines.append(f"| {proxy} | " + " | ".join(cells) + " |")
    lines += ["", "Seconds per proxy (the first proxy of a family pays for work it shares):", "",
              "| proxy | " + " | ".join(short) + " |", "|---" * (len(short) + 1) + "|"]
    for proxy in proxies:
        lines.append(f"| {proxy} | " + " | ".join(
            f"{o.proxies[proxy].seconds:.2f}" if proxy in o.proxies else "" for o in outcomes)
            + " |")
    if notes:
        lines += ["", "## Undefined scores and errors", ""] + notes
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from .atomic import write_text
    from .cli import add_debug_flag, run_command
    parser = argparse.ArgumentParser(prog="python -m zcproxy.models_table",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/models/README.md",
                        help="markdown file to write (default: %(default)s)")
    parser.add_argument("--proxies", default="all",
                        help="comma-separated names, or 'all' (default: %(default)s)")
    parser.add_argument("--models", default="", help="only zoo models whose name contains one "
                                                     "of these comma-separated words")
    parser.add_argument("--batch", type=int, default=8,
                        help="random images for data proxies (default: %(default)s)")
    parser.add_argument("--device", default="cpu",
                        help="torch device the models are scored on, e.g. cuda:0 "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from .runner import check_device
        device = check_device(args.device)
        torch.set_num_threads(args.threads)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        names = available_proxies() if args.proxies == "all" else args.proxies.split(",")
        wanted = [w for w in args.models.split(",") if w]
        entries = [e for e in ZOO if not wanted or any(w in e.name for w in wanted)]
        outcomes = []
        for entry in entries:
            outcome = score_model(build(entry), {p: {} for p in names}, name=entry.name,
                                  input_shape=entry.input_shape and entry.input_shape(),
                                  batch=args.batch, device=device)
            failed = sum(bool(r.error) for r in outcome.proxies.values())
            print(f"{entry.name}: {outcome.seconds:.1f} s, {failed} error(s)", flush=True)
            outcomes.append(outcome)
        write_text(args.out, markdown(outcomes, names, batch=args.batch, threads=args.threads,
                                      load=load, device=str(device)))
        print(f"wrote {args.out}")
        return 0
    return run_command(body, prog=parser.prog, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
