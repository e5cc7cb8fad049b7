"""Pooling layers for the benchmark networks that give PyTorch's results, faster on the CPU.

PyTorch's CPU kernels for 3x3 pooling of NCHW tensors are scalar loops: on NATS-Bench's and
NAS-Bench-101's feature maps a pool takes about as long as a 3x3 convolution of the same
batch.  The channels-last kernels are vectorised and compute the same numbers (a maximum or a
mean over the same window, in the same order), so the layers below pool a channels-last copy
and hand back the default layout.  Each is a subclass of the torch layer it replaces, so code
that looks for ``nn.AvgPool2d``/``nn.MaxPool2d`` still finds it, and each falls back to the
torch layer wherever the equality has not been checked (other devices, other layouts).
``benchmarks/bench_pooling.py`` measures them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ChannelsLastAvgPool(torch.autograd.Function):
    """Average pooling whose forward runs on a channels-last copy and whose backward is
    PyTorch's own (``aten.avg_pool2d_backward`` on the default layout, as autograd calls it for
    ``nn.AvgPool2d``): the forward is the slow half on the CPU, and the channels-last backward
    measured slower than the default one.  The backward is differentiable (GraSP's
    Hessian-vector products go through it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, pool: nn.AvgPool2d) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.args = (pool.kernel_size, pool.kernel_size if pool.stride is None else pool.stride,
                    pool.padding, pool.ceil_mode, pool.count_include_pad, pool.divisor_override)
        channels_last = x.contiguous(memory_format=torch.channels_last)
        return nn.AvgPool2d.forward(pool, channels_last).contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return torch.ops.aten.avg_pool2d_backward(grad, x, *ctx.args), None


class ChannelsLastAvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` whose CPU forward pools a channels-last copy of its input.

    PyTorch's CPU kernel for NCHW tensors is slow on NATS-Bench's small maps (a 3x3 pool of a
    64x16x32x32 batch took about as long as the 3x3 convolution of the same batch, and 46 % of
    SWAP's time on a cell with pools); the channels-last kernel gives
    bit-identical outputs 2-5x faster (``benchmarks/bench_pooling.py``).  The output is
    returned in the default layout, so forward hooks (MeCo reads every module's output) see
    the tensor they saw before, and the backward is PyTorch's own, so gradients are
    bit-identical too; ``tests/test_nats.py`` checks the equality on whole networks, logits,
    gradients and proxies (``tests/test_pooling.py`` on single pools).  Other devices, and
    inputs that are not contiguous in the default layout, use ``nn.AvgPool2d`` as is.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous():
            return super().forward(x)
        return _ChannelsLastAvgPool.apply(x, self)


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` whose CPU forward, when no gradient will flow through it, takes the
    maximum over a channels-last copy of its input.

    NAS-Bench-101's ``maxpool3x3`` op and its 2x2 downsampling are ``nn.MaxPool2d``; the NCHW
    forward of a 3x3 max-pool of a 16x128x32x32 batch took longer than the 128-channel 3x3
    convolution of it, half of SWAP's time on a NAS-Bench-101 network.  The channels-last
    kernel gives the same maxima (NaN propagates in both) 3-5.5x faster, copies included
    (a whole NAS-Bench-101 forward of 16 images 1.5x; ``benchmarks/POOLING.md``).  Only
    the forward without indices is fast there: the channels-last kernel that also returns the
    argmax (what autograd needs for the backward) is no faster than the NCHW one, so when the
    output will be differentiated (grad mode on and the input requires grad) the layer is
    ``nn.MaxPool2d`` itself, and gradients are PyTorch's to the bit.  Also ``nn.MaxPool2d``
    itself: other devices, inputs not contiguous in the default layout, ``return_indices``.
    """

    def forward(self, x: torch.Tensor):
        if (x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous() or self.return_indices
                or (torch.is_grad_enabled() and x.requires_grad)):
            return super().forward(x)
        pooled = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), self.kernel_size,
                              self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode)
        return pooled.contiguous()


def use_channels_last_max_pools(model: nn.Module) -> nn.Module:
    """Turn every plain ``nn.MaxPool2d`` of ``model`` into a ``ChannelsLastMaxPool2d`` in place
    (the subclass has no state of its own, so the modules keep their settings and names)."""
    for module in model.modules():
        if type(module) is nn.MaxPool2d:
            module.__class__ = ChannelsLastMaxPool2d
    return model
