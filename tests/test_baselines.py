"""Structural baselines on hand-built networks whose depth, size and FLOPs are known."""
import pytest
import torch
from torch import nn

import zcproxy

BASELINES = ["n_params", "n_flops", "depth", "n_act", "n_conv", "width"]


class TwoBranches(nn.Module):
    """Branch a: conv3x3-ReLU-conv3x3-ReLU; branch b: conv1x1-ReLU; summed, then F.relu.

    Longest input→output path: 2 + 1 = 3 activations; 4 activation calls in all (one of them
    functional, which module hooks could not see); 3 convolutions.
    Params: 2·(3·3·9 + 3) + (3·3 + 3) = 180.  FLOPs at 8×8: each 3×3 conv 3·3·9·64 = 5,184
    MACs, the 1×1 conv 3·3·64 = 576 MACs: 2·(2·5,184 + 576) = 21,888.  Width: 3.
    """

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(),
                               nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())

    def forward(self, x):
        return torch.relu(self.a(x) + self.b(x))


def test_baselines_by_hand():
    got = zcproxy.score_many(TwoBranches(), BASELINES, input_shape=(3, 8, 8))
    assert got == {"n_params": 180, "n_flops": 21888, "depth": 3, "n_act": 4, "n_conv": 3,
                   "width": 3}


def test_depth_of_a_plain_chain_and_widths():
    layers = []
    for c_in, c_out in [(3, 8), (8, 16), (16, 16), (16, 32)]:
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.GELU()]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    got = zcproxy.score_many(model, ["depth", "n_act", "n_conv", "width"], input_shape=(3, 16, 16))
    assert got == {"depth": 4, "n_act": 4, "n_conv": 4, "width": (8 + 16 + 16 + 32 + 10) / 5}


def test_baselines_are_flagged_as_such():
    infos = {p.name: p for p in zcproxy.proxy_info()}
    assert all(infos[b].baseline for b in BASELINES)
    assert not any(infos[p].baseline for p in ("naswot", "logsynflow", "entropic"))


def test_width_without_layers_is_an_error():
    with pytest.raises(ValueError, match="no conv or linear"):
        zcproxy.score(nn.Sequential(nn.ReLU()), "width")
