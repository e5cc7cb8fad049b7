"""NAS-Bench-Suite-Zero's proxies (fisher, grasp, l2_norm, plain, epe_nas, zen) and GradSign,
each pinned to a value computed by hand on a tiny network, plus determinism, the degenerate
NATS-tss cell and the caller's model left alone."""
import math

import pytest
import torch
from torch import nn

import zcproxy
from nets import linear, small_cnn
from zcproxy.api import resolve_proxies, score_timed
from zcproxy.context import ProxyContext

PROXIES = ["fisher", "grasp", "l2_norm", "plain", "epe_nas", "zen", "gradsign"]
LN3 = math.log(3.0)
K = 1e-5


# Two images, both of class 0: x1 = (1, 0), x2 = (0, 1).
X2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
Y2 = torch.tensor([0, 0])


def two_layer_net():
    """Linear(W1 = I) -> ReLU -> Linear(W2 = ln3·I), no biases."""
    return nn.Sequential(linear([[1.0, 0.0], [0.0, 1.0]]), nn.ReLU(),
                         linear([[LN3, 0.0], [0.0, LN3]]))


def test_plain_by_hand():
    """two_layer_net on X2, Y2 (N = 2, cross-entropy averaged).

    h_n = ReLU(x_n) = x_n; logits z1 = (ln3, 0), z2 = (0, ln3); softmax p1 = (3/4, 1/4),
    p2 = (1/4, 3/4); δ_n = (p_n − e_0)/N: δ1 = (−1/8, 1/8), δ2 = (−3/8, 3/8).
    ∂L/∂W2 = Σ δ_n h_nᵀ = [[−1/8, −3/8], [1/8, 3/8]]; Σ W2⊙· = ln3·(−1/8 + 3/8) = ln3/4.
    ∂L/∂h_n = W2ᵀδ_n = ln3·δ_n, masked by ReLU' (x1 → (1, 0), x2 → (0, 1)):
    ∂L/∂W1 = ln3·[[−1/8, 0], [0, 3/8]]; Σ W1⊙· = ln3/4.  plain = ln3/2 = 0.549306.
    """
    got = zcproxy.score(two_layer_net(), "plain", inputs=X2, targets=Y2)
    assert got == pytest.approx(LN3 / 2, rel=1e-6)
    assert LN3 / 2 == pytest.approx(0.549306, abs=1e-6)


def test_grad_norm_by_hand():
    """Abdelfattah's recipe on two_layer_net, X2, Y2: with the gradients of test_plain_by_hand,
    ‖∂L/∂W2‖ = √(1 + 9 + 1 + 9)/8 and ‖∂L/∂W1‖ = ln3·√(1 + 9)/8; grad_norm is their sum."""
    got = zcproxy.score(two_layer_net(), "grad_norm", inputs=X2, targets=Y2)
    assert got == pytest.approx((math.sqrt(20) + LN3 * math.sqrt(10)) / 8, rel=1e-6)


def test_snip_by_hand():
    """two_layer_net on X2, Y2, the gradients of test_plain_by_hand: |W2 ⊙ ∂L/∂W2| =
    ln3·(1/8 + 3/8) on the diagonal, |W1 ⊙ ∂L/∂W1| = ln3·(1/8 + 3/8); SNIP = ln3 = 1.098612,
    where plain (the signed sum) is ln3/2."""
    got = zcproxy.score(two_layer_net(), "snip", inputs=X2, targets=Y2)
    assert got == pytest.approx(LN3, rel=1e-6)
    assert LN3 == pytest.approx(1.098612, abs=1e-6)


def _corr(a, b):
    """Pearson correlation of two equal-length lists, in plain Python."""
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((u - ma) * (v - mb) for u, v in zip(a, b))
    return num / math.sqrt(sum((u - ma) ** 2 for u in a) * sum((v - mb) ** 2 for v in b))


