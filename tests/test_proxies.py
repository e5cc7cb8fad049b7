"""Each proxy pinned to a value computed by hand, plus the properties it must have."""
import math

import pytest
import torch
from torch import nn

import zcproxy
from nets import small_cnn
from zcproxy.proxies.naswot import agreement_kernel


def conv1x1(*weights):
    """A bias-free 1x1 convolution from 1 channel to len(weights) channels."""
    conv = nn.Conv2d(1, len(weights), 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights).view(-1, 1, 1, 1))
    return conv


def entropy(a):
    return -a * math.log(a + 1e-8)


# The hand-made input of the Entropic Score tests: one image, one channel, 2x2 pixels.
X = torch.tensor([0.5, 0.25, -0.1, 0.0]).view(1, 1, 2, 2)


def test_entropic_score_by_hand():
    """conv(w=-2) -> ReLU -> conv(w=3) -> ReLU on X = [0.5, 0.25, -0.1, 0], |weights| reading.

    |w| makes the first ReLU output 2·[0.5, 0.25, 0, 0] = [1, 0.5, 0, 0]; each channel divided by
    its own maximum gives a = [1, 0.5, 0, 0]; entropies -a·log(a+ε) = [0, 0.34657, 0, 0];
    layer mean 0.086643.  The second layer is 3× the first: same normalised tensor, same
    0.086643.  BatchNorm is suppressed, so it changes nothing.  Total: 0.173287.
    """
    model = nn.Sequential(conv1x1(-2.0), nn.BatchNorm2d(1), nn.ReLU(), conv1x1(3.0), nn.GELU())
    expected = 2 * (entropy(1.0) + entropy(0.5)) / 4
    got = zcproxy.score(model, "entropic_abs", inputs=X, use_inputs=True, reinit=False)
    assert got == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.173287, abs=1e-6)


def test_entropic_normalisation_readings_differ_by_hand():
    """conv to 2 channels with w = [1, 3] -> ReLU on X.

    channel 0 = [0.5, 0.25, 0, 0], channel 1 = [1.5, 0.75, 0, 0].
    "channel" (each channel by its own spatial max): both become [1, .5, 0, 0]:
        (2·0.34657)/8 = 0.086643.
    "across_channels" (each position by its max over channels): channel 0 -> [1/3, 1/3, 0, 0],
        channel 1 -> [1, 1, 0, 0]: (2·(1/3)·ln 3)/8 = 0.091551.
    """
    model = nn.Sequential(conv1x1(1.0, 3.0), nn.ReLU())
    kw = dict(inputs=X, use_inputs=True, reinit=False)
    per_channel = zcproxy.score(model, "entropic", normalization="channel", **kw)
    across = zcproxy.score(model, "entropic", normalization="across_channels", **kw)
    assert per_channel == pytest.approx(2 * entropy(0.5) / 8, rel=1e-6)
    assert across == pytest.approx(2 * entropy(1 / 3) / 8, rel=1e-6)
    # The named presets: the weights are positive, so |weights| changes nothing here.
    for name in ("entropic_across", "entropic_abs_across"):
        assert zcproxy.score(model, name, **kw) == pytest.approx(2 * entropy(1 / 3) / 8, rel=1e-6)


