"""Issue 14 part 2: ZiCo, MeCo, SWAP, AZ-NAS's components and TE-NAS's indicators, each pinned
to a value computed by hand on a network of one or two layers, plus determinism, the
degenerate NAS-Bench-201 cell and the caller's model left alone."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import zcproxy
from nets import small_cnn
from zcproxy.nasbench.cells import tss_network
from zcproxy.proxies.swap import distinct_rows
from zcproxy.surgery import narrow_copy

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small forwards: two OpenMP threads on a shared 2-core machine spin-wait on each
    other (a 16-image SWAP took 18 s instead of 1 s), as in test_nats.py."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


MODERN = ["zico", "meco", "swap", "swap_reg", "az_expressivity", "az_progressivity",
          "az_trainability", "az_complexity", "tenas_ntk", "tenas_lr"]


def conv1x1(c_in, weights, bias=None, stride=1):
    """A 1x1 convolution with the given (c_out, c_in) weights and optional bias."""
    w = torch.tensor(weights, dtype=torch.float32).reshape(-1, c_in, 1, 1)
    conv = nn.Conv2d(c_in, w.shape[0], 1, stride=stride, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(w)
        if bias is not None:
            conv.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return conv


def linear(weights, bias=None):
    w = torch.tensor(weights, dtype=torch.float32)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias is not None:
            lin.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return lin


# --------------------------------------------------------------------------- ZiCo
def test_zico_by_hand():
    """Linear(2 -> 2, W = 0), batches {x1 = [1, 2], y = 0} and {x2 = [2, -1], y = 1}.

    With W = 0 the softmax is [.5, .5]; the cross-entropy gradient is (p - e_y) xᵀ:
    g1 = [[-.5, -1], [.5, 1]], g2 = [[1, -.5], [-1, .5]].  Per weight mean|g| / std(g) (population
    std = |g1 - g2| / 2): .75/.75, .75/.25, .75/.75, .75/.25 = 1, 3, 1, 3; ZiCo = log 8.
    The first release accumulated: its second record is g1 + g2 = [[.5, -1.5], [-.5, 1.5]], so
    the ratios are .5/.5, 1.25/.25, .5/.5, 1.25/.25 = 1, 5, 1, 5; log 12.
    """
    model = nn.Sequential(linear([[0.0, 0.0], [0.0, 0.0]]))
    x, y = torch.tensor([[1.0, 2.0], [2.0, -1.0]]), torch.tensor([0, 1])
    assert zcproxy.score(model, "zico", inputs=x, targets=y) == pytest.approx(math.log(8))
    assert zcproxy.score(model, "zico", inputs=x, targets=y, accumulate=True) == pytest.approx(
        math.log(12))


def test_zico_without_any_varying_gradient_is_undefined():
    """Both batches identical: every std is 0, no layer contributes, log of an empty sum."""
    model = nn.Sequential(linear([[0.0, 0.0], [0.0, 0.0]]))
    x, y = torch.tensor([[1.0, 2.0], [1.0, 2.0]]), torch.tensor([0, 0])
    assert zcproxy.score(model, "zico", inputs=x, targets=y, nonfinite="keep") == -math.inf
    with pytest.raises(zcproxy.NonFiniteScoreError, match="varies between batches"):
        zcproxy.score(model, "zico", inputs=x, targets=y)


# --------------------------------------------------------------------------- MeCo
ONE_IMAGE = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)


def test_meco_by_hand():
    """conv(1 -> 2, w = [1, 1], b = [-2, 0]) -> ReLU on the image [1, 2, 3, 4].

    Every module is hooked, the model itself included.  conv: channels [-1, 0, 1, 2] and
    [1, 2, 3, 4], correlation 1, matrix [[1, 1], [1, 1]], smallest eigenvalue 0.  ReLU (and the
    Sequential, whose output is the ReLU's): [0, 0, 1, 2] and [1, 2, 3, 4]; deviations
    [-.75, -.75, .25, 1.25] and [-1.5, -.5, .5, 1.5]: r = 3.5 / sqrt(2.75 * 5) = 0.943880,
    smallest eigenvalue 1 - r.  MeCo = 0 + 2 (1 - r) = 0.112240.
    """
    model = nn.Sequential(conv1x1(1, [1.0, 1.0], bias=[-2.0, 0.0]), nn.ReLU())
    r = 3.5 / math.sqrt(2.75 * 5)
    got = zcproxy.score(model, "meco", inputs=ONE_IMAGE)
    assert got == pytest.approx(2 * (1 - r), abs=1e-12)
    assert got == pytest.approx(0.112240, abs=1e-6)


def test_meco_opt_channel_sampling_by_hand():
    """MeCo_opt with 1 sampled channel: each module's 1 x 1 correlation matrix is [1], scaled
    by C / 1 = 2, whichever channel is drawn (none is constant): 3 modules x 2 = 6."""
    model = nn.Sequential(conv1x1(1, [1.0, 1.0], bias=[-2.0, 0.0]), nn.ReLU())
    assert zcproxy.score(model, "meco", inputs=ONE_IMAGE, channels=1) == pytest.approx(6.0)


# --------------------------------------------------------------------------- SWAP
SWAP_INPUTS = torch.tensor([[1.0, 2.0], [-1.0, 3.0], [2.0, -1.0]]).reshape(3, 1, 1, 2)


def swap_model():
    return nn.Sequential(conv1x1(1, [1.0, -1.0, 2.0]), nn.ReLU())


def test_swap_by_hand():
    """conv(1 -> 3, w = [1, -1, 2]) -> ReLU on three 1x2 images [1, 2], [-1, 3], [2, -1].

    Each unit (channel, position) has a 3-bit pattern over the samples: channel 0 = relu(x):
    p0 (1, 0, 1), p1 (1, 1, 0); channel 1 = relu(-x): p0 (0, 1, 0), p1 (0, 0, 1); channel 2 =
    relu(2x) repeats channel 0.  6 units, 4 distinct patterns: SWAP = 4.
    swap_reg: 3 parameters = 3e-6 M; with mu = 1e-6, sigma = 4e-12 the factor is
    exp(-(2e-6)^2 / 4e-12) = e^-1: 4 / e.
    """
    kw = dict(inputs=SWAP_INPUTS, reinit=False)
    assert zcproxy.score(swap_model(), "swap", **kw) == 4.0
    assert zcproxy.score(swap_model(), "swap_reg", mu=1e-6, sigma=4e-12, **kw) == pytest.approx(
        4 / math.e)


def test_swap_reinitialises_so_weights_do_not_matter():
    """The default re-draws N(0, 1) weights 32 times: scaling the caller's weights changes
    nothing; the mean over repeats is a multiple of 1/32."""
    x = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a, b = swap_model(), swap_model()
    with torch.no_grad():
        b[0].weight.mul_(7.0)
    assert zcproxy.score(a, "swap", inputs=x) == zcproxy.score(b, "swap", inputs=x)
    assert (zcproxy.score(a, "swap", inputs=x) * 32) % 1 == 0


@pytest.mark.parametrize("n", [3, 16, 24, 40, 70])
def test_fast_pattern_count_equals_the_plain_one(n):
    """The int-code count (a table up to 24 samples, a sort up to 64, rows beyond) against
    counting distinct rows of the unit x sample matrix."""
    from zcproxy.context import ProxyContext
    from zcproxy.proxies.swap import distinct_unit_patterns, unit_patterns
    net = small_cnn().train()
    x = torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(n))
    ctx = ProxyContext(model=net, device=torch.device("cpu"), inputs=x)
    assert distinct_unit_patterns(ctx, net, x) == distinct_rows(unit_patterns(ctx, net, x)) > 1


def test_distinct_rows_wider_than_a_word():
    gen = np.random.default_rng(0)
    bits = gen.random((50, 70)) > 0.5
    bits = np.concatenate([bits, bits[:7]])
    assert distinct_rows(bits) == len({r.tobytes() for r in bits}) == 50


# --------------------------------------------------------------------------- AZ-NAS
def az_expressive_model():
    return nn.Sequential(conv1x1(2, [[1.0, 0.0], [0.0, 1.0]]), conv1x1(2, [[1.0, 0.0], [0.0, 0.5]]))


# One image, 2 channels, 2x2: its 4 channel vectors are (1, 0), (-1, 0), (0, 2), (0, -2).
AZ_IMAGE = torch.tensor([[1.0, -1.0], [0.0, 0.0], [0.0, 0.0], [2.0, -2.0]]).reshape(1, 2, 2, 2)


def entropy(*p):
    return -sum(q * math.log(q + 1e-8) for q in p)


def test_az_expressivity_and_progressivity_by_hand():
    """Blocks: conv1 (identity weights) and conv2 (diag(1, .5)) on AZ_IMAGE.

    F1's vectors (1, 0), (-1, 0), (0, 2), (0, -2) have mean 0 and covariance diag(.5, 2): p =
    (.2, .8), entropy 0.500402.  F2's are (±1, 0), (0, ±1): covariance diag(.5, .5), p = (.5, .5),
    entropy ln 2.  Expressivity = 1.193549; progressivity = ln 2 - 0.500402 = 0.192745.
    """
    kw = dict(use_inputs=True, init="none")
    h1, h2 = entropy(0.2, 0.8), entropy(0.5, 0.5)
    got = zcproxy.score_many(az_expressive_model(), {"az_expressivity": kw,
                                                     "az_progressivity": kw}, inputs=AZ_IMAGE)
    assert got["az_expressivity"] == pytest.approx(h1 + h2, rel=1e-9)
    assert got["az_progressivity"] == pytest.approx(h2 - h1, rel=1e-9)
    assert h1 + h2 == pytest.approx(1.193549, abs=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_az_trainability_by_hand(stride):
    """conv(1 -> 1, w = 3) -> conv(1 -> 1, w = 2, stride s) on a 1-channel 2x2 image.

    One pair: g_in = 2 g_out wherever the second conv reads, so M = Σ 2 g² / n = 2 (g = ±1)
    whatever the random signs; with stride 2, g_in is 0 except at one of the 4 positions and its
    pixel-unshuffle to 1x1 is (2g, 0, 0, 0): M = (2, 0, 0, 0)ᵀ, σ = 2 again.
    Trainability = -2 - 1/(2 + 1e-6) + 2 = -0.4999998.
    """
    model = nn.Sequential(conv1x1(1, [3.0]), conv1x1(1, [2.0], stride=stride))
    x = torch.tensor([1.0, -2.0, 0.5, 4.0]).reshape(1, 1, 2, 2)
    got = zcproxy.score(model, "az_trainability", inputs=x, use_inputs=True, init="none")
    assert got == pytest.approx(-1 / (2 + 1e-6), rel=1e-9)


class Scale(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x):
        return x * self.s


def test_az_trainability_of_an_identity_block_is_minus_infinity():
    """A block computing x * 1 passes g_out on unchanged: AZ-NAS scores it -inf."""
    model = nn.Sequential(conv1x1(1, [3.0]), Scale(1.0))
    kw = dict(input_shape=(1, 4, 4))
    with pytest.raises(zcproxy.NonFiniteScoreError, match="identity block"):
        zcproxy.score(model, "az_trainability", **kw)
    assert zcproxy.score(model, "az_trainability", nonfinite="keep", **kw) == -math.inf
    assert math.isfinite(zcproxy.score(nn.Sequential(conv1x1(1, [3.0]), Scale(0.5)),
                                       "az_trainability", **kw))


def test_az_complexity_is_the_flop_count_by_hand():
    """Two 1x1 convs 2 -> 2 on a 2x2 input: 2 x (2·2 MACs per position x 4 positions) x 2
    FLOPs per MAC = 64."""
    model = az_expressive_model()
    got = zcproxy.score(model, "az_complexity", input_shape=(2, 2, 2))
    assert got == 64.0 == zcproxy.score(model, "n_flops", input_shape=(2, 2, 2))


def test_az_blocks_of_a_nats_network_are_stem_and_cells():
    """The trunk walk finds what AZ-NAS's extract_cell_features returns on NAS-Bench-201."""
    from zcproxy.context import ProxyContext
    from zcproxy.proxies.aznas import trunk_blocks
    torch.manual_seed(0)
    net = tss_network("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
                      "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", 10, N=1)
    ctx = ProxyContext(model=net, device=torch.device("cpu"), output=zcproxy.last_of_tuple)
    with torch.no_grad():
        blocks = trunk_blocks(net, lambda: ctx.forward(net, torch.randn(2, 3, 8, 8)))
    assert blocks == [("stem", 0)] + [(f"cells.{i}", 0) for i in range(5)]


# --------------------------------------------------------------------------- TE-NAS
def test_tenas_ntk_by_hand():
    """Linear(2 -> 2) with a bias; samples x1 = [1, 0], x2 = [1, 1].

    The gradient of Σ_k logits[i, k] with respect to W is x_i in each of the 2 rows; the bias
    is not a weight (TE-NAS takes parameters named "weight").  NTK = 2 X Xᵀ = 2 [[1, 1], [1, 2]],
    eigenvalues 3 ± √5, condition number (3 + √5)/(3 - √5) = 6.854102.
    """
    model = nn.Sequential(linear([[0.3, -1.0], [2.0, 0.5]], bias=[1.0, -1.0]))
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = (3 + math.sqrt(5)) / (3 - math.sqrt(5))
    assert zcproxy.score(model, "tenas_ntk", inputs=x) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(6.854102, abs=1e-6)
    assert zcproxy.get_proxy("tenas_ntk").higher_is_better is False


def test_tenas_ntk_singular_kernel_is_undefined():
    """x2 = 2 x1: the per-sample gradients are parallel, the NTK has rank 1."""
    model = nn.Sequential(linear([[0.3, -1.0]]))
    x = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    assert zcproxy.score(model, "tenas_ntk", inputs=x, nonfinite="keep") == math.inf
    with pytest.raises(zcproxy.NonFiniteScoreError, match="NTK is singular"):
        zcproxy.score(model, "tenas_ntk", inputs=x)


def test_tenas_lr_by_hand():
    """conv(1 -> 2, w = [1, -1]) -> ReLU, full width, 1x1 crops of four 1x1 images 3, -2, 0, 5.

    A value v has the pattern (v > 0, -v > 0): 3 and 5 give (1, 0), -2 gives (0, 1), 0 gives
    (0, 0).  3000 draws from 4 images reach all four: 3 linear regions.
    """
    model = nn.Sequential(conv1x1(1, [1.0, -1.0]), nn.ReLU())
    x = torch.tensor([3.0, -2.0, 0.0, 5.0]).reshape(4, 1, 1, 1)
    assert zcproxy.score(model, "tenas_lr", inputs=x, width=None, crop=1, channels=None) == 3.0


def test_tenas_lr_counts_on_a_one_channel_copy():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    thin = narrow_copy(model, 1, torch.randn(2, 1, 3, 3), seed=0)
    assert [m.out_channels for m in thin.modules() if isinstance(m, nn.Conv2d)] == [1, 1]
    assert thin[0].in_channels == 1 and thin[-1].out_features == 10
    assert model[0].out_channels == 8  # the original is untouched
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    lr = zcproxy.score(model, "tenas_lr", inputs=x)
    assert 1 <= lr <= 3000 and lr == zcproxy.score(model, "tenas_lr", inputs=x)


# --------------------------------------------------------------------------- all of them


def batch(n=16, size=16):
    gen = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, size, size, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def test_modern_proxies_are_registered_with_their_direction():
    info = {p.name: p for p in zcproxy.proxy_info()}
    needs_data = {"zico", "meco", "swap", "swap_reg", "tenas_ntk", "tenas_lr"}
    for name in MODERN:
        assert info[name].needs_data == (name in needs_data), name
        assert info[name].higher_is_better == (name != "tenas_ntk"), name


def test_modern_proxies_are_deterministic_and_finite():
    x, y = batch()
    first = zcproxy.score_many(small_cnn(), MODERN, inputs=x, targets=y)
    second = zcproxy.score_many(small_cnn(), MODERN, inputs=x, targets=y)
    assert first == second
    assert all(math.isfinite(v) for v in first.values()), first
    assert zcproxy.score(small_cnn(), "swap", inputs=x, seed=1) != first["swap"]


def snapshot(model):
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "modes": [m.training for m in model.modules()],
            "grads": [p.grad for p in model.parameters()],
            "rng": torch.get_rng_state()}


