"""The one place where models are transformed for proxies."""
import copy

import pytest
import torch
from torch import nn

from zcproxy.nasbench import get_benchmark
from zcproxy.surgery import (Recipe, activation_modules, capture_activations, is_activation,
                             is_norm, prepare, replace_modules)


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