def test_jacob_cov_by_hand():
    """Linear(4 -> 4, I) -> ReLU -> Linear(4 -> 1, w = (1, 2, 3, 4)), no biases: the Jacobian of
    image x is J = w ⊙ [x > 0], so x1 = (1, 1, −1, −1), x2 = (1, −1, 1, −1),
    x3 = (−1, 1, 1, 1) give J1 = (1, 2, 0, 0), J2 = (1, 0, 3, 0), J3 = (0, 2, 3, 4).  C is
    their correlation matrix (computed below in plain Python); with its eigenvalues λ,
    jacob_cov = −Σ [log(λ + k) + 1/(λ + k)], k = 1e-5 (SamsungLabs' eval_score)."""
    import numpy as np
    net = nn.Sequential(linear(torch.eye(4).tolist()), nn.ReLU(), linear([[1.0, 2.0, 3.0, 4.0]]))
    x = torch.tensor([[1.0, 1, -1, -1], [1, -1, 1, -1], [-1, 1, 1, 1]])
    jac = [[1, 2, 0, 0], [1, 0, 3, 0], [0, 2, 3, 4]]
    corr = np.array([[_corr(a, b) for b in jac] for a in jac])
    lam = np.linalg.eigvalsh(corr)
    expected = float(-np.sum(np.log(lam + K) + 1.0 / (lam + K)))
    got = zcproxy.score(net, "jacob_cov", inputs=x, targets=torch.zeros(3, dtype=torch.long))
    assert got == pytest.approx(expected, rel=1e-6)
    # one entry by hand: deviations (.25, 1.25, −.75, −.75) and (0, −1, 2, −1)
    assert corr[0, 1] == pytest.approx(-2 / math.sqrt(2.75 * 6), rel=1e-12)


def test_grad_norm_zennas_recipe_by_hand():
    """The AZ-NAS / VKDNW recipe on one Linear(2 -> 3) layer: He-normal weights (fan-in 2, so
    W = the standard-normal draws themselves), bias 0, then B = 5 Gaussian inputs and random
    labels from the same generator; the real batch is ignored.  With softmax p_n of z_n = W x_n,
    δ_n = (p_n − e_{y_n})/B: ∂L/∂W = Σ δ_n x_nᵀ, ∂L/∂b = Σ δ_n, score = √(‖∂L/∂W‖² + ‖∂L/∂b‖²)."""
    gen = torch.Generator().manual_seed(7)
    w = torch.randn((3, 2), generator=gen).double()
    x = torch.randn((5, 2), generator=gen).double()
    y = torch.randint(0, 3, (5,), generator=gen)
    delta = (torch.softmax(x @ w.T, dim=1) - torch.eye(3, dtype=torch.float64)[y]) / 5
    expected = math.sqrt(float((delta.T @ x).pow(2).sum() + delta.sum(0).pow(2).sum()))
    net = nn.Linear(2, 3)
    got = zcproxy.score(net, "grad_norm", inputs=X2, targets=Y2, seed=7, recipe="zennas",
                        batch_size=5)
    assert got == pytest.approx(expected, rel=1e-5)
    # The real batch plays no part; Abdelfattah's recipe on the same layer reads it.
    assert zcproxy.score(net, "grad_norm", inputs=X2 * 3, targets=Y2, seed=7, recipe="zennas",
                         batch_size=5) == got
    with pytest.raises(ValueError, match="recipe must be one of abdelfattah, zennas"):
        zcproxy.score(net, "grad_norm", inputs=X2, targets=Y2, recipe="zen")


def test_fisher_by_hand():
    """two_layer_net on X2, Y2.  g_nk = z_nk·∂L/∂z_nk, F_k = ½·mean_n g_nk².

    Layer 2: z1 = (ln3, 0), z2 = (0, ln3), ∂L/∂z = δ (see test_plain_by_hand):
    g1 = (−ln3/8, 0), g2 = (0, 3ln3/8) -> F = (ln3²/256, 9ln3²/256), Σ_k = 10ln3²/256.
    Layer 1: z = W1 x = x, ∂L/∂z = ln3·δ ⊙ ReLU' -> the same g, the same Σ_k = 10ln3²/256.
    per_weight=False: 20ln3²/256 = 0.094293.  The default broadcasts F_k to the channel's
    in_features = 2 weights (NASLib): 40ln3²/256 = 0.188586.
    """
    net = two_layer_net()
    assert zcproxy.score(net, "fisher", inputs=X2, targets=Y2) == pytest.approx(
        40 * LN3 ** 2 / 256, rel=1e-6)
    assert zcproxy.score(net, "fisher", inputs=X2, targets=Y2, per_weight=False) == \
        pytest.approx(20 * LN3 ** 2 / 256, rel=1e-6)
    assert 40 * LN3 ** 2 / 256 == pytest.approx(0.188586, abs=1e-6)


