"""Issue 14 part 2: ZiCo, MeCo, SWAP, AZ-NAS's components and TE-NAS's indicators, each pinned
to a value computed by hand on a network of one or two layers, plus determinism, the
degenerate NAS-Bench-201 cell and the caller's model left alone."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import zcproxy
from nets import linear, small_cnn
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
    swap_reg: 3 parameters = 3e-3 thousand (the official unit); with mu = 1e-3, sigma = 4e-6
    the factor is exp(-(2e-3)^2 / 4e-6) = e^-1: 4 / e.
    """
    kw = dict(inputs=SWAP_INPUTS, reinit=False)
    assert zcproxy.score(swap_model(), "swap", **kw) == 4.0
    assert zcproxy.score(swap_model(), "swap_reg", mu=1e-3, sigma=4e-6, **kw) == pytest.approx(
        4 / math.e)


class AuxiliarySwapModel(nn.Module):
    """swap_model plus a DARTS-style auxiliary head (30 parameters) the forward never uses."""

    def __init__(self):
        super().__init__()
        self.body = swap_model()
        self.auxiliary_head = nn.Linear(5, 5)

    def forward(self, x):
        return self.body(x)


def test_swap_reg_regulariser_in_official_units():
    """pym1024/SWAP's cal_regular_factor: exp(-(P - mu)^2 / sigma), P = parameters / 1e3 without
    names containing "auxiliary".  swap_model has 3 parameters, P = 0.003:
    * defaults mu = 1500, sigma = 1.5e6: (0.003 - 1500)^2 / 1.5e6 = 1.499994, so
      swap_reg = 4 e^-1.499994 (= 0.89252...), the old mu = sigma = 1.5 in millions;
    * unit=1e6 reads mu, sigma in millions: mu = sigma = 1.5 gives the same factor;
    * unit=1: P = 3, mu = 1, sigma = 4: e^-1;
    * the auxiliary head's 30 parameters are not counted: same values with it."""
    kw = dict(inputs=SWAP_INPUTS, reinit=False)
    expected = 4 * math.exp(-((0.003 - 1500) ** 2) / 1.5e6)
    assert expected == pytest.approx(4 * math.exp(-1.499994), rel=1e-9)
    for model in (swap_model(), AuxiliarySwapModel()):
        assert zcproxy.score(model, "swap_reg", **kw) == pytest.approx(expected, rel=1e-12)
        assert zcproxy.score(model, "swap_reg", mu=1.5, sigma=1.5, unit=1e6, **kw) \
            == pytest.approx(expected, rel=1e-12)
        assert zcproxy.score(model, "swap_reg", mu=1.0, sigma=4.0, unit=1.0, **kw) \
            == pytest.approx(4 / math.e, rel=1e-12)
    with pytest.raises(ValueError, match="unit"):
        zcproxy.score(swap_model(), "swap_reg", unit=0.0, **kw)


def test_swap_reinitialises_so_weights_do_not_matter():
    """The default re-draws N(0, 1) weights 32 times: scaling the caller's weights changes
    nothing; the mean over repeats is a multiple of 1/32."""
    x = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a, b = swap_model(), swap_model()
    with torch.no_grad():
        b[0].weight.mul_(7.0)
    assert zcproxy.score(a, "swap", inputs=x) == zcproxy.score(b, "swap", inputs=x)
    assert (zcproxy.score(a, "swap", inputs=x) * 32) % 1 == 0


