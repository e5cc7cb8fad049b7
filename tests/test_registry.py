"""The registry, the public API and what bad input does."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import zcproxy


def test_builtin_proxies_are_registered_with_metadata():
    names = zcproxy.available_proxies()
    for name in ("naswot", "logsynflow", "synflow", "entropic", "n_params", "grad_norm", "snip",
                 "jacob_cov"):
        assert name in names
    assert zcproxy.get_proxy("naswot").needs_data
    assert not zcproxy.get_proxy("entropic").needs_data
    assert all(p.description for p in zcproxy.proxy_info())


def test_unknown_proxy_lists_the_available_ones():
    with pytest.raises(zcproxy.UnknownProxyError) as err:
        zcproxy.score(nn.Linear(2, 2), "entropy_score")
    assert "entropic" in str(err.value) and "logsynflow" in str(err.value)


def test_unknown_option_is_an_error_not_ignored():
    with pytest.raises(TypeError, match="repeat"):
        zcproxy.score(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), "entropic", repeat=3,
                      input_shape=(3,))


def test_user_proxy_registers_from_outside_the_package():
    @zcproxy.register_proxy("test_width", higher_is_better=True, description="mean width")
    def width(ctx, *, scale: float = 1.0):
        layers = [m for m in ctx.model.modules() if isinstance(m, nn.Linear)]
        return scale * sum(m.out_features for m in layers) / len(layers)

    try:
        model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
        assert zcproxy.score(model, "test_width") == 4.0
        assert zcproxy.score(model, "test_width", scale=2.0) == 8.0
        assert "test_width" in zcproxy.available_proxies()
        with pytest.raises(ValueError, match="already registered"):
            zcproxy.register_proxy("test_width")(width)
    finally:
        zcproxy.registry.unregister_proxy("test_width")
    assert "test_width" not in zcproxy.available_proxies()


def test_nan_score_is_reported_not_swallowed():
    zcproxy.register_proxy("test_nan")(lambda ctx: float("nan"))
    try:
        with pytest.raises(zcproxy.NonFiniteScoreError, match="test_nan"):
            zcproxy.score(nn.Linear(2, 2), "test_nan")
        with pytest.warns(RuntimeWarning, match="test_nan"):
            assert math.isnan(zcproxy.score(nn.Linear(2, 2), "test_nan", nonfinite="nan"))
    finally:
        zcproxy.registry.unregister_proxy("test_nan")


def test_model_without_activations_is_an_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    for proxy, kw in (("entropic", {}), ("naswot", {"inputs": torch.randn(4, 3, 8, 8)})):
        with pytest.raises(zcproxy.NoActivationsError, match="no activation modules"):
            zcproxy.score(model, proxy, **kw)


def test_wrong_input_shape_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    with pytest.raises(zcproxy.ProxyInputError, match=r"\(1, 3, 16, 16\)"):
        zcproxy.score(model, "logsynflow", input_shape=(3, 16, 16))
    with pytest.raises(zcproxy.ProxyInputError, match="at least 2"):
        zcproxy.score(model, "naswot", inputs=torch.randn(1, 3, 32, 32))
    with pytest.raises(zcproxy.ProxyInputError, match="needs real data"):
        zcproxy.score(model, "naswot")
    with pytest.raises(zcproxy.ProxyInputError, match="labels"):
        zcproxy.score(model, "snip", inputs=torch.randn(2, 3, 32, 32))


def test_params_proxy_counts_trainable_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert zcproxy.score(model, "n_params") == 3 * 4 + 4 + 4 * 2 + 2


def test_device_argument_is_honoured():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert zcproxy.score(model, "entropic", device="cpu") == zcproxy.score(model, "entropic")
    with pytest.raises((RuntimeError, AssertionError)):
        zcproxy.score(model, "entropic", device="definitely-not-a-device")


def _two_conv_bn_net(classes: int = 3) -> nn.Module:
    """Two conv-BN-ReLU blocks and a linear head, seeded: the smallest network every proxy of
    the zoo scores (AZ-NAS needs two blocks)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                         nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, classes))


def test_a_numpy_integer_seed_is_a_seed_and_a_float_is_an_error():
    # A seed drawn from numpy (a benchmark index, a permutation) reached AZ-NAS's
    # torch.Generator().manual_seed as np.int64 and failed with "an integer is required".
    model = _two_conv_bn_net(classes=2)
    x = torch.randn(8, 3, 12, 12)
    as_int = zcproxy.score(model, "az_expressivity", inputs=x, seed=7)
    assert math.isfinite(as_int)
    assert zcproxy.score(model, "az_expressivity", inputs=x, seed=np.int64(7)) == as_int
    with pytest.raises(TypeError, match="seed must be an integer, not float"):
        zcproxy.score(model, "az_expressivity", inputs=x, seed=7.5)


def test_labels_of_any_integer_dtype_are_labels_and_other_targets_a_clear_error():
    model = _two_conv_bn_net()
    x, y = torch.randn(8, 3, 12, 12), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for proxy in ("snip", "grad_norm", "zico"):
        reference = zcproxy.score(model, proxy, inputs=x, targets=y)
        for dtype in (torch.int32, torch.int16, torch.uint8):  # numpy's int32 labels, bytes
            assert zcproxy.score(model, proxy, inputs=x, targets=y.to(dtype)) == reference
    refused = {"tensor of class indices, got ndarray": y.numpy(),
               "tensor of class indices, got list": y.tolist(),
               "integer class indices, got torch.float32": y.float(),
               r"one class index per input \(1-D\), got shape \(8, 1\)": y[:, None],
               "class indices >= 0, got -1": y - 1}
    for message, targets in refused.items():
        with pytest.raises(zcproxy.ProxyInputError, match=message):
            zcproxy.score(model, "snip", inputs=x, targets=targets)


def test_a_float64_or_bfloat16_model_is_scored_in_its_own_dtype():
    # The inputs a proxy builds itself (AZ-NAS's and Zen's noise, the zeros the structural
    # baselines trace) were float32 whatever the model, so these failed in its first layer.
    model = _two_conv_bn_net()
    x = torch.randn(8, 3, 14, 14)
    own_inputs = ["az_expressivity", "az_progressivity", "az_complexity", "zen", "depth",
                  "n_flops", "n_act"]
    reference = zcproxy.score_many(model, own_inputs, inputs=x)
    for dtype, rel in ((torch.float64, 1e-4), (torch.bfloat16, 5e-2)):
        scores = zcproxy.score_many(copy.deepcopy(model).to(dtype), own_inputs,
                                    inputs=x.to(dtype))
        for proxy in own_inputs:
            assert scores[proxy] == pytest.approx(reference[proxy], rel=rel), (dtype, proxy)


def test_tenas_lr_says_when_its_crops_are_too_small_for_the_network():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(8, 3, 14, 14)
    with pytest.raises(ValueError, match=r"3x3 crops .* cannot take them at any width .*"
                                         r"tenas_lr: crop=\.\.\."):
        zcproxy.score(model, "tenas_lr", inputs=x)
    assert zcproxy.score(model, "tenas_lr", inputs=x, crop=5) >= 1
