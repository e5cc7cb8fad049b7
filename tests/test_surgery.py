"""The one place where models are transformed for proxies."""
import torch
from torch import nn

from zcproxy.surgery import (Recipe, activation_modules, capture_activations, prepare,
                             replace_modules)


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