@pytest.mark.parametrize("train_mode", [True, False])
def test_modern_proxies_leave_the_callers_model_alone(train_mode):
    model = small_cnn().train(train_mode)
    before = snapshot(model)
    x, y = batch()
    torch.set_rng_state(before["rng"])
    zcproxy.score_many(model, MODERN, inputs=x, targets=y)
    after = snapshot(model)
    for key in before["state"]:
        assert torch.equal(before["state"][key], after["state"][key]), key
    assert before["modes"] == after["modes"]
    assert all(g is None for g in after["grads"])
    assert torch.equal(before["rng"], after["rng"]), "the global RNG state was consumed"


# NATS-tss index 8274: node 3 = none(node 0) + skip(node 1 = none(node 0)) + none(node 2), so
# every cell outputs 0 and the network's output does not depend on its input.
DEGENERATE = "|none~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|skip_connect~1|none~2|"
UNDEFINED = {"zico": -math.inf, "az_expressivity": -math.inf, "az_progressivity": -math.inf,
             "tenas_ntk": math.inf}


def test_modern_proxies_on_a_cell_whose_output_ignores_the_input():
    """Undefined proxies give their limit with a reason; the rest stay finite (MeCo, SWAP and
    the region count see all-zero maps: 0 correlation, a single pattern, a single region).
    Smaller batches and fewer SWAP repeats than the defaults keep the test short."""
    from zcproxy.api import resolve_proxies, score_timed
    from zcproxy.context import ProxyContext
    torch.manual_seed(8274)
    net = tss_network(DEGENERATE, 10)
    x, y = zcproxy.data.cifar10_batch(16) if _has_cifar() else batch(16, 32)
    options = {p: {} for p in MODERN}
    options.update(swap={"repeats": 2}, swap_reg={"repeats": 2}, tenas_ntk={"batch_size": 4},
                   az_expressivity={"batch_size": 8}, az_progressivity={"batch_size": 8},
                   az_trainability={"batch_size": 8})
    ctx = ProxyContext(model=net, device=torch.device("cpu"), output=zcproxy.last_of_tuple,
                       inputs=x, targets=y, seed=8274)
    got = {r.name: r for r in score_timed(ctx, resolve_proxies(options), nonfinite="keep")}
    for name in MODERN:
        if name in UNDEFINED:
            assert got[name].value == UNDEFINED[name] and got[name].reason, name
        else:
            assert math.isfinite(got[name].value) and not got[name].reason, name
    assert got["swap"].value == 1.0 and got["tenas_lr"].value == 1.0
    with pytest.raises(zcproxy.NonFiniteScoreError, match="undefined on this model"):
        zcproxy.score(net, "zico", inputs=x[:4], targets=y[:4], output=zcproxy.last_of_tuple)


def _has_cifar():
    try:
        zcproxy.data.cifar10_batch(1)
        return True
    except Exception:
        return False
