"""Every registered proxy on real timm and torchvision models (issue 18).

The zoo is ``zcproxy.models_table.ZOO`` (the table in results/models/README.md is made from the
same list): the small variant of each family at the input size it declares, untrained,
``num_classes=10``.  For each model and every proxy registered when the tests run:

* the score is finite, or NaN/-inf with the reason the proxy gives (``ProxyUndefined``);
* a proxy that reads activations saw as many activation calls per forward as a plain forward of
  the model makes, and that equals the aten-level count of ``n_act`` (an independent trace);
* the model is unchanged (checked here by value, independently of the scorer's fingerprint).

Data proxies get 4 random images with random labels, and options that make a proxy cheaper
without changing what code runs (one repeat instead of many, a smaller batch, MeCo_opt's 8
channels).  The whole file takes ~3 minutes of one core (19 models, ~35 proxies each) and
runs in CI; ``slow`` marks the slower half (~2 of the 3 minutes), which
``pytest -m "not slow"`` skips.
"""
from __future__ import annotations

import inspect
import math

import pytest
import torch

import zcproxy
from zcproxy.models_table import ZOO, build, score_model

pytest.importorskip("timm")
pytest.importorskip("torchvision")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these models run many small ops, which two threads barely speed up on
    two idle cores and slow down many times over when the cores are shared (measured here:
    MobileNetV2 with every proxy, 13 s on one thread, 340 s on two under a load of 9)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# Options that make a proxy cheap: applied when the proxy takes the option and its default is
# larger (an int), so proxies registered later are covered without naming them here.
CHEAP_DEFAULTS = {"repeats": 1, "batch_size": 4, "samples": 100}
CHEAP_BY_PROXY = {"meco": {"channels": 8}}  # MeCo_opt: 8 channels per module, not all


def cheap_options(name: str) -> dict[str, object]:
    params = inspect.signature(zcproxy.get_proxy(name).fn).parameters
    options = {k: v for k, v in CHEAP_DEFAULTS.items()
               if k in params and isinstance(params[k].default, int) and params[k].default > v}
    options.update({k: v for k, v in CHEAP_BY_PROXY.get(name, {}).items() if k in params})
    return options


# Proxies that fail on zoo models today (measured when this file was written, reported to their
# owners): proxy -> {zoo model name -> what goes wrong}.  An entry that starts passing fails the
# test, so the list stays the truth.
_TIMM_SWIN = "timm/swin (2 stages of 1, 2 of 2 blocks; dim 32)"
_TV_SWIN = "torchvision/swin (2 stages of 1, 2 of 2 blocks; dim 32)"
_TV_CONVNEXT = "torchvision/convnext (3 stages of 1 block; dim 16)"
_TV_VIT = "torchvision/vit (2 layers; dim 64)"
_DOUBLE_BACKWARD = "torch has no double backward for {} (GraSP's Hessian-gradient product)"
_TENAS_LR = "TE-NAS's 1-channel narrow copy cannot run this model ({})"
KNOWN_FAILURES: dict[str, dict[str, str]] = {
    "grasp": {**{m: _DOUBLE_BACKWARD.format("hardsigmoid") for m in (
                  "timm/mobilenetv3_small_050", "torchvision/mobilenet_v3_small")},
              **{m: _DOUBLE_BACKWARD.format("CPU flash attention") for m in (
                  "timm/mobilevit_xxs", "timm/vit_tiny_patch16_224",
                  "timm/deit_tiny_patch16_224")}},
    "gradsign": {"timm/levit_128s": "per-sample pass in train mode: BatchNorm1d on one sample"},
    "meco": {"timm/levit_128s": "one image in train mode: BatchNorm1d on one sample"},
    "tenas_lr": {m: _TENAS_LR.format(why) for m, why in (
        ("timm/mobilenetv3_small_050", "classifier input width"),
        ("timm/convnext_atto", "3x3 crops through a 4x4 stride-4 stem"),
        ("timm/efficientformerv2_s0", "attention reshapes by channel count"),
        ("timm/levit_128s", "attention reshapes by channel count"),
        ("timm/mobilevit_xxs", "unfolding patches by channel count"),
        ("timm/vit_tiny_patch16_224", "the ViT checks its input size"),
        ("timm/deit_tiny_patch16_224", "the ViT checks its input size"),
        (_TIMM_SWIN, "the Swin checks its input size"),
        (_TV_CONVNEXT, "3x3 crops through a 4x4 stride-4 stem"),
        (_TV_VIT, "the ViT checks its input size"),
        (_TV_SWIN, "3x3 crops through a 4x4 stride-4 stem"))},
}


def _param(entry):
    return pytest.param(entry, id=entry.name.split(" ")[0],
                        marks=[pytest.mark.slow] if entry.slow else [])


def _state(model: torch.nn.Module) -> dict:
    return {"tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
            "modes": [(n, m.training, type(m)) for n, m in model.named_modules()],
            "requires_grad": [p.requires_grad for p in model.parameters()],
            "grads": [p.grad is None for p in model.parameters()]}


