"""The layers of ESFormer networks (EfficientFormerV2-style), written for zero-cost proxies.

Every activation is its own ``nn.GELU`` module and every norm an ``nn.BatchNorm2d`` module,
because proxies transform networks by module replacement (GELU -> ReLU, BN -> Identity); a
functional activation or norm would silently escape them.  Convolutions carry a bias even before
BN, as EfficientFormerV2 does, so parameter counts are comparable with it.

Channel growth inside a stage goes through zero-padded identity residuals: the residual of a
block whose output is wider than its input is the input padded with zero channels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .space import BlockGenes

Resolution = tuple[int, int]


class ConvBN(nn.Module):
    """Conv (with bias) + BatchNorm2d + optional GELU, 'same' padding for odd kernels."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = False, device: torch.device | str | None = None):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups,
                              bias=True, device=device)
        self.bn = nn.BatchNorm2d(c_out, device=device)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (EfficientFormerV2 starts it at 1e-5)."""

    def __init__(self, channels: int, init: float, device: torch.device | str | None = None):
        super().__init__()
        self.init = init
        self.gamma = nn.Parameter(torch.empty(channels, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


def _layer_scale(channels: int, init: float | None, device) -> nn.Module:
    return nn.Identity() if init is None else LayerScale(channels, init, device)


def pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """The zero-padded identity: ``x`` with zero channels appended up to ``channels``."""
    extra = channels - x.shape[1]
    if extra < 0:
        raise ValueError(f"cannot pad {x.shape[1]} channels down to {channels}")
    return F.pad(x, (0, 0, 0, 0, 0, extra)) if extra else x


# ---- FFNs ---------------------------------------------------------------------------------------
class InvertedBottleneck(nn.Module):
    """'ibn': 1x1 expand -> depthwise kxk -> 1x1 project (EfficientFormerV2's FFN with locality).
    Hidden width = expansion x input channels."""

    def __init__(self, c_in: int, c_out: int, expansion: int, kernel_size: int, device=None):
        super().__init__()
        hidden = c_in * expansion
        self.expand = ConvBN(c_in, hidden, 1, act=True, device=device)
        self.dw = ConvBN(hidden, hidden, kernel_size, groups=hidden, act=True, device=device)
        self.project = ConvBN(hidden, c_out, 1, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.dw(self.expand(x)))


class ConvNeXtFFN(nn.Module):
    """'convnext': depthwise kxk first (on the narrow input), then 1x1 expand -> 1x1 project.
    Hidden width = expansion x input channels."""

    def __init__(self, c_in: int, c_out: int, expansion: int, kernel_size: int, device=None):
        super().__init__()
        hidden = c_in * expansion
        self.dw = ConvBN(c_in, c_in, kernel_size, groups=c_in, device=device)
        self.expand = ConvBN(c_in, hidden, 1, act=True, device=device)
        self.project = ConvBN(hidden, c_out, 1, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.expand(self.dw(x)))


FFNS: dict[str, type[nn.Module]] = {"ibn": InvertedBottleneck, "convnext": ConvNeXtFFN}


class ResidualFFN(nn.Module):
    """x -> pad(x) + LayerScale(FFN(x)), the FFN half of every EfficientFormerV2-style block."""

    def __init__(self, ffn_type: str, c_in: int, c_out: int, expansion: int, kernel_size: int,
                 layer_scale_init: float | None, device=None):
        super().__init__()
        if ffn_type not in FFNS:
            raise ValueError(f"ffn_type={ffn_type!r} not in {tuple(FFNS)}")
        self.out_channels = c_out
        self.ffn = FFNS[ffn_type](c_in, c_out, expansion, kernel_size, device=device)
        self.ls = _layer_scale(c_out, layer_scale_init, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad_channels(x, self.out_channels) + self.ls(self.ffn(x))


class ResidualBottleneck(nn.Module):
    """'bottleneck' (extended space): ResNet's block, act(pad(x) + [1x1 reduce -> kxk -> 1x1]).

    Kept as in ResNet (activation after the sum, no layer scale) because the point of the
    paper's Table 5 ablation is a block unsuited to mobile networks.  Middle width =
    out channels // expansion (ResNet's "expansion 4" reads the same way).
    """

    def __init__(self, c_in: int, c_out: int, expansion: int, kernel_size: int, device=None):
        super().__init__()
        mid = max(1, c_out // expansion)
        self.out_channels = c_out
        self.reduce = ConvBN(c_in, mid, 1, act=True, device=device)
        self.conv = ConvBN(mid, mid, kernel_size, act=True, device=device)
        self.expand = ConvBN(mid, c_out, 1, device=device)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(pad_channels(x, self.out_channels) + self.expand(self.conv(self.reduce(x))))


# ---- attention ----------------------------------------------------------------------------------
def relative_position_index(q_grid: Resolution, k_grid: Resolution, q_step: int = 1) -> torch.Tensor:
    """Index into a per-head bias table of k_h*k_w entries: |dy| * k_w + |dx| between every query
    position (a grid subsampled by ``q_step``) and every key position (EfficientFormerV2's
    symmetric relative bias)."""
    def grid(h: int, w: int, step: int) -> torch.Tensor:
        ys, xs = torch.meshgrid(torch.arange(0, h, step), torch.arange(0, w, step), indexing="ij")
        return torch.stack([ys.flatten(), xs.flatten()])
    q = grid(q_grid[0] * q_step, q_grid[1] * q_step, q_step)
    k = grid(*k_grid, 1)
    rel = (q[:, :, None] - k[:, None, :]).abs()
    return rel[0] * k_grid[1] + rel[1]


class _BiasedAttention(nn.Module):
    """Shared plumbing: the learned bias table, its index buffer and the input-size check."""

    def _init_bias(self, num_heads: int, q_grid: Resolution, k_grid: Resolution, q_step: int,
                   device) -> None:
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, k_grid[0] * k_grid[1], device=device))
        self.register_buffer("bias_index", relative_position_index(q_grid, k_grid, q_step).to(device),
                             persistent=False)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.attention_biases)

    def _check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != self.input_resolution:
            raise ValueError(
                f"{type(self).__name__} was built for {self.input_resolution[0]}x{self.input_resolution[1]} "
                f"feature maps, got {x.shape[-2]}x{x.shape[-1]}; build the model with the image size "
                "you feed it (attention bias tables depend on the resolution)")

    def _bias(self) -> torch.Tensor:
        return self.attention_biases[:, self.bias_index]


class Attention(_BiasedAttention):
    """EfficientFormerV2's MHSA: talking heads, learned relative bias, depthwise-conv local term on
    V, optional stride-2 (depthwise conv in, bilinear upsample out).  Value width per head is
    ``attn_ratio * head_dim``; output width = input width."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, resolution: Resolution,
                 stride: int | None = None, attn_ratio: int = 4, device=None):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.scale = head_dim ** -0.5
        self.value_dim = attn_ratio * head_dim
        self.input_resolution = tuple(resolution)
        if stride is not None:
            self.stride_conv = ConvBN(dim, dim, 3, stride, groups=dim, device=device)
            self.upsample = nn.Upsample(scale_factor=stride, mode="bilinear")
            resolution = tuple(math.ceil(r / stride) for r in resolution)
        else:
            self.stride_conv = self.upsample = None
        self.resolution = tuple(resolution)
        qk, v = num_heads * head_dim, num_heads * self.value_dim
        self.q = ConvBN(dim, qk, device=device)
        self.k = ConvBN(dim, qk, device=device)
        self.v = ConvBN(dim, v, device=device)
        self.v_local = ConvBN(v, v, 3, groups=v, device=device)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1, device=device)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1, device=device)
        self.act = nn.GELU()
        self.proj = ConvBN(v, dim, device=device)
        self._init_bias(num_heads, self.resolution, self.resolution, 1, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        b, heads, n = x.shape[0], self.num_heads, self.resolution[0] * self.resolution[1]
        q = self.q(x).reshape(b, heads, self.head_dim, n).transpose(-2, -1)
        k = self.k(x).reshape(b, heads, self.head_dim, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(b, heads, self.value_dim, n).transpose(-2, -1)
        attn = (q @ k) * self.scale + self._bias()
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
        out = (attn @ v).transpose(-2, -1).reshape(b, heads * self.value_dim, *self.resolution)
        out = out + v_local
        if self.upsample is not None:
            out = self.upsample(out)
        return self.proj(self.act(out))


class AttentionDownsample(_BiasedAttention):
    """The attention branch of the last downsampling (EfficientFormerV2: 8 heads, key width 16,
    attn_ratio 4; queries from a stride-2 local+pooled grid, keys/values at full resolution)."""

    def __init__(self, c_in: int, c_out: int, resolution: Resolution, num_heads: int = 8,
                 head_dim: int = 16, attn_ratio: int = 4, device=None):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.scale = head_dim ** -0.5
        self.value_dim = attn_ratio * head_dim
        self.input_resolution = tuple(resolution)
        self.out_resolution = tuple(math.ceil(r / 2) for r in resolution)
        qk, v = num_heads * head_dim, num_heads * self.value_dim
        self.q_local = nn.Conv2d(c_in, c_in, 3, 2, 1, groups=c_in, device=device)
        self.q_pool = nn.AvgPool2d(1, 2, 0)
        self.q = ConvBN(c_in, qk, device=device)
        self.k = ConvBN(c_in, qk, device=device)
        self.v = ConvBN(c_in, v, device=device)
        self.v_local = ConvBN(v, v, 3, 2, groups=v, device=device)
        self.act = nn.GELU()
        self.proj = ConvBN(v, c_out, device=device)
        self._init_bias(num_heads, self.out_resolution, self.input_resolution, 2, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        b, heads = x.shape[0], self.num_heads
        n = self.input_resolution[0] * self.input_resolution[1]
        n2 = self.out_resolution[0] * self.out_resolution[1]
        q = self.q(self.q_local(x) + self.q_pool(x)).reshape(b, heads, self.head_dim, n2).transpose(-2, -1)
        k = self.k(x).reshape(b, heads, self.head_dim, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(b, heads, self.value_dim, n).transpose(-2, -1)
        attn = ((q @ k) * self.scale + self._bias()).softmax(dim=-1)
        out = (attn @ v).transpose(-2, -1).reshape(b, heads * self.value_dim, *self.out_resolution)
        return self.proj(self.act(out + v_local))


# ---- blocks of the skeleton ---------------------------------------------------------------------
class AttentionBlock(nn.Module):
    """x -> x + LayerScale(MHSA(x)), then the FFN half (3x3 kernel; may widen the output)."""

    def __init__(self, c_in: int, genes: BlockGenes, resolution: Resolution, stride: int | None,
                 layer_scale_init: float | None, device=None):
        super().__init__()
        self.attn = Attention(c_in, genes.num_heads, genes.head_dim, resolution, stride, device=device)
        self.ls = _layer_scale(c_in, layer_scale_init, device)
        self.mlp = ResidualFFN(genes.ffn_type, c_in, genes.out_channels, genes.expansion,
                               genes.kernel_size, layer_scale_init, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x + self.ls(self.attn(x)))


def make_block(c_in: int, genes: BlockGenes, attention: bool, resolution: Resolution,
               stride: int | None, layer_scale_init: float | None, device=None) -> nn.Module:
    """The module for one gene record; ``attention``/``stride`` come from the skeleton."""
    if attention:
        return AttentionBlock(c_in, genes, resolution, stride, layer_scale_init, device)
    if genes.ffn_type == "bottleneck":
        return ResidualBottleneck(c_in, genes.out_channels, genes.expansion, genes.kernel_size, device)
    return ResidualFFN(genes.ffn_type, c_in, genes.out_channels, genes.expansion,
                       genes.kernel_size, layer_scale_init, device)


class Downsample(nn.Module):
    """3x3 stride-2 conv + BN, plus (before stage 4) the attention-downsample branch."""

    def __init__(self, c_in: int, c_out: int, resolution: Resolution, attention: bool, device=None):
        super().__init__()
        self.conv = ConvBN(c_in, c_out, 3, 2, device=device)
        self.attn = AttentionDownsample(c_in, c_out, resolution, device=device) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out if self.attn is None else out + self.attn(x)


class Stem(nn.Sequential):
    """Two 3x3 stride-2 conv-BN-GELU layers: 3 -> c/2 -> c channels at stride 4."""

    def __init__(self, c_in: int, c_out: int, device=None):
        super().__init__(ConvBN(c_in, c_out // 2, 3, 2, act=True, device=device),
                         ConvBN(c_out // 2, c_out, 3, 2, act=True, device=device))