@pytest.mark.parametrize("batch_size", [16, 70])
def test_swap_without_units_on_a_map_is_undefined_with_the_reason(batch_size):
    """An MLP's activations are vectors, which SWAP leaves out: nothing to count, on the packed
    path (16 samples) and the row path (70), for SWAP and its regularised form."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(70, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    for name in ("swap", "swap_reg"):
        got = zcproxy.score(net, name, inputs=x, batch_size=batch_size, repeats=2,
                            nonfinite="nan", return_details=True)
        assert math.isnan(got.value) and "feature map or token sequence" in got.reason


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


def _rademacher_pairs(maps, gen):
    """AZ-NAS's draws: one ±1 g_out per consecutive pair, last pair first; (g_in, g_out)."""
    grads = []
    for f_in, f_out in reversed(list(zip(maps, maps[1:]))):
        g_out = (torch.randint(0, 2, f_out.shape, generator=gen) * 2 - 1).to(f_out)
        g_in, = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True)
        grads.append((g_in.double(), g_out.double()))
    return grads


def _pair_score(m):
    sigma = float(np.linalg.svd(np.asarray(m), compute_uv=False).max())
    return -sigma - 1 / (sigma + 1e-6) + 2


def test_az_trainability_across_width_and_stride_changes():
    """conv 1 -> 2 and conv 2 -> 3 (1x1, a width change at 3x3), then conv 3 -> 2 (1x1,
    stride 2: 3x3 -> 2x2, a stride that does not divide the resolution).

    For a 1x1 conv, g_in = Wᵀ g_out at every position it reads.  Pair (a -> b): M = W_bᵀ G_b,
    G_b = Σ g_out g_outᵀ / (B·9), a 2x3 matrix.  Pair (b -> c): the 3x3 g_in, zero-padded to
    4x4 and unshuffled by 2, is W_cᵀ g_out at offset (0, 0) of each 2x2 cell and 0 at the other
    three (padding included): M = [W_cᵀ G_c; 0; 0; 0] (12x2), G_c over B·4 positions.  The
    first release rejected both pairs (ProxyInputError)."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(2, 3, 1, bias=False),
                          nn.Conv2d(3, 2, 1, stride=2, bias=False))
    x = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    got = zcproxy.score(model, "az_trainability", inputs=x, use_inputs=True, init="none")

    xg = x.clone().requires_grad_(True)
    f1 = model[0](xg)
    f2 = model[1](f1)
    f3 = model[2](f2)
    (g2, g3), (g1, g2b) = _rademacher_pairs([f1, f2, f3], torch.Generator().manual_seed(0))
    w_b = model[1].weight.detach().double().reshape(3, 2)
    w_c = model[2].weight.detach().double().reshape(2, 3)
    gram_b = torch.einsum("bohw,bphw->op", g2b, g2b) / (2 * 9)
    gram_c = torch.einsum("bohw,bphw->op", g3, g3) / (2 * 4)
    assert torch.allclose(g2[:, :, ::2, ::2], torch.einsum("oc,bohw->bchw", w_c, g3))
    m_ab = w_b.T @ gram_b
    m_bc = torch.cat([w_c.T @ gram_c, torch.zeros(9, 2, dtype=torch.float64)])
    expected = (_pair_score(m_ab) + _pair_score(m_bc)) / 2
    assert got == pytest.approx(expected, rel=1e-6)  # float32 gradients against float64 W


class ToTokens(nn.Module):
    """A ViT's embedding: a 2x2 stride-2 patch conv, flatten, class token first (functional)."""

    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(2, 3, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, 3))
        self.blocks = nn.Sequential(TokenBlock(), TokenBlock())
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1)
        return self.head(self.blocks(x)[:, 0])