@pytest.mark.parametrize("entry", [_param(e) for e in ZOO])
def test_every_proxy_on_a_real_model(entry):
    model = build(entry)
    before = _state(model)
    names = zcproxy.available_proxies()
    outcome = score_model(model, {p: cheap_options(p) for p in names}, name=entry.name,
                          input_shape=entry.input_shape and entry.input_shape(), batch=4)

    failures = {p: o.error or f"non-finite {o.value} without a reason"
                for p, o in outcome.proxies.items()
                if o.error or (not math.isfinite(o.value) and not o.reason)}
    known = {p: models[entry.name] for p, models in KNOWN_FAILURES.items()
             if entry.name in models and p in outcome.proxies}
    unexpected = {p: why for p, why in failures.items() if p not in known}
    fixed = sorted(set(known) - set(failures))
    assert not unexpected, f"{entry.name}: " + "; ".join(f"{p}: {e}" for p, e in unexpected.items())
    assert not fixed, f"{entry.name}: {fixed} now pass, remove them from KNOWN_FAILURES"

    n_act = outcome.proxies["n_act"].value
    hooked = {p: o.activation_calls for p, o in outcome.proxies.items() if o.activation_calls}
    assert {"entropic", "naswot"} <= set(hooked)
    assert all(seen == traced == n_act for seen, traced in hooked.values()), hooked

    after = _state(model)
    assert before["modes"] == after["modes"] and before["requires_grad"] == after["requires_grad"]
    assert before["grads"] == after["grads"]
    for key, value in before["tensors"].items():
        assert torch.equal(value, after["tensors"][key]), key


@pytest.mark.parametrize("name,calls", [("mobilenetv3_small_100", 33), ("efficientnet_b0", 49),
                                        ("efficientformerv2_s0", 35)])
def test_the_issue_18_table(name, calls):
    """explain() saw 10 of 33, 16 of 49 and 5 of 35 activation calls before fused norms were
    understood (timm's BatchNormAct2d replaced whole, activation included)."""
    import timm
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10)
    table = zcproxy.explain(model, "entropic", repeats=1)
    assert len(table) == table.attrs["activation_calls_traced"] == calls
    assert table.attrs["input_shape"] == (3, 224, 224)
    assert zcproxy.score(model, "n_act") == calls


def test_logsynflow_on_vit_tiny_is_nan_with_the_reason():
    """Softmax attention makes ∂R/∂θ ≤ -1 for half of vit_tiny's weights: log(1 + g) is
    undefined there (see zcproxy/proxies/synflow.py); Synflow itself stays finite."""
    import timm
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10)
    scores = zcproxy.score_many(model, ["synflow", "logsynflow"], nonfinite="keep",
                                return_details=True)
    assert math.isfinite(scores["synflow"].value)
    assert math.isnan(scores["logsynflow"].value)
    assert "∂R/∂θ ≤ -1" in scores["logsynflow"].reason
    with pytest.raises(zcproxy.NonFiniteScoreError, match="undefined on this model.*≤ -1"):
        zcproxy.score(model, "logsynflow")


@pytest.mark.slow
def test_timm_efficientformer_v2_s0_scores_like_zcproxys_own_build():
    """An independent check of the surgery: zcproxy's ESFormer builds EfficientFormerV2-S0 from
    plain modules (BatchNorm2d + GELU, see zcproxy/esformer/blocks.py), timm from fused
    BatchNormAct2d; with the same weights (copied as in tests/test_esformer.py) every proxy,
    re-initialising ones included (same seed on both), must score both networks alike."""
    import timm
    from zcproxy.esformer import build_model, efficientformer_v2
    torch.manual_seed(0)
    ref = timm.create_model("efficientformerv2_s0", pretrained=False, distillation=False,
                            num_classes=10).eval()
    ours = build_model(efficientformer_v2("s0"), num_classes=10).eval()
    ours.load_state_dict({k: t for k, t in zip(ours.state_dict(), ref.state_dict().values())})
    options = {p: cheap_options(p) for p in zcproxy.available_proxies()}
    a, b = score_model(ref, options, batch=4), score_model(ours, options, batch=4)
    assert a.input_shape == b.input_shape == (3, 224, 224)
    differ = {p: (a.proxies[p].value, b.proxies[p].value) for p in options
              if not _same(a.proxies[p], b.proxies[p])}
    differ = {p: v for p, v in differ.items() if p not in CROSS_CHECK_KNOWN}
    assert not differ, differ
    assert a.proxies["entropic"].activation_calls == b.proxies["entropic"].activation_calls == (35, 35)


# Proxies that read modules by kind rather than the computation, so the two module trees give
# them different tensors (reported to their owners).
CROSS_CHECK_KNOWN: dict[str, str] = {
    "meco": "sums over every module call: timm's tree has 29 Dropout(0) and 4 Identity modules "
            "more, each contributing its output's eigenvalue",
    "zen": "reads the input of an adaptive pooling module if there is one: zcproxy's build pools "
           "with nn.AdaptiveAvgPool2d, timm's with a mean in forward (then zen reads the "
           "classifier's input, after the final norm)",
}


def _same(x, y) -> bool:
    if x.error and y.error:  # a failure, not a difference (the matrix test reports it)
        return True
    return x.value == y.value or (math.isnan(x.value) and math.isnan(y.value))