def test_entropic_signed_reading_by_hand():
    """conv(w=-2) -> ReLU -> conv(w=-3) -> ReLU on X' = [0.5, 0.25, -0.1, -0.4].

    |weights| (``entropic_abs``): 2·X' -> ReLU [1, .5, 0, 0] -> a = [1, .5, 0, 0]; the second layer is 3×
        it: 2·(e(1) + e(.5))/4.
    signed (the default, ``entropic``): -2·X' -> ReLU [0, 0, .2, .8] -> a = [0, 0, .25, 1]:
        (e(.25) + e(1))/4; the second conv maps it to ≤ 0, ReLU gives 0: entropy 0.
    """
    x = torch.tensor([0.5, 0.25, -0.1, -0.4]).view(1, 1, 2, 2)
    model = nn.Sequential(conv1x1(-2.0), nn.ReLU(), conv1x1(-3.0), nn.ReLU())
    kw = dict(inputs=x, use_inputs=True, reinit=False)
    assert zcproxy.score(model, "entropic_abs", **kw) == pytest.approx(
        2 * (entropy(1.0) + entropy(0.5)) / 4, rel=1e-6)
    signed = zcproxy.score(model, "entropic", **kw)
    assert signed == pytest.approx((entropy(0.25) + entropy(1.0)) / 4, rel=1e-6)
    # Averaged over the two layers instead of summed: the second layer's 0 halves it; with
    # |weights| each layer holds (e(1) + e(.5))/4 (their sum is above), so the mean is one.
    assert zcproxy.score(model, "entropic_mean", **kw) == pytest.approx(
        (entropy(0.25) + entropy(1.0)) / 8, rel=1e-6)
    assert zcproxy.score(model, "entropic_abs_mean", **kw) == pytest.approx(
        (entropy(1.0) + entropy(0.5)) / 4, rel=1e-6)
    assert signed == zcproxy.score(model, "entropic_signed", **kw)
    assert zcproxy.score(model, "entropic", abs_weights=True, **kw) == zcproxy.score(
        model, "entropic_abs", **kw)
    shape = dict(input_shape=(1, 8, 8))
    assert zcproxy.explain(model, "entropic_signed", **shape)["entropy"].sum() == pytest.approx(
        zcproxy.score(model, "entropic_signed", **shape), rel=1e-9)


def _layer_entropy(channels):
    """Mean of -a·log(a + 1e-8) over every element, each channel (a list of values) divided by
    its own maximum (a channel whose maximum is 0 contributes 0)."""
    total = count = 0
    for values in channels:
        peak = max(values)
        total += sum(entropy(v / peak) for v in values) if peak > 0 else 0.0
        count += len(values)
    return total / count


