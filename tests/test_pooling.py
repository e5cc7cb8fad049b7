"""The benchmark networks' channels-last pools give PyTorch's own numbers (zcproxy/nasbench/pooling.py).

The NATS-Bench average pool is checked on whole networks in test_nats.py; here the max-pool of
NAS-Bench-101, alone and in a network, against ``nn.MaxPool2d`` itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import zcproxy
from zcproxy.nasbench import pooling
from zcproxy.nasbench.nb101 import build_network
from zcproxy.nasbench.pooling import ChannelsLastMaxPool2d


def awkward_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """ReLU zeros (ties), repeated values, NaN and ±inf: where two max kernels could differ."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).relu()
    x[:, :, ::3] = x[:, :, ::3].round()
    x[0, 0, 1, 1] = float("nan")
    x[0, 1, 2, 2] = float("inf")
    x[-1, -1, 0, :2] = -float("inf")
    return x


def uses_fast_kernel(monkeypatch) -> list[bool]:
    """Record, for every call of ``F.max_pool2d`` (the fast path's kernel, and nn.MaxPool2d's),
    whether it pooled a channels-last copy, i.e. came from the fast path."""
    seen: list[bool] = []
    kernel = pooling.F.max_pool2d

    def recording(x, *args, **kwargs):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return kernel(x, *args, **kwargs)

    monkeypatch.setattr(pooling.F, "max_pool2d", recording)
    return seen


@pytest.mark.parametrize("settings", [dict(kernel_size=3, stride=1, padding=1),
                                      dict(kernel_size=2, stride=2),
                                      dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                      dict(kernel_size=2, stride=1, dilation=2)])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "input without grad"])
def test_max_pool_without_gradient_is_the_torch_result_from_the_channels_last_kernel(
        settings, mode, monkeypatch):
    x = awkward_batch((3, 5, 9, 9))
    expected = nn.MaxPool2d(**settings)(x)
    seen = uses_fast_kernel(monkeypatch)
    pool = ChannelsLastMaxPool2d(**settings)
    if mode == "no_grad":
        with torch.no_grad():
            got = pool(x.requires_grad_())
    elif mode == "inference_mode":
        with torch.inference_mode():
            got = pool(x)
    else:
        got = pool(x)
    assert seen == [True]
    assert got.is_contiguous() and got.shape == expected.shape
    torch.testing.assert_close(got, expected.detach(), rtol=0, atol=0, equal_nan=True)


def test_max_pool_that_will_be_differentiated_is_torchs_own(monkeypatch):
    """The channels-last kernel with indices is no faster, so a forward whose output will be
    differentiated is ``nn.MaxPool2d``'s: same graph, same gradient."""
    x = awkward_batch((2, 4, 8, 8)).nan_to_num(posinf=5.0, neginf=-5.0)
    seen = uses_fast_kernel(monkeypatch)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = ChannelsLastMaxPool2d(3, 1, 1)(a)
    expected = nn.MaxPool2d(3, 1, 1)(b)
    assert True not in seen and type(out.grad_fn) is type(expected.grad_fn)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_use_channels_last_max_pools_turns_only_plain_max_pools():
    class OwnPool(nn.MaxPool2d):
        pass

    model = nn.Sequential(nn.MaxPool2d(2), nn.AvgPool2d(2), OwnPool(2), nn.Sequential(nn.MaxPool2d(3, 1, 1)))
    pooling.use_channels_last_max_pools(model)
    assert [type(m).__name__ for m in model.modules()][1:] == [
        "ChannelsLastMaxPool2d", "AvgPool2d", "OwnPool", "Sequential", "ChannelsLastMaxPool2d"]
    assert model[3][0].kernel_size == 3 and model[3][0].padding == 1


def test_a_nas_bench_101_network_scores_the_same_as_with_torchs_max_pool(monkeypatch):
    """Every max-pool of a NAS-Bench-101 network (the maxpool3x3 op and the 2x2 downsampling)
    is the channels-last one, and logits, gradients and scores - of forward-only proxies, which
    take the fast path, and of gradient ones, which do not - equal those of nn.MaxPool2d."""
    matrix = np.array([[0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1],
                       [0, 0, 0, 0, 0]])
    ops = ["input", "conv3x3-bn-relu", "maxpool3x3", "maxpool3x3", "output"]
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    proxies = ["swap", "naswot", "zen", "meco", "entropic", "jacob_cov", "synflow", "snip"]

    def run() -> tuple:
        torch.manual_seed(5)
        net = build_network(matrix, ops, stem_channels=8, num_stacks=2, cells_per_stack=1)
        with torch.no_grad():
            logits = net(x)
        net(x).sum().backward()
        grads = [p.grad for p in net.parameters()]
        return net, logits, grads, zcproxy.score_many(net, proxies, inputs=x, targets=y)

    seen = uses_fast_kernel(monkeypatch)
    net, *fast = run()
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and all(type(m) is ChannelsLastMaxPool2d for m in pools)
    assert True in seen
    monkeypatch.setattr(ChannelsLastMaxPool2d, "forward", nn.MaxPool2d.forward)
    _, *plain = run()
    assert torch.equal(fast[0], plain[0])
    assert all(torch.equal(a, b) for a, b in zip(fast[1], plain[1]))
    assert fast[2] == plain[2]