@pytest.mark.parametrize("layer", [nn.Conv2d(4, 6, 3, groups=2, padding=1),
                                   nn.ConvTranspose2d(4, 6, 3, groups=2)],
                         ids=["conv", "transposed"])
def test_fisher_broadcasts_to_one_output_channels_weights(layer):
    """Fisher on a convolution and its transpose, by its formula; with one weight layer,
    per_weight multiplies Σ_k F_k by the weights of one output channel: c_in/groups · k² =
    2 · 9 = 18, for a convolution and its transpose alike (the transpose's weight is
    (c_in, c_out/groups, k, k): its shape[1:] would count 27)."""
    torch.manual_seed(0)
    net = nn.Sequential(layer, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(8, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 6
    per_channel = zcproxy.score(net, "fisher", inputs=x, targets=y, per_weight=False)
    # Σ_k F_k written out: z the layer's output, g_nk = Σ_positions z·∂L/∂z, F_k = ½ mean_n g².
    z = layer(x)
    loss = nn.functional.cross_entropy(z.mean(dim=(2, 3)), y)
    (dz,) = torch.autograd.grad(loss, z)
    g = (z * dz).sum(dim=(2, 3)).detach().double()
    assert per_channel == pytest.approx(float(0.5 * g.pow(2).mean(0).sum()), rel=1e-5)
    assert zcproxy.score(net, "fisher", inputs=x, targets=y) == pytest.approx(18 * per_channel,
                                                                                rel=1e-12)


def test_grasp_by_hand():
    """One Linear(W = ln3·I, no bias) on X2, Y2: logits z_n = W x_n as above.

    g = ∂L/∂W = [[−1/8, −3/8], [1/8, 3/8]].  For a linear model,
    H·g = (1/N) Σ_n J_n (g x_n) x_nᵀ with J_n = diag(p_n) − p_n p_nᵀ = p0·p1·[[1, −1], [−1, 1]]
    = 3/16·[[1, −1], [−1, 1]] for both images.  g x1 = (−1/8, 1/8) -> J·(g x1) = (−3/64, 3/64);
    g x2 = (−3/8, 3/8) -> J·(g x2) = (−9/64, 9/64).
    GraSP = −Σ W⊙Hg = −(1/N) Σ_n z_nᵀ J_n (g x_n) = −(1/2)(−3ln3/64 + 9ln3/64) = −3ln3/64
    = −0.051497.
    """
    net = nn.Sequential(linear([[LN3, 0.0], [0.0, LN3]]))
    got = zcproxy.score(net, "grasp", inputs=X2, targets=Y2)
    assert got == pytest.approx(-3 * LN3 / 64, rel=1e-5)
    assert -3 * LN3 / 64 == pytest.approx(-0.051497, abs=1e-6)


def test_grasp_split_into_single_images_gives_the_hand_value():
    """split=2 on X2 is one image per chunk: g = ½(g₁ + g₂) and Hg = ½(H₁ + H₂)g, where
    H_n = J_n (·x_n) x_nᵀ is image n's Hessian; for a linear model the images do not interact,
    so both equal the whole batch's and the hand value above holds."""
    net = nn.Sequential(linear([[LN3, 0.0], [0.0, LN3]]))
    got = zcproxy.score(net, "grasp", inputs=X2, targets=Y2, split=2)
    assert got == pytest.approx(-3 * LN3 / 64, rel=1e-5)


def cnn_without_bn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.GELU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


@pytest.mark.parametrize("split", [2, 3, 8])
def test_grasp_split_changes_memory_not_the_score_without_bn(split):
    """Chunks weighted by their share (8 images in 3 chunks: 2, 3, 3): without a layer that
    mixes samples the chunked score is the whole batch's up to rounding."""
    x, y = batch()
    whole = zcproxy.score(cnn_without_bn(), "grasp", inputs=x, targets=y)
    chunked = zcproxy.score(cnn_without_bn(), "grasp", inputs=x, targets=y, split=split)
    assert chunked == pytest.approx(whole, rel=1e-4) and whole != 0.0


def test_grasp_split_normalises_each_chunk_with_its_own_bn_statistics():
    """With BatchNorm in train mode a chunk is normalised with its own statistics: the score
    is another (recorded) recipe, but still the same proxy's order of magnitude."""
    x, y = batch()
    whole = zcproxy.score(small_cnn(), "grasp", inputs=x, targets=y)
    chunked = zcproxy.score(small_cnn(), "grasp", inputs=x, targets=y, split=2)
    assert chunked != whole and math.isfinite(chunked)
    assert zcproxy.score(small_cnn(), "grasp", inputs=x, targets=y, split=1) == whole


@pytest.mark.parametrize("proxy, options", [
    ("grasp", {}), ("grasp", {"split": 2}), ("grad_norm", {}), ("grad_norm", {"recipe": "zennas"}),
    ("snip", {}), ("fisher", {}), ("plain", {}), ("synflow", {}), ("logsynflow", {}),
    ("zico", {})])
def test_a_frozen_model_is_undefined_with_a_reason(proxy, options):
    """No parameter requires grad: nothing to differentiate, NaN with that reason (it was
    autograd's bare RuntimeError, which names no cause)."""
    model = small_cnn().requires_grad_(False)
    x, y = batch()
    ctx = ProxyContext(model=model, device=torch.device("cpu"), inputs=x, targets=y)
    (result,) = score_timed(ctx, resolve_proxies({proxy: options}), "keep")
    assert math.isnan(result.value) and "the model is frozen" in result.reason


@pytest.mark.parametrize("split", [0, 9, 2.5, True])
def test_grasp_split_out_of_range_is_a_clear_error(split):
    x, y = batch()
    with pytest.raises(ValueError, match="split must be a whole number of chunks in 1..8"):
        zcproxy.score(small_cnn(), "grasp", inputs=x, targets=y, split=split)


def test_l2_norm_by_hand():
    """‖[[3, −4], [0, 0]]‖ = 5 and ‖[[−6, 8]]‖ = 10; biases and BN are not counted: 15."""
    net = nn.Sequential(linear([[3.0, -4.0], [0.0, 0.0]], bias=[7.0, 7.0]), nn.BatchNorm1d(2),
                        nn.ReLU(), linear([[-6.0, 8.0]], bias=[1.0]))
    assert zcproxy.score(net, "l2_norm") == pytest.approx(15.0, rel=1e-7)


def test_gradsign_by_hand():
    """One Linear(W = I, zero bias); per image g_i = (p_i − e_{y_i}) x_iᵀ, so
    sign(g_i)[k, j] = s_k·t_j with s = sign(p − e_y) ((−, +) for class 0, (+, −) for class 1)
    and t = sign(x_i).
    x1 = (1, 2), y=0:  [[−1, −1], [+1, +1]]
    x2 = (−1, 1), y=1: [[−1, +1], [+1, −1]]
    x3 = (2, 0), y=0:  [[−1,  0], [+1,  0]]   (sign 0 = 0)
    Σ_i = [[−3, 0], [3, 0]] -> Σ|·| = 6.  The bias (|Σ sign| = 1 per class) is not counted.
    """
    net = nn.Sequential(linear([[1.0, 0.0], [0.0, 1.0]], bias=[0.0, 0.0]))
    x = torch.tensor([[1.0, 2.0], [-1.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    assert zcproxy.score(net, "gradsign", inputs=x, targets=y) == 6.0


def epe_net(outputs):
    """Linear(I₃) -> ReLU -> Linear(all ones, ``outputs`` rows): J_i = ∂Σf/∂x_i is
    ``outputs``·1[x_i > 0], a scaled ReLU mask."""
    return nn.Sequential(linear(torch.eye(3).tolist()), nn.ReLU(),
                         linear([[1.0] * 3] * outputs))


def test_epe_nas_by_hand():
    """Masks: x1 -> (1, 1, 0), x2 -> (1, 0, 0) (class 0), x3 -> (0, 1, 1) (class 1).
    corr((1,1,0), (1,0,0)): centred (1/3, 1/3, −2/3)·(2/3, −1/3, −1/3) = 1/3, both squared
    norms 6/9 -> 1/2.  s_0 = 2·log(1 + k) + 2·log(1/2 + k); class 1 has one image: C = [1],
    s_1 = log(1 + k).  ≤ 100 outputs: score = |s_0| + |s_1| = −log(1 + k) − 2·log(1/2 + k)
    = 1.386244.
    """
    x = torch.tensor([[1.0, 2.0, -1.0], [3.0, -1.0, -2.0], [-1.0, 1.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    expected = -math.log(1 + K) - 2 * math.log(0.5 + K)
    assert zcproxy.score(epe_net(2), "epe_nas", inputs=x, targets=y) == pytest.approx(
        expected, rel=1e-9)
    assert expected == pytest.approx(1.386244, abs=1e-6)


def test_epe_nas_many_classes_by_hand():
    """With > 100 outputs the reference divides s_c by the class size, skips one-image classes
    and scores Σ_c Σ_c' |s_c − s_c'| / #classes.
    class 0: masks (1,1,0), (1,0,0) -> s_0 = (2·log(1+k) + 2·log(1/2+k))/2;
    class 1: masks (0,1,1) twice -> C = ones -> s_1 = 4·log(1+k)/2; class 2: one image, skipped.
    score = 2·|s_0 − s_1|/2 = log(1+k) − log(1/2+k) = 0.693137.
    """
    x = torch.tensor([[1.0, 2.0, -1.0], [3.0, -1.0, -2.0], [-1.0, 1.0, 1.0],
                      [-2.0, 3.0, 1.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1, 2])
    expected = math.log(1 + K) - math.log(0.5 + K)
    assert zcproxy.score(epe_net(101), "epe_nas", inputs=x, targets=y) == pytest.approx(
        expected, rel=1e-9)
    assert expected == pytest.approx(0.693137, abs=1e-6)


def zen_net():
    return nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(1, 2))


def test_zen_by_hand():
    """zen_net, batch 3 of 1x2x2 inputs, seed 5.  Draws, in order, from one generator seeded
    with the context seed: the conv weight w (1 value; its bias is set to 0), the linear weight
    (2 values, unused: the features are the pooling's input), x, then ε.
    Features: BN in train mode of c = w·x, i.e. (c − mean)/√(var_b + 1e-5) over (N, H, W);
    the same for c' = w·(x + 0.01ε).  Δ = mean_n Σ_pixels |F − F'|.
    Running var: 0.9·(0.9·1 + 0.1·v(c)) + 0.1·v(c') (unbiased v; both passes update it).
    zen = log Δ + log √(running var).
    """
    gen = torch.Generator().manual_seed(5)
    w = torch.randn((1, 1, 1, 1), generator=gen).item()
    torch.randn((2, 1), generator=gen)
    x = torch.randn((3, 1, 2, 2), generator=gen).double()
    eps = torch.randn((3, 1, 2, 2), generator=gen).double()

    def bn(c):
        return (c - c.mean()) / torch.sqrt(c.var(unbiased=False) + 1e-5)

    c, c_mixed = w * x, w * (x + 0.01 * eps)
    delta = (bn(c) - bn(c_mixed)).abs().sum(dim=(1, 2, 3)).mean().item()
    running_var = 0.9 * (0.9 + 0.1 * c.var().item()) + 0.1 * c_mixed.var().item()
    expected = math.log(delta) + math.log(math.sqrt(running_var))
    got = zcproxy.score(zen_net(), "zen", input_shape=(1, 2, 2), seed=5, batch_size=3)
    assert got == pytest.approx(expected, rel=1e-4)


def test_zen_bn_term_skips_norms_after_the_features():
    """ZenNAS runs only forward_pre_GAP, so a BatchNorm after the features (here a
    BatchNorm1d on the logits) keeps running variance 1 and adds log 1 = 0.  zcproxy runs the
    whole model but counts only the norms that ran before the features were taken: the same
    value as zen_net without the head norm (same draws: norms draw nothing), for the pooling
    input (the default) and for the logits (submodule "4")."""
    kw = dict(input_shape=(1, 2, 2), seed=5, batch_size=3)
    headed = nn.Sequential(*zen_net(), nn.BatchNorm1d(2))
    assert zcproxy.score(headed, "zen", **kw) == zcproxy.score(zen_net(), "zen", **kw)
    assert zcproxy.score(headed, "zen", features="4", **kw) == zcproxy.score(
        zen_net(), "zen", features="4", **kw)


def test_zen_is_log_linear_in_gamma_without_bn():
    """Without BatchNorm the features are linear in the input: Δ ∝ γ, so doubling γ adds
    exactly log 2 (same draws), and there is no BN term."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 1, 1))
    kw = dict(input_shape=(1, 2, 2), features="output", seed=1)
    base = zcproxy.score(nn.Sequential(net[0], net[2]), "zen", **kw)
    doubled = zcproxy.score(nn.Sequential(net[0], net[2]), "zen", mixup_gamma=2e-2, **kw)
    assert doubled - base == pytest.approx(math.log(2), abs=1e-4)




def batch(n=8, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def test_zen_features_auto_is_the_pooling_input():
    model = small_cnn()
    auto = zcproxy.score(model, "zen", input_shape=(3, 16, 16))
    assert auto == zcproxy.score(model, "zen", input_shape=(3, 16, 16), features="pool_input")
    assert auto == zcproxy.score(model, "zen", input_shape=(3, 16, 16), features="5")
    assert auto != zcproxy.score(model, "zen", input_shape=(3, 16, 16), features="linear_input")
    with pytest.raises(ValueError, match="no 'head'"):
        zcproxy.score(model, "zen", input_shape=(3, 16, 16), features="head")


def test_fisher_is_not_fooled_by_an_inplace_activation():
    """The activation z·∂L/∂z is read from the layer's own output, which an in-place ReLU after
    the layer must not overwrite."""
    def net(inplace):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=inplace), nn.Flatten(),
                             nn.Linear(4 * 14 * 14, 10))
    x, y = batch()
    assert zcproxy.score(net(True), "fisher", inputs=x, targets=y) == pytest.approx(
        zcproxy.score(net(False), "fisher", inputs=x, targets=y), rel=1e-6)


@pytest.mark.parametrize("proxy", ["fisher", "grasp", "plain", "epe_nas", "gradsign", "zen"])
def test_bn_defaults_to_train_mode_as_the_references(proxy):
    model = small_cnn().eval()
    x, y = batch()
    kw = dict(inputs=x, targets=y)
    default = zcproxy.score(model, proxy, **kw)
    assert default == zcproxy.score(model, proxy, train=True, **kw)
    assert default != zcproxy.score(model, proxy, train=False, **kw)


def test_zen_defaults_are_zennas_search_settings():
    model = small_cnn()
    kw = dict(input_shape=(3, 16, 16), seed=2)
    assert zcproxy.score(model, "zen", **kw) == zcproxy.score(
        model, "zen", batch_size=64, repeats=1, mixup_gamma=1e-2, **kw)
    assert zcproxy.score(model, "zen", repeats=2, **kw) != zcproxy.score(model, "zen", **kw)


@pytest.mark.parametrize("proxy", PROXIES)
def test_deterministic_bit_for_bit(proxy):
    x, y = batch()
    first = zcproxy.score(small_cnn(), proxy, inputs=x, targets=y)
    second = zcproxy.score(small_cnn(), proxy, inputs=x, targets=y)
    assert first == second and math.isfinite(first)


def test_shared_backward_is_taken_once():
    """fisher, plain, grasp's first pass, grad_norm and snip share one backward; scoring them
    together gives what each gives alone."""
    x, y = batch()
    together = zcproxy.score_many(small_cnn(), ["fisher", "plain", "grasp", "grad_norm", "snip"],
                                  inputs=x, targets=y)
    for name, value in together.items():
        assert value == zcproxy.score(small_cnn(), name, inputs=x, targets=y), name


def snapshot(model):
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._backward_hooks)) for m in model.modules()],
        "rng": torch.get_rng_state(),
    }


@pytest.mark.parametrize("train_mode", [True, False])
@pytest.mark.parametrize("proxy", PROXIES)
def test_callers_model_unchanged(proxy, train_mode):
    model = small_cnn().train(train_mode)
    model[0].weight.requires_grad_(False)
    x, y = batch(4)
    before = snapshot(model)
    zcproxy.score(model, proxy, inputs=x, targets=y)
    after = snapshot(model)
    for key in before["state"]:
        assert torch.equal(before["state"][key], after["state"][key]), key
    for key in ("modes", "requires_grad", "hooks"):
        assert before[key] == after[key], key
    assert all(g is None for g in after["grads"])
    assert torch.equal(before["rng"], after["rng"]), "the global RNG state was consumed"


@pytest.fixture(scope="module")
def degenerate_cell():
    """NATS-tss 8274, |none~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|skip_connect~1|none~2|:
    the cell output does not depend on the cell input, so neither do the logits."""
    from zcproxy.nasbench import get_benchmark
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(8274)
        return get_benchmark("nats-tss").build(8274)


def test_degenerate_cell_is_undefined_with_a_reason(degenerate_cell):
    x, y = zcproxy.data.cifar10_batch(8)
    ctx = ProxyContext(model=degenerate_cell, device=torch.device("cpu"),
                       output=zcproxy.last_of_tuple, inputs=x, targets=y)
    results = {r.name: r for r in score_timed(ctx, resolve_proxies(PROXIES), "keep")}
    results["grasp split"], = score_timed(ctx, resolve_proxies({"grasp": {"split": 2}}), "keep")
    for name in ("fisher", "grasp", "grasp split", "plain", "epe_nas", "gradsign"):
        assert math.isnan(results[name].value), name
        assert "does not depend on the input" in results[name].reason, name
    assert results["zen"].value == -math.inf
    assert "do not depend on the input" in results["zen"].reason
    # l2_norm reads weights only: defined, and the same as on any network.
    assert math.isfinite(results["l2_norm"].value) and results["l2_norm"].reason == ""
    with pytest.raises(zcproxy.NonFiniteScoreError, match="does not depend on the input"):
        zcproxy.score(degenerate_cell, "plain", inputs=x, targets=y, output=zcproxy.last_of_tuple)


def test_correlate_option_reaches_the_proxy_and_is_a_setting(tmp_path, capsys):
    """``--option grad_norm.recipe=zennas`` scores with that recipe (the scores equal the API's
    with the same option and seed), is recorded in run.json, and a journal scored with it is
    not continued without it; malformed or unknown options are one-line errors."""
    import json

    import pandas as pd
    from zcproxy import correlate
    from zcproxy.nasbench import get_benchmark
    out = tmp_path / "run"
    base = ["--bench", "nats-tss", "--sample", "2", "--proxies", "grad_norm", "--no-baselines",
            "--bootstrap", "0", "--no-progress", "--exact", "--out", str(out)]
    assert correlate.main(base + ["--option", "grad_norm.recipe=zennas"]) == 0
    assert json.loads((out / "run.json").read_text())["proxy_options"] == {
        "grad_norm": {"recipe": "zennas"}}
    scores = pd.read_csv(out / "scores.csv")
    bench = get_benchmark("nats-tss")
    index = int(scores["index"].iloc[0])
    from zcproxy.runner import ScoringJob
    seed = ScoringJob(bench="nats-tss", proxies=("grad_norm",)).arch_seed(index)
    expected = zcproxy.score(bench.build(index), "grad_norm", inputs=torch.zeros(2, 3, 32, 32),
                             targets=torch.zeros(2, dtype=torch.long), seed=seed,
                             output=bench.output_selector, recipe="zennas")
    assert scores["grad_norm"].iloc[0] == pytest.approx(expected, rel=1e-6)
    # The leaderboard of that run says which recipe its grad_norm row is.
    from zcproxy import leaderboard
    boards = tmp_path / "boards"
    assert leaderboard.main(["--bench", "nats-tss", "--run", str(out), "--bootstrap", "0",
                             "--out", str(boards)]) == 0
    assert "Proxy options: `grad_norm` recipe=zennas." in (
        boards / "nats-tss-cifar10.md").read_text()
    capsys.readouterr()
    assert correlate.main(base) == 2  # the journal was scored with the option
    assert "proxy_options" in capsys.readouterr().err
    for bad, said in [("grad_norm=zennas", "write PROXY.KEY=VALUE"),
                      ("snip.recipe=zennas", "snip is not among this run's proxies"),
                      ("grad_norm.colour=1", "takes no option")]:
        assert correlate.main(base + ["--option", bad, "--fresh"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
    # A value no network can take stops the run, instead of being every row's failure.
    other = tmp_path / "misspelt"
    assert correlate.main(base[:-1] + [str(other), "--option", "grad_norm.recipe=zenas"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grad_norm: recipe must be one of" in err[0], err
    journal = (other / "journal.csv").read_text().splitlines()
    assert len(journal) == 2, journal  # the settings and the header: no row