def test_entropic_default_recipe_by_hand():
    """The recipe as scored by default (seed 0): three repeats r = 0, 1, 2, each re-drawing the
    weights with torch's default initialiser under torch.manual_seed(r) in float64 (here: as a
    fresh Conv2d draws them) and feeding one uniform-noise image in [-0.5, 0.5) from a generator
    seeded r; signed weights; each channel divided by its spatial maximum; layer entropies
    summed, repeats averaged.  Net: conv 1x1 (1 -> 2) -> ReLU -> conv 1x1 (2 -> 1) -> ReLU, on
    one 2x2 channel, every step written out in plain Python below."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(),
                          nn.Conv2d(2, 1, 1, bias=False), nn.ReLU())
    totals = []
    for r in range(3):
        torch.manual_seed(r)
        w1 = nn.Conv2d(1, 2, 1, bias=False, dtype=torch.float64).weight.flatten().tolist()
        w2 = nn.Conv2d(2, 1, 1, bias=False, dtype=torch.float64).weight.flatten().tolist()
        gen = torch.Generator().manual_seed(r)
        x = [-0.5 + u for u in torch.rand(4, generator=gen, dtype=torch.float64).tolist()]
        h = [[max(w * v, 0.0) for v in x] for w in w1]
        z = [max(w2[0] * a + w2[1] * b, 0.0) for a, b in zip(*h)]
        totals.append(_layer_entropy(h) + _layer_entropy([z]))
    expected = sum(totals) / 3
    got = zcproxy.score(model, "entropic", input_shape=(1, 2, 2))
    assert got == pytest.approx(expected, rel=1e-9)
    assert len(set(totals)) == 3 and expected > 0  # the repeats differ: each counts


def test_an_undefined_score_carries_its_reason():
    @zcproxy.register_proxy("zc_test_undefined", replace=True)
    def undefined(ctx):
        raise zcproxy.ProxyUndefined("the kernel is singular", value=float("-inf"))
    try:
        model = nn.Sequential(conv1x1(1.0), nn.ReLU())
        with pytest.raises(zcproxy.NonFiniteScoreError, match="kernel is singular"):
            zcproxy.score(model, "zc_test_undefined")
        assert zcproxy.score(model, "zc_test_undefined", nonfinite="keep") == float("-inf")
        with pytest.warns(RuntimeWarning, match="kernel is singular"):
            assert math.isnan(zcproxy.score(model, "zc_test_undefined", nonfinite="nan"))
    finally:
        from zcproxy.registry import unregister_proxy
        unregister_proxy("zc_test_undefined")


def test_entropic_layer_mean_and_explain_add_up():
    model = nn.Sequential(conv1x1(-2.0), nn.ReLU(), conv1x1(3.0), nn.ReLU(), conv1x1(1.0), nn.ReLU())
    shape = dict(input_shape=(1, 8, 8))
    total = zcproxy.score(model, "entropic", **shape)
    mean = zcproxy.score(model, "entropic", reduce="mean", **shape)
    layers = zcproxy.explain(model, "entropic", **shape)
    assert len(layers) == 3
    assert layers["entropy"].sum() == pytest.approx(total, rel=1e-9)
    assert mean == pytest.approx(total / 3, rel=1e-9)


def test_logsynflow_and_synflow_by_hand():
    """Linear(2→2, W1) -> BN -> ReLU -> Linear(2→1, w2), W1 = [[1,-2],[.5,1]], w2 = [3,-1].

    With |weights| and an all-ones input, R = |w2|·|W1|·1 = 3·3 + 1·1.5.
    ∂R/∂W1[i, j] = |w2_i| -> rows of 3 and 1; ∂R/∂w2_i = Σ_j |W1[i, j]| = [3, 1.5].
    LogSynflow = (1+2)·ln4 + (.5+1)·ln2 + 3·ln4 + 1·ln2.5 = 10.273778
    Synflow    = (1+2)·3   + (.5+1)·1   + 3·3   + 1·1.5   = 21.0
    """
    first, second = nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.0]]))
        second.weight.copy_(torch.tensor([[3.0, -1.0]]))
    model = nn.Sequential(first, nn.BatchNorm1d(2), nn.ReLU(), second)
    expected_log = 3 * math.log(4) + 1.5 * math.log(2) + 3 * math.log(4) + math.log(2.5)
    scores = zcproxy.score_many(model, ["logsynflow", "synflow"], input_shape=(2,))
    assert scores["logsynflow"] == pytest.approx(expected_log, rel=1e-12)
    assert expected_log == pytest.approx(10.273778, abs=1e-6)
    assert scores["synflow"] == pytest.approx(21.0, rel=1e-12)


def test_naswot_kernel_by_hand():
    """Codes c0 = 1011, c1 = 1100, c2 = 0000 agree on K = [[4,1,1],[1,4,2],[1,2,4]] units;
    det K = 4·12 − 1·2 + 1·(−2) = 44."""
    codes = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]]).bool()
    k = agreement_kernel(codes)
    assert k.tolist() == [[4, 1, 1], [1, 4, 2], [1, 2, 4]]
    # The same pattern end to end: the ReLU sees the signs of the raw inputs.
    inputs = torch.tensor([[1.0, -1, 2, 3], [0.5, 1, -1, -2], [-1, -1, -1, -1]])
    model = nn.Sequential(nn.Flatten(), nn.ReLU())
    assert zcproxy.score(model, "naswot", inputs=inputs) == pytest.approx(math.log(44))


def test_naswot_duplicate_images_are_flagged():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    x = torch.randn(4, 3, 8, 8)
    x[1] = x[0]
    with pytest.raises(zcproxy.NonFiniteScoreError, match="naswot"):
        zcproxy.score(model, "naswot", inputs=x)
    assert zcproxy.score(model, "naswot", inputs=x, nonfinite="keep") == -math.inf
    with pytest.warns(RuntimeWarning):
        assert math.isnan(zcproxy.score(model, "naswot", inputs=x, nonfinite="nan"))




def flip_signs(model):
    with torch.no_grad():
        for p in model.parameters():
            p.neg_()
    return model


@pytest.mark.parametrize("proxy,opts", [("logsynflow", {}), ("synflow", {}),
                                        ("entropic_abs", {"reinit": False})])
def test_sign_of_weights_does_not_matter_after_abs(proxy, opts):
    model = small_cnn()
    before = zcproxy.score(model, proxy, **opts)
    after = zcproxy.score(flip_signs(model), proxy, **opts)
    assert before == pytest.approx(after, rel=1e-12)


def test_entropic_reinitialises_so_weights_do_not_matter():
    a, b = small_cnn(), small_cnn()
    with torch.no_grad():
        for p in b.parameters():
            p.mul_(7.0)
    assert zcproxy.score(a, "entropic") == zcproxy.score(b, "entropic")
    assert zcproxy.score(a, "entropic", seed=1) != zcproxy.score(a, "entropic", seed=0)


def test_every_proxy_is_deterministic_bit_for_bit():
    model = small_cnn()
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    first = zcproxy.score_many(model, zcproxy.available_proxies(), inputs=x, targets=y)
    second = zcproxy.score_many(model, zcproxy.available_proxies(), inputs=x, targets=y)
    assert first == second
    assert all(math.isfinite(v) for v in first.values())


def snapshot(model):
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "types": [type(m) for m in model.modules()],
        "rng": torch.get_rng_state(),
    }


@pytest.mark.parametrize("train_mode", [True, False])
def test_scoring_never_mutates_the_callers_model(train_mode):
    model = small_cnn().train(train_mode)
    model[0].weight.requires_grad_(False)
    before = snapshot(model)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    torch.set_rng_state(before["rng"])
    zcproxy.score_many(model, zcproxy.available_proxies(), inputs=x, targets=y)
    after = snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for key in before["state"]:
        assert torch.equal(before["state"][key], after["state"][key]), key
    for key in ("modes", "requires_grad", "types"):
        assert before[key] == after[key], key
    assert all(g is None for g in after["grads"])
    assert torch.equal(before["rng"], after["rng"]), "the global RNG state was consumed"


def test_model_returning_a_tuple_needs_an_explicit_selector():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = small_cnn()

        def forward(self, x):
            return x.mean(), self.body(x)

    model = TwoHeads()
    with pytest.raises(zcproxy.ProxyInputError, match="output="):
        zcproxy.score(model, "logsynflow")
    direct = zcproxy.score(model.body, "logsynflow")
    assert zcproxy.score(model, "logsynflow", output=zcproxy.last_of_tuple) == direct


def test_packed_kernel_equals_the_float_kernel():
    """The CPU fast path (XOR + popcount on bit-packed codes) against the reference matmul, on
    layers whose widths are not multiples of 8 or 64 (padding must not count as agreement)."""
    import numpy as np
    from zcproxy.proxies.naswot import packed_agreement_kernel
    gen = torch.Generator().manual_seed(0)
    layers = [torch.rand(16, d, generator=gen) > 0.5 for d in (5, 64, 77, 300)]
    reference = sum(agreement_kernel(c) for c in layers)
    packed = [np.packbits(c.numpy(), axis=1) for c in layers]
    fast = packed_agreement_kernel(packed, sum(c.shape[1] for c in layers))
    assert np.array_equal(fast, reference.numpy())


# ---- the activation check: proxies must see every activation call (issue 18) ---------------------
class FunctionalGelu(nn.Module):
    """A CNN whose second activation is applied functionally (as in hand-written blocks)."""

    def __init__(self):
        super().__init__()
        self.body = small_cnn()

    def forward(self, x):
        b = self.body
        h = b[2](b[1](b[0](x)))
        h = torch.nn.functional.gelu(b[4](b[3](h)))
        return b[8](b[7](b[6](h)))


@pytest.mark.parametrize("proxy", ["entropic", "naswot"])
def test_functional_activations_raise_instead_of_scoring_part_of_the_network(proxy):
    """Before issue 18 the proxies silently scored the one activation they could hook."""
    model = FunctionalGelu()
    x = torch.randn(4, 3, 16, 16)
    with pytest.raises(zcproxy.ActivationMismatchError, match=r"2 activation calls.*1 of them "
                       r"functionally \(gelu at .*test_proxies.py:\d+ \(forward\)\).*saw 1"):
        zcproxy.score(model, proxy, inputs=x)
    with pytest.warns(RuntimeWarning, match="functionally"):
        warned = zcproxy.score(model, proxy, inputs=x, activation_check="warn")
    assert warned == zcproxy.score(model, proxy, inputs=x, activation_check="off")


def test_a_lost_activation_is_reported_as_a_surgery_fault(monkeypatch):
    """Simulates the issue-18 bug (a fused norm's activation dropped in surgery) on today's
    surgery, so the check keeps catching any future loss."""
    import zcproxy.surgery as surgery
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.GELU())
    monkeypatch.setattr(surgery, "_needs_relu", lambda m: isinstance(m, nn.GELU))
    monkeypatch.setattr(surgery.nn, "ReLU", lambda *a, **k: nn.Identity())
    with pytest.raises(zcproxy.ActivationMismatchError, match="'entropic' saw 1 activation calls.*makes 2.*surgery"):
        zcproxy.score(model, "entropic")


def test_details_report_input_shape_and_activation_calls():
    model = small_cnn()
    d = zcproxy.score(model, "entropic", return_details=True)
    assert isinstance(d, zcproxy.ScoreDetails) and d.value == zcproxy.score(model, "entropic")
    assert (d.input_shape, d.activation_calls_seen, d.activation_calls_traced) == ((3, 32, 32), 2, 2)
    assert d.input_shape_source.startswith("default") and d.reason == "" and d.seconds > 0
    many = zcproxy.score_many(model, ["synflow", "n_params"], input_shape=(3, 8, 8),
                              return_details=True)
    assert many["synflow"].input_shape == (3, 8, 8) and many["synflow"].activation_calls_seen is None
    assert many["synflow"].input_shape_source == "input_shape argument"


def test_default_input_shape_comes_from_what_the_model_declares():
    from zcproxy.context import resolve_input_shape
    model = small_cnn()
    model.pretrained_cfg = {"input_size": (3, 20, 20)}  # how timm models declare it
    assert resolve_input_shape(model) == ((3, 20, 20), "model.pretrained_cfg['input_size']")
    assert zcproxy.score(model, "entropic", return_details=True).input_shape == (3, 20, 20)
    assert resolve_input_shape(model, (3, 8, 8))[0] == (3, 8, 8)
    assert resolve_input_shape(model, inputs=torch.zeros(2, 3, 9, 9))[0] == (3, 9, 9)
    torchvision = pytest.importorskip("torchvision")
    weights = torchvision.models.ResNet18_Weights.DEFAULT  # no download: only its metadata
    assert resolve_input_shape(small_cnn(), weights)[0] == (3, 224, 224)
    vit = torchvision.models.VisionTransformer(image_size=48, patch_size=16, num_layers=1,
                                               num_heads=1, hidden_dim=16, mlp_dim=16)
    assert resolve_input_shape(vit) == ((3, 48, 48), "model.image_size")
    assert explain_attrs(vit)["input_shape"] == (3, 48, 48)


def explain_attrs(model):
    return zcproxy.explain(model, "entropic", repeats=1).attrs


# ---- the caller's model never changes (issue 13) -------------------------------------------------
MUTATIONS = {
    "values through .data": lambda m: m[0].weight.data.mul_(2),
    "values through state_dict": lambda m: [t.abs_() for t in m.state_dict().values()
                                            if t.is_floating_point()],
    "a sign flip": lambda m: m[8].weight.data.neg_(),
    "mode": lambda m: m.train(not m.training),
    "requires_grad": lambda m: m[0].weight.requires_grad_(False),
    "a gradient": lambda m: m(torch.randn(2, 3, 8, 8)).sum().backward(),
    "a hook": lambda m: m[2].register_forward_hook(lambda *a: None),
    "a module": lambda m: m.__setitem__(2, nn.GELU()),
    "BN statistics": lambda m: m.train()(torch.randn(2, 3, 8, 8)),
}


@pytest.mark.parametrize("mutation", MUTATIONS, ids=str)
def test_a_proxy_that_changes_the_callers_model_is_caught(mutation):
    @zcproxy.register_proxy("zc_test_mutating", replace=True)
    def mutating(ctx):
        MUTATIONS[mutation](ctx.model)
        return 1.0
    try:
        model = small_cnn().eval()
        with pytest.raises(zcproxy.ModelMutatedError, match="'zc_test_mutating' changed"):
            zcproxy.score_many(model, ["synflow", "zc_test_mutating"], input_shape=(3, 8, 8))
    finally:
        from zcproxy.registry import unregister_proxy
        unregister_proxy("zc_test_mutating")


def test_the_mutation_check_reads_a_bounded_sample_of_every_tensor(monkeypatch):
    """The check after every proxy reads at most ``_SAMPLES`` values per tensor, whatever the
    tensor's size, which is what keeps it cheaper than one batch-1 forward of the network it
    guards.  Its cost is measured in ``benchmarks/bench_fingerprint.py`` (FINGERPRINT.md), not
    here: a timing on shared cores is no test."""
    from zcproxy import context
    from zcproxy.nasbench import get_benchmark
    read: list[int] = []
    real_reduce = context._reduce
    monkeypatch.setattr(context, "_reduce", lambda flat: read.append(len(flat)) or
                        real_reduce(flat))
    model = get_benchmark("nats-tss").build(8177).eval()
    model.add_module("wide", nn.Linear(4096, 2048))  # 8.4 M values in one tensor
    tensors = list(model.parameters()) + list(model.buffers())
    fingerprint = context.ModelFingerprint(model)
    read.clear()
    assert fingerprint.changes(model) == []
    bound = sum(min(t.numel(), context._SAMPLES) for t in tensors)
    assert 0 < sum(read) <= bound < sum(t.numel() for t in tensors) // 20
    with torch.no_grad():
        model.wide.weight.data.mul_(-1.0)  # a write through .data bumps no version counter
    assert fingerprint.changes(model) == ["parameter wide.weight (values)"]


# ---- inputs and models zcproxy cannot score give one clear error (issue 13) ----------------------
def test_integer_and_other_dtype_inputs_and_meta_models_give_one_clear_error():
    model = small_cnn()
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(zcproxy.ProxyInputError, match=r"uint8.*inputs.float\(\).div\(255\)"):
        zcproxy.score(model, "naswot", inputs=images)
    with pytest.raises(zcproxy.ProxyInputError, match=r"float16 but the model's parameters are "
                                                      r"torch.float32.*inputs.to\(torch.float32\)"):
        zcproxy.score(model, "naswot", inputs=torch.randn(4, 3, 16, 16).half())
    with torch.device("meta"):
        meta = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    for proxy in ("entropic", "n_params"):
        with pytest.raises(zcproxy.ProxyInputError, match=r"meta device.*to_empty"):
            zcproxy.score(meta, proxy)
    with pytest.raises(zcproxy.ProxyInputError, match="meta device"):
        zcproxy.explain(meta)



def test_the_core_imports_nothing_from_the_benchmarks():
    """Output selectors live in context.py; nasbench.base re-exports them."""
    import subprocess
    import sys
    code = ("import sys, zcproxy, zcproxy.api, zcproxy.explain; zcproxy.available_proxies(); "
            "print(sorted(m for m in sys.modules if m.startswith(('zcproxy.nasbench', "
            "'zcproxy.runner', 'zcproxy.search'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from zcproxy.nasbench import base
    assert base.last_of_tuple is zcproxy.last_of_tuple and base.logits_only is zcproxy.logits_only


def test_jacob_cov_is_undefined_where_the_output_ignores_the_input():
    """torchvision's ViT starts with a zero classifier head (and a NAS-Bench-201 cell may have no
    path from input to output): every input Jacobian is 0, their correlation 0/0.  This raised
    torch.linalg.LinAlgError from the eigendecomposition of a NaN matrix."""
    model = small_cnn()
    with torch.no_grad():
        model[8].weight.zero_()
    x = torch.randn(4, 3, 8, 8)
    d = zcproxy.score(model, "jacob_cov", inputs=x, nonfinite="keep", return_details=True)
    assert math.isnan(d.value) and "Jacobian of 4 of 4 images is constant" in d.reason
