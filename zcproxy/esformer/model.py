"""Build an ``nn.Module`` from an ESFormer :class:`~zcproxy.esformer.space.Architecture`.

Stem (stride 4) -> four stages at strides 4/8/16/32 -> BatchNorm -> global average pool ->
linear head (a single head: no distillation token/head).  The stem and each downsampling layer
output the width of the first block of the next stage, so that EfficientFormerV2's own widths
reproduce its network exactly; wider blocks later in a stage grow through zero-padded residuals.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import Downsample, Stem, make_block
from .space import Architecture

STRIDE_ATTENTION_STAGE = 2  # 0-based: stage 3 attends on a stride-2 grid, as in EfficientFormerV2
ATTENTION_DOWNSAMPLE_STAGE = 3  # 0-based: the downsampling into stage 4 has an attention branch


class Stage(nn.Module):
    def __init__(self, downsample: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ESFormer(nn.Module):
    """An ESFormer network; ``arch`` and ``img_size`` are kept for reference (not modules)."""

    def __init__(self, arch: Architecture, num_classes: int = 1000, img_size: int = 224,
                 layer_scale_init: float | None = 1e-5, device: torch.device | str = "cpu"):
        super().__init__()
        if not isinstance(arch, Architecture):
            raise TypeError(f"arch must be an Architecture, got {type(arch).__name__}")
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size <= 0 or img_size % 32:
            raise ValueError(f"img_size={img_size!r} must be a positive multiple of 32")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes={num_classes!r} must be a positive integer")
        self.arch, self.img_size = arch, img_size
        space = arch.space
        width = arch.stages[0][0].out_channels
        self.stem = Stem(3, width, device=device)
        side = img_size // 4
        stages = []
        for s, genes_of_stage in enumerate(arch.stages):
            if s == 0:
                downsample: nn.Module = nn.Identity()
            else:
                out = genes_of_stage[0].out_channels
                downsample = Downsample(width, out, (side, side), s == ATTENTION_DOWNSAMPLE_STAGE, device)
                width, side = out, side // 2
            blocks = []
            for b, genes in enumerate(genes_of_stage):
                stride = 2 if s == STRIDE_ATTENTION_STAGE else None
                blocks.append(make_block(width, genes, space.is_attention(s, b), (side, side),
                                         stride, layer_scale_init, device))
                width = genes.out_channels
            stages.append(Stage(downsample, blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(width, device=device)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.head = nn.Linear(width, num_classes, device=device)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.forward_features(x))))


def build_model(arch: Architecture, num_classes: int = 1000, img_size: int = 224,
                device: torch.device | str = "cpu",
                layer_scale_init: float | None = 1e-5) -> ESFormer:
    """The network of ``arch`` for square ``img_size`` inputs (a multiple of 32).

    Attention bias tables are sized for ``img_size``, so feed the model that size (other sizes
    raise ValueError).  ``layer_scale_init`` is EfficientFormerV2's 1e-5 by default; ``None``
    removes layer scale, which matters for proxies computed at initialisation, where 1e-5 makes
    every residual branch nearly invisible.  ``device="meta"`` builds without memory, enough for
    :func:`~zcproxy.esformer.flops.count_params` and ``count_macs``.
    """
    return ESFormer(arch, num_classes, img_size, layer_scale_init, device)