class TokenBlock(nn.Module):
    """x + mix(x) over the 5 tokens, then x + tanh(mlp(x)) over the 3 channels."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(5, 5)
        self.mlp = nn.Linear(3, 3)
        self.act = nn.Tanh()

    def forward(self, x):
        x = x + self.mix(x.transpose(1, 2)).transpose(1, 2)
        return x + self.act(self.mlp(x))


def _entropy_of(vectors):
    v = vectors.detach().double()
    v = v - v.mean(0, keepdim=True)
    s = torch.linalg.eigvalsh(v.T @ v / len(v)).clamp_min(0)
    p = s / s.sum()
    return float((-p * torch.log(p + 1e-8)).sum())


def test_az_on_a_token_model_by_direct_computation():
    """Maps: the patch embedding (B, 3, 2, 2) and each block's tokens (B, 5, 3), found across
    the functional flatten + class token (the first release stopped there: one map).

    Entropies: of the B·4 patch vectors and of the B·5 token vectors (class token included).
    Pair embedding -> block 0: the 4 patches are tokens 1..4 in row-major order, the class
    token has no patch and is left out: M = Σ g_in(patch) g_out(token)ᵀ / (B·4).  Pair block 0
    -> block 1: M = Σ over all 5 tokens / (B·5)."""
    from zcproxy.context import ProxyContext
    from zcproxy.proxies.aznas import trunk_blocks
    torch.manual_seed(2)
    model = ToTokens()
    x = torch.randn(6, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    ctx = ProxyContext(model=model, device=torch.device("cpu"), input_shape=(2, 4, 4))
    blocks = trunk_blocks(model, lambda: ctx.forward(model, x[:2]))
    assert blocks == [("patch_embed", 0), ("blocks.0", 0), ("blocks.1", 0)]

    kw = dict(use_inputs=True, init="none")
    names = ["az_expressivity", "az_progressivity", "az_trainability"]
    got = zcproxy.score_many(model, {p: kw for p in names}, inputs=x)

    xg = x.clone().requires_grad_(True)
    f0 = model.patch_embed(xg)
    tokens = torch.cat([model.cls.expand(6, -1, -1), f0.flatten(2).transpose(1, 2)], dim=1)
    f1 = model.blocks[0](tokens)
    f2 = model.blocks[1](f1)
    h = [_entropy_of(f0.permute(0, 2, 3, 1).reshape(-1, 3)),
         _entropy_of(f1.reshape(-1, 3)), _entropy_of(f2.reshape(-1, 3))]
    assert got["az_expressivity"] == pytest.approx(sum(h), rel=1e-9)
    assert got["az_progressivity"] == pytest.approx(min(h[1] - h[0], h[2] - h[1]), rel=1e-9)

    (g1, g2), (g0, g1b) = _rademacher_pairs([f0, f1, f2], torch.Generator().manual_seed(0))
    m_12 = torch.einsum("blc,bld->cd", g1, g2) / (6 * 5)
    m_01 = sum(torch.outer(g0[b, :, p // 2, p % 2], g1b[b, 1 + p])
               for b in range(6) for p in range(4)) / (6 * 4)
    expected = (_pair_score(m_12) + _pair_score(m_01)) / 2
    assert got["az_trainability"] == pytest.approx(expected, rel=1e-9)


class ToChannelsLast(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def test_az_reads_channels_last_maps_and_skips_the_permute():
    """conv 1 -> 2 (NCHW), a permute to (B, H, W, C) (not a block: it only moves dims), then a
    linear 2 -> 3 on the last dim, as Swin keeps its maps: the linear's map has 3 channels in
    dim 3.  Pair: g_in = Wᵀ g_out at each position, M = Wᵀ G (2x3)."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), ToChannelsLast(), nn.Linear(2, 3))
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    kw = dict(use_inputs=True, init="none")
    got = zcproxy.score_many(model, {"az_expressivity": kw, "az_trainability": kw}, inputs=x)

    xg = x.clone().requires_grad_(True)
    f0 = model[0](xg)
    f1 = model[2](f0.permute(0, 2, 3, 1))
    h = _entropy_of(f0.permute(0, 2, 3, 1).reshape(-1, 2)) + _entropy_of(f1.reshape(-1, 3))
    assert got["az_expressivity"] == pytest.approx(h, rel=1e-9)
    [(_, g_out)] = _rademacher_pairs([f0, f1], torch.Generator().manual_seed(0))
    w = model[2].weight.detach().double()
    gram = torch.einsum("bhwc,bhwd->cd", g_out, g_out) / (5 * 16)
    assert got["az_trainability"] == pytest.approx(_pair_score(w.T @ gram), rel=1e-6)


