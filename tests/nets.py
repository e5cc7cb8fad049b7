"""Small networks shared by the proxy test files."""
from __future__ import annotations

import torch
from torch import nn


def small_cnn() -> nn.Sequential:
    """Two conv-BN-activation layers (ReLU, GELU) and a linear head, seeded."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def linear(weights, bias=None) -> nn.Linear:
    """An nn.Linear holding exactly these weights (rows = outputs) and bias, for values
    computed by hand."""
    w = torch.tensor(weights, dtype=torch.float32)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer
