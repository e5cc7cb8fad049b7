"""The one place where models are transformed for proxies."""
import copy

import pytest
import torch
from torch import nn

from zcproxy.nasbench import get_benchmark
from zcproxy.surgery import (Recipe, SuppressedNorm, activation_census, activation_modules,
                             capture_activations, is_activation, is_norm, norm_tail, prepare,
                             replace_modules, without_norm)


class Block(nn.Module):
    """Activations and norms hidden in attributes, lists and dicts."""

    def __init__(self):
        super().__init__()
        self.norms = nn.ModuleList([nn.LayerNorm(8), nn.GroupNorm(2, 8)])
        self.acts = nn.ModuleDict({"a": nn.GELU(), "b": nn.SiLU()})
        self.fc = nn.Linear(8, 8)
        self.hs = nn.Hardswish()
        self.gate = nn.Sigmoid()


def test_prepare_suppresses_norms_swaps_activations_and_keeps_gates():
    model = Block()
    out = prepare(model, Recipe(suppress_norm=True, relu=True, absolute=True))
    kinds = {type(m).__name__ for m in out.modules()}
    assert "LayerNorm" not in kinds and "GroupNorm" not in kinds and "GELU" not in kinds
    assert "Sigmoid" in kinds  # a gate is not an activation to replace
    assert sum(isinstance(m, nn.ReLU) for m in out.modules()) == 3
    assert (out.fc.weight >= 0).all()
    assert isinstance(model.norms[0], nn.LayerNorm) and isinstance(model.acts["a"], nn.GELU)


def test_reinitialise_is_seeded_and_leaves_global_rng_alone():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    state = torch.get_rng_state()
    a = prepare(model, Recipe(reinit_seed=5))
    b = prepare(model, Recipe(reinit_seed=5))
    c = prepare(model, Recipe(reinit_seed=6))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a[0].weight, b[0].weight)
    assert not torch.equal(a[0].weight, c[0].weight)
    assert not torch.equal(a[0].weight, model[0].weight)


def test_dtype_and_mode():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
    out = prepare(model, Recipe(dtype=torch.float64, train=True))
    assert out[0].weight.dtype == torch.float64 and out.training
    assert not model.training and model[0].weight.dtype == torch.float32


def test_capture_activations_fires_per_call_and_removes_hooks():
    relu = nn.ReLU()

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.relu = relu

        def forward(self, x):
            return self.relu(self.fc(self.relu(x)))

    model = Shared()
    seen = []
    with capture_activations(model, lambda name, t: seen.append(name)) as n:
        model(torch.randn(2, 3))
    assert n == 1 and seen == ["relu", "relu"]
    model(torch.randn(2, 3))
    assert len(seen) == 2 and not relu._forward_hooks


def test_replace_modules_counts():
    model = nn.Sequential(nn.ReLU(), nn.Sequential(nn.ReLU(), nn.Linear(2, 2)))
    assert replace_modules(model, lambda m: nn.Tanh() if isinstance(m, nn.ReLU) else None) == 2
    assert not activation_modules(model)


def test_inplace_relu_after_a_suppressed_norm_does_not_overwrite_a_residual():
    """With the norm an Identity, an in-place ReLU would clobber the tensor the skip adds."""

    class Residual(nn.Module):
        def __init__(self, inplace):
            super().__init__()
            self.norm = nn.BatchNorm1d(4)
            self.act = nn.ReLU(inplace=inplace)
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return x + self.fc(self.act(self.norm(x)))

    torch.manual_seed(0)
    plain, inplace = Residual(False), Residual(True)
    inplace.load_state_dict(plain.state_dict())
    x = torch.randn(3, 4)
    recipe = Recipe(suppress_norm=True, relu=True)
    assert torch.equal(prepare(inplace, recipe)(x), prepare(plain, recipe)(x))
    kept = prepare(plain, recipe).act
    assert type(kept) is nn.ReLU and not kept.inplace


def _prepare_step_by_step(model: nn.Module, recipe: Recipe) -> nn.Module:
    """What prepare must equal: deepcopy, then each step of the recipe on its own."""
    clone = copy.deepcopy(model)
    replace_modules(clone, lambda m: (nn.Identity() if recipe.suppress_norm and is_norm(m)
                                      else nn.ReLU() if recipe.relu and is_activation(m)
                                      else None))
    if recipe.absolute:
        with torch.no_grad():
            for p in clone.parameters():
                p.abs_()
    if recipe.dtype is not None:
        clone.to(recipe.dtype)
    if recipe.train is not None:
        clone.train(recipe.train)
    return clone


RECIPES = [Recipe(), Recipe(relu=True, train=True),
           Recipe(suppress_norm=True, absolute=True, dtype=torch.float64, train=False),
           Recipe(suppress_norm=True, relu=True, dtype=torch.float64, train=False),
           Recipe(absolute=True, dtype=torch.float16)]


@pytest.mark.parametrize("recipe", RECIPES, ids=str)
@pytest.mark.parametrize("bench", ["nats-sss", "nats-tss", "block"])
def test_prepare_equals_the_step_by_step_recipe(bench, recipe):
    """prepare copies and transforms in one walk; it must give what the steps give."""
    torch.manual_seed(0)
    model = Block() if bench == "block" else get_benchmark(bench).build(321)
    with torch.no_grad():
        for b in model.buffers():
            if b.is_floating_point():
                b.uniform_(-1, 1)  # running stats that differ from the defaults
    fast, slow = prepare(model, recipe), _prepare_step_by_step(model, recipe)
    assert [(n, type(m), m.training) for n, m in fast.named_modules()] == \
           [(n, type(m), m.training) for n, m in slow.named_modules()]
    fast_state, slow_state = fast.state_dict(), slow.state_dict()
    assert list(fast_state) == list(slow_state)
    for key, value in fast_state.items():
        assert value.dtype == slow_state[key].dtype and torch.equal(value, slow_state[key]), key
    assert [(type(p), p.requires_grad) for p in fast.parameters()] == \
           [(type(p), p.requires_grad) for p in slow.parameters()]
    original = dict(model.named_parameters())
    assert all(p.data_ptr() != original[n].data_ptr() for n, p in fast.named_parameters())


def test_prepare_keeps_tied_weights_tied():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    model[2].weight = model[0].weight
    out = prepare(model, Recipe(absolute=True, dtype=torch.float64))
    assert out[2].weight is out[0].weight and out[0].weight.dtype == torch.float64
    assert (out[0].weight >= 0).all() and not (model[0].weight >= 0).all()


# ---- fused normalisation + activation modules (issue 18) -----------------------------------------
class NormAct(nn.BatchNorm2d):
    """A fused norm + activation in timm's style (timm.layers.BatchNormAct2d): a BatchNorm2d
    subclass that applies its ``drop`` and ``act`` children after normalising.  Defined here so
    that the behaviour-based recognition is tested without timm."""

    def __init__(self, c, act=None, inplace=True):
        super().__init__(c)
        self.drop = nn.Identity()
        self.act = act if act is not None else nn.SiLU(inplace=inplace)

    def forward(self, x):
        return self.act(self.drop(super().forward(x)))


class PreActBlock(nn.Module):
    """Pre-activation residual block: the fused norm reads the residual stream, which the
    shortcut reads again, so an in-place activation left behind a suppressed norm would
    overwrite the shortcut."""

    def __init__(self, c=4):
        super().__init__()
        self.norm = NormAct(c, inplace=True)
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv(self.norm(x))


def _fused_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), NormAct(4), PreActBlock(), nn.Conv2d(4, 4, 1),
                         NormAct(4, act=nn.GELU()))


def _act_calls(net, x):
    seen = []
    with capture_activations(net, lambda name, t: seen.append(name)):
        net(x)
    return seen


@pytest.mark.parametrize("reinit", [None, 3], ids=["one-walk", "step-by-step"])
@pytest.mark.parametrize("recipe", [Recipe(suppress_norm=True), Recipe(suppress_norm=True, relu=True),
                                    Recipe(relu=True), Recipe(suppress_norm=True, absolute=True,
                                                              dtype=torch.float64)], ids=str)
def test_suppressing_a_fused_norm_keeps_its_activation(recipe, reinit):
    """Before issue 18 the whole BatchNormAct2d became an Identity, activation included, and
    activation-reading proxies saw 16 of EfficientNet-B0's 49 activation calls."""
    from dataclasses import replace
    model = _fused_net()
    x = torch.randn(2, 3, 8, 8, dtype=recipe.dtype or torch.float32)
    out = prepare(model, replace(recipe, reinit_seed=reinit))
    expected = ["1.act", "2.norm.act", "4.act"]
    assert _act_calls(out, x) == expected == _act_calls(model, x.float())
    if recipe.suppress_norm:
        assert not any(is_norm(m) for m in out.modules())
        for name in ("1", "2.norm", "4"):
            kept = out.get_submodule(name)
            assert type(kept) is SuppressedNorm and list(dict(kept.named_children())) == ["drop", "act"]
    swapped = {type(out.get_submodule(n)) for n in expected}
    assert swapped == ({nn.ReLU} if recipe.relu else {nn.SiLU, nn.GELU})
    assert all(not getattr(out.get_submodule(n), "inplace", False) for n in expected)
    assert isinstance(model[1], NormAct) and model[1].act.inplace  # the caller's model untouched


def test_suppressed_fused_norm_computes_the_activation_of_its_input():
    """The suppressed copy equals the network with every norm removed by hand, including the
    pre-activation shortcut (an in-place SiLU would have added silu(x) instead of x)."""
    model = _fused_net().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        h = torch.nn.functional.silu(model[0](x))
        h = h + model[2].conv(torch.nn.functional.silu(h))
        expected = torch.nn.functional.gelu(model[3](h))
        for reinit in (None, 0):
            out = prepare(model, Recipe(suppress_norm=True, reinit_seed=reinit))
            if reinit is not None:
                out.load_state_dict(model.state_dict(), strict=False)
            assert torch.equal(out(x), expected)


def test_synflow_backward_through_a_suppressed_inplace_fused_norm():
    """Synflow's recipe keeps activations as they are; an in-place one after a suppressed norm
    would modify a tensor autograd still needs."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), PreActBlock(), nn.Flatten(), nn.Linear(144, 2))
    net = prepare(model, Recipe(suppress_norm=True, absolute=True, dtype=torch.float64))
    net(torch.ones(1, 3, 8, 8, dtype=torch.float64)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_norm_tail_applies_drop_before_act_whatever_the_registration_order():
    """timm's convert_sync_batchnorm sets ``act`` before ``drop`` on SyncBatchNormAct."""
    norm = nn.LayerNorm(4)
    norm.act, norm.drop = nn.GELU(), nn.Dropout(0.1)
    assert [name for name, _ in norm_tail(norm)] == ["drop", "act"]
    assert norm_tail(nn.BatchNorm2d(4)) == [] and isinstance(without_norm(nn.BatchNorm2d(4)), nn.Identity)


def test_norms_of_other_libraries_by_class_hierarchy():
    timm = pytest.importorskip("timm")
    from timm.layers import BatchNormAct2d, GroupNormAct, LayerNormAct2d, RmsNorm, RmsNormAct
    from torchvision.ops import FrozenBatchNorm2d
    for norm in (RmsNorm(8), RmsNormAct(8), FrozenBatchNorm2d(8), BatchNormAct2d(8),
                 GroupNormAct(8, 2), LayerNormAct2d(8)):
        assert is_norm(norm), type(norm).__name__
    assert not is_norm(timm.layers.Mlp(8)) and not is_norm(nn.GELU())
    kept = prepare(nn.Sequential(BatchNormAct2d(8), GroupNormAct(8, 2)), Recipe(suppress_norm=True))
    assert [type(m) for m in kept] == [SuppressedNorm, SuppressedNorm]
    assert [(type(m.drop), type(m.act)) for m in kept] == [(nn.Identity, nn.ReLU)] * 2


# ---- the activation census and the guard --------------------------------------------------------
class Functional(nn.Module):
    """A block that applies GELU functionally, as hand-written attention/MLP code often does."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(8, 8), nn.Linear(8, 8), nn.ReLU()

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.act(self.fc1(x))))


class GeluTanh(nn.Module):  # an activation module that calls F.gelu (timm's GELUTanh)
    def forward(self, x):
        return torch.nn.functional.gelu(x, approximate="tanh")


GeluTanh.__name__ = "GELUTanh"


class Swish(nn.Module):  # an activation module with no aten activation op (timm's Swish)
    def forward(self, x):
        return x * torch.sigmoid(x)


def test_census_counts_module_and_functional_calls_once_each():
    relu = nn.ReLU()
    model = nn.Sequential(Functional(), relu, GeluTanh(), Swish(), relu, nn.Sigmoid())
    census = activation_census(model, lambda: model(torch.randn(2, 8)))
    # module calls: Functional.act, relu twice, GELUTanh, Swish; functional: the F.gelu only
    assert (census.module_calls, census.functional, census.calls) == (5, 1, 6)
    assert len(census.sites) == 1 and "test_surgery.py" in census.sites[0] and "forward" in census.sites[0]


@pytest.mark.parametrize("bench,index,calls", [("nats-tss", 321, 35), ("nats-sss", 7, 20),
                                              ("nb101", 11, 64)])
def test_census_sees_nothing_functional_in_benchmark_networks(bench, index, calls):
    """The benchmark runner scores without the activation check (it costs a tenth of NASWOT +
    LogSynflow + ES there), which is safe because these networks apply every activation
    through a module."""
    model = get_benchmark(bench).build(index)
    x = torch.randn(1, 3, 32, 32)
    census = activation_census(model, lambda: model(x))
    assert census.functional == 0 and census.module_calls == len(_act_calls(model, x)) == calls