@pytest.mark.parametrize("last", ["conv", "batchnorm"])
def test_az_reads_a_conv1d_map_channels_first_when_its_length_equals_its_width(last):
    """Conv1d 3 -> 4, then a block Conv1d 4 -> 5 (ending in a BatchNorm1d(5), or not) on
    sequences of length 5: the second map is (B, 5, 5), channels in dim 1 although dim 2 is
    as wide.  Expressivity = entropy of the B·5 4-dim vectors + of the B·5 5-dim vectors
    (read channels-last it would take the 5 positions of each channel as its vector)."""
    torch.manual_seed(2)
    block = [nn.Conv1d(4, 5, 1), *([nn.BatchNorm1d(5)] if last == "batchnorm" else [])]
    model = nn.Sequential(nn.Conv1d(3, 4, 1), nn.Sequential(*block))
    x = torch.randn(7, 3, 5, generator=torch.Generator().manual_seed(3))
    got = zcproxy.score(model, "az_expressivity", use_inputs=True, init="none", inputs=x)

    f0 = model[0](x)
    f1 = model(x)
    expected = _entropy_of(f0.transpose(1, 2).reshape(-1, 4)) + \
        _entropy_of(f1.transpose(1, 2).reshape(-1, 5))
    assert got == pytest.approx(expected, rel=1e-9)
    assert got != pytest.approx(_entropy_of(f0.transpose(1, 2).reshape(-1, 4))
                                + _entropy_of(f1.reshape(-1, 5)), rel=1e-6)


class EveryOtherToken(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 3)

    def forward(self, x):
        return self.proj(x)[:, ::2]


def test_az_trainability_is_nan_with_the_reason_when_tokens_cannot_be_paired():
    """6 tokens -> 3: no square grid to align them by; the entropies stay defined."""
    model = nn.Sequential(nn.Linear(3, 3), EveryOtherToken())
    got = zcproxy.score_many(model, ["az_expressivity", "az_progressivity", "az_trainability"],
                             input_shape=(6, 3), nonfinite="keep", return_details=True)
    assert math.isfinite(got["az_expressivity"].value)
    assert math.isfinite(got["az_progressivity"].value)
    assert math.isnan(got["az_trainability"].value)
    assert "'1'" in got["az_trainability"].reason
    assert "6 tokens form no square grid" in got["az_trainability"].reason


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


def _ntk_condition(model, x, train):
    """The NTK's condition number written out: one forward of the batch in the given mode, the
    gradient of each sample's summed logits with respect to every parameter named "weight"
    (BatchNorm's γ too, as TE-NAS's ``get_ntk_n`` takes them), Θ = J Jᵀ, λ_max / λ_min."""
    import copy

    import numpy as np
    net = copy.deepcopy(model).train(train)
    weights = [p for name, p in net.named_parameters() if "weight" in name]
    out = net(x).sum(dim=1)
    rows = [torch.cat([g.flatten() for g in torch.autograd.grad(out[i], weights,
                                                                retain_graph=True)])
            for i in range(x.shape[0])]
    j = torch.stack(rows).double().numpy()
    eig = np.linalg.eigvalsh(j @ j.T)
    return float(eig[-1] / eig[0])


def test_tenas_ntk_takes_batch_norm_in_train_mode_by_default():
    """With BatchNorm the samples of the batch are coupled through its batch statistics:
    TE-NAS scores in train mode, so the default must equal the train-mode kernel written out
    above, and differ from the eval-mode one (running statistics 0 and 1)."""
    model = nn.Sequential(linear([[0.3, -1.0], [2.0, 0.5], [-0.7, 1.2]]), nn.BatchNorm1d(3),
                          nn.ReLU(), linear([[1.0, -0.5, 0.25], [0.5, 2.0, -1.0]]))
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-0.5, 2.0], [0.3, -1.0]])
    train, evaluation = _ntk_condition(model, x, True), _ntk_condition(model, x, False)
    assert abs(train - evaluation) > 1e-3 * train  # the mode matters on this network
    assert zcproxy.score(model, "tenas_ntk", inputs=x) == pytest.approx(train, rel=1e-6)
    assert zcproxy.score(model, "tenas_ntk", inputs=x, train=False) == pytest.approx(
        evaluation, rel=1e-6)


def test_tenas_ntk_singular_kernel_is_undefined():
    """x2 = 2 x1: the per-sample gradients are parallel, the NTK has rank 1."""
    model = nn.Sequential(linear([[0.3, -1.0]]))
    x = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    assert zcproxy.score(model, "tenas_ntk", inputs=x, nonfinite="keep") == math.inf
    with pytest.raises(zcproxy.NonFiniteScoreError, match="NTK is singular"):
        zcproxy.score(model, "tenas_ntk", inputs=x)


def test_tenas_ntk_resolves_condition_numbers_float32_can_resolve():
    """x1 = [1, 0], x2 = [1, 2^-14]: NTK = [[1, 1], [1, 1 + d]] with d = 2^-28 (exact in
    float64 from float32 gradients), det d, so λ_min = d / λ_max and the condition number
    λ_max² / d ≈ 1.07e9.  Version 1's Weyl limit (1 / (2·√N·eps32) ≈ 3.0e6 at N = 2) called it
    undefined; version 2's, 1 / (N·eps32²) ≈ 3.5e13 at N = 2, keeps it."""
    model = nn.Sequential(linear([[0.3, -1.0]]))
    x = torch.tensor([[1.0, 0.0], [1.0, 2.0 ** -14]])
    d = 2.0 ** -28
    hi = (2 + d + math.sqrt(4 + d * d)) / 2
    assert zcproxy.score(model, "tenas_ntk", inputs=x) == pytest.approx(hi * hi / d, rel=1e-9)
    assert hi * hi / d > 1 / (2 * math.sqrt(2) * torch.finfo(torch.float32).eps)


def test_tenas_ntk_version_1_rows_carry_over_only_where_version_2_agrees():
    unchanged = zcproxy.get_proxy("tenas_ntk").carries_over["1"]
    singular = "undefined (inf): the NTK is singular (eigenvalues {} .. {}): the per-sample"
    assert unchanged(4.9e5, "")  # finite under the stricter limit: the same number now
    assert unchanged(math.inf, singular.format("0", "0"))  # a dead cell: singular under any
    assert unchanged(math.inf, singular.format("-3.1e-12", "8.4"))
    assert not unchanged(math.inf, singular.format("2.1e-06", "8.4"))  # may be defined now
    assert not unchanged(math.nan, "ValueError: tenas_ntk: the model has no trainable weights")


def test_tenas_lr_by_hand():
    """conv(1 -> 2, w = [1, -1]) -> ReLU, full width, 1x1 crops of four 1x1 images 3, -2, 0, 5.

    A value v has the pattern (v > 0, -v > 0): 3 and 5 give (1, 0), -2 gives (0, 1), 0 gives
    (0, 0).  3000 draws from 4 images reach all four: 3 linear regions.
    """
    model = nn.Sequential(conv1x1(1, [1.0, -1.0]), nn.ReLU())
    x = torch.tensor([3.0, -2.0, 0.0, 5.0]).reshape(4, 1, 1, 1)
    assert zcproxy.score(model, "tenas_lr", inputs=x, width=None, crop=1, channels=None) == 3.0


@pytest.mark.parametrize("arch", [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|"])
def test_a_full_width_region_count_over_64_inputs_saturates(arch):
    """Why VKDNW's TE-NAS row is set beside ``tenas_ntk`` (zcproxy.published): their
    AZ-NAS-derived count takes the ReLU patterns of 64 Gaussian 32x32 inputs through the
    full-width NATS network, and every input has a pattern of its own, so the count is 64 on
    every such network and their rank sum orders cells by the NTK alone."""
    torch.manual_seed(0)
    net = tss_network(arch, 10).train()
    layers = []
    hooks = [m.register_forward_hook(lambda _m, a, out: layers.append(out.flatten(1) > 0)
                                     if a[0].dim() == 4 else None)
             for m in net.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net(torch.randn(64, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert distinct_rows(torch.cat(layers, 1).numpy()) == 64


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


def test_az_reads_an_nb101_cell_as_channels_first_when_a_vertex_is_as_wide_as_the_map():
    """An NB101 cell concatenates the vertices feeding its output: here 4 vertices of 4
    channels make a 16 x 4 x 4 map.  The last layer run inside the cell is a 4-channel conv
    or BatchNorm, as wide as the map; az_* version 1 took the map's width for its channels
    (so 22 of the 1,000 NB101 zoo cells had no trainability, and wrong entropies).  The
    entropies are those of the maps' channel vectors (dim 1), computed here from the maps,
    and the trainability pair across the max-pool is defined."""
    from zcproxy.context import ProxyContext
    from zcproxy.nasbench.nb101 import build_network
    from zcproxy.proxies.aznas import trunk_blocks
    matrix = np.zeros((6, 6), dtype=int)
    matrix[0, 1:5] = 1
    matrix[1:5, 5] = 1
    torch.manual_seed(0)
    net = build_network(matrix, ["input"] + ["conv1x1-bn-relu"] * 4 + ["output"],
                        stem_channels=16, num_stacks=2, cells_per_stack=1).train()
    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    ctx = ProxyContext(model=net, device=torch.device("cpu"), input_shape=(3, 4, 4))
    blocks = [name for name, _ in trunk_blocks(net, lambda: ctx.forward(net, x[:2]))]
    assert blocks == ["layers.0", "layers.1", "layers.3"]  # stem, cell, (pool), cell

    kw = dict(use_inputs=True, init="none")
    got = zcproxy.score_many(net, {p: kw for p in ("az_expressivity", "az_trainability")},
                             inputs=x)
    maps, modules = {}, dict(net.named_modules())
    hooks = [modules[b].register_forward_hook(
        lambda m, i, o, b=b: maps.setdefault(b, o.detach().clone())) for b in blocks]
    net(x)
    for h in hooks:
        h.remove()
    assert maps["layers.1"].shape == (6, 16, 4, 4)
    h = [_entropy_of(maps[b].permute(0, 2, 3, 1).reshape(-1, maps[b].shape[1]))
         for b in blocks]
    assert got["az_expressivity"] == pytest.approx(sum(h), rel=1e-9)
    assert math.isfinite(got["az_trainability"])


def test_tenas_lr_says_why_a_network_cannot_be_narrowed_and_what_to_do():
    """A NAS-Bench-101 cell splits and truncates channels outside its convolutions, so its
    1-channel copy cannot run: the error says so and names the full-width reading, which
    works (on NAS-Bench-101 the package's own "input channel < output channels" was all a user
    saw)."""
    from zcproxy.nasbench.nb101 import build_network
    matrix = np.array([[0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1],
                       [0, 0, 0, 0, 0]])
    net = build_network(matrix, ["input", "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3",
                                 "output"], stem_channels=8, num_stacks=1, cells_per_stack=1)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"1-channel copy of Network cannot run \(ValueError: "
                                         r"input channel < output channels.*width=None, "
                                         r"channels=None"):
        zcproxy.score(net, "tenas_lr", inputs=x)
    assert zcproxy.score(net, "tenas_lr", inputs=x, width=None, channels=None) >= 1


# --------------------------------------------------------------------------- all of them


def batch(n=16, size=16):
    gen = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, size, size, generator=gen), torch.randint(0, 10, (n,), generator=gen)


@pytest.mark.parametrize("proxy", ["zico", "meco", "swap", "swap_reg", "az_expressivity",
                                   "az_progressivity", "az_trainability", "tenas_lr", "naswot",
                                   "grad_norm", "snip"])
def test_bn_mode_is_an_option_and_defaults_to_the_official_train_mode(proxy):
    """Every official recipe here runs BatchNorm on batch statistics; ``train=False`` gives the
    running statistics instead, and the caller's own mode decides nothing."""
    model = small_cnn().eval()
    x, y = batch()
    kw = dict(inputs=x, targets=y)
    default = zcproxy.score(model, proxy, **kw)
    assert default == zcproxy.score(model, proxy, train=True, **kw)
    assert default == zcproxy.score(small_cnn().train(), proxy, **kw)
    assert default != zcproxy.score(model, proxy, train=False, **kw)


def test_grad_norm_zennas_recipe_runs_batchnorm_in_train_mode_by_default():
    kw = dict(recipe="zennas", input_shape=(3, 16, 16), seed=1)
    default = zcproxy.score(small_cnn().eval(), "grad_norm", **kw)
    assert default == zcproxy.score(small_cnn(), "grad_norm", train=True, **kw)
    assert default != zcproxy.score(small_cnn(), "grad_norm", train=False, **kw)


def small_cnn_with_batchnorm(**values: float) -> nn.Module:
    """small_cnn with every BatchNorm tensor named in ``values`` (weight, running_mean, ...)
    filled with its value."""
    model = small_cnn()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for name, value in values.items():
                    getattr(m, name).fill_(value)
    return model


def test_az_default_recipe_written_out():
    """The default recipe by hand: conv/linear weights ~ N(0, 2 / fan_in) drawn in module order
    from a generator seeded with the context's seed, biases 0, BatchNorm scales 1 and shifts 0,
    then 64 N(0, 1) inputs from the same generator; the model's own weights play no part."""
    model = small_cnn_with_batchnorm(weight=3.0, bias=0.5)
    seed = 5
    by_hand = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in by_hand.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2 / fan_in))
                m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
    x = torch.randn(64, 3, 16, 16, generator=gen)
    names = ["az_expressivity", "az_progressivity"]  # the ones that draw nothing more
    default = zcproxy.score_many(model, names, input_shape=(3, 16, 16), seed=seed)
    written_out = zcproxy.score_many(by_hand, {n: {"init": "none", "use_inputs": True}
                                               for n in names}, inputs=x, seed=seed)
    assert default == written_out
    assert default == zcproxy.score_many(model, {n: {"init": "kaiming_fan_in", "batch_size": 64,
                                                     "use_inputs": False} for n in names},
                                         input_shape=(3, 16, 16), seed=seed)


def test_az_in_eval_mode_carries_nothing_of_the_callers_running_statistics():
    """The He-normal re-draw builds a fresh network: in eval mode its BatchNorm reads the
    running statistics of a fresh one (0 and 1), not the caller's."""
    used = small_cnn_with_batchnorm(running_mean=5.0, running_var=9.0)
    kw = dict(input_shape=(3, 16, 16), seed=4, train=False)
    assert zcproxy.score(used, "az_expressivity", **kw) == zcproxy.score(
        small_cnn(), "az_expressivity", **kw)


def test_meco_reads_the_first_batch_size_images():
    """Official ``--batch_size 1``: only the first image of the caller's batch is forwarded;
    with a larger ``batch_size`` the first that many (train-mode BatchNorm then normalises
    over all of them, though the maps read are the first image's)."""
    model, (x, _) = small_cnn(), batch()
    assert zcproxy.score(model, "meco", inputs=x) == zcproxy.score(model, "meco", inputs=x[:1])
    four = zcproxy.score(model, "meco", inputs=x, batch_size=4)
    assert four == zcproxy.score(model, "meco", inputs=x[:4], batch_size=4)
    assert four != zcproxy.score(model, "meco", inputs=x)


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
