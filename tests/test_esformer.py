"""ESFormer search space and builder: genes, operators, and the networks against timm and hand counts."""
from __future__ import annotations

import json
import random
import re
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from zcproxy.esformer import (
    ALL_GENES, SIZE_GENES, TOPOLOGY_GENES, Architecture, BlockGenes, SearchSpace, arch_cost,
    build_model, count_macs, count_params, efficientformer_v2,
)
from zcproxy.esformer.blocks import (
    Attention, ConvNeXtFFN, InvertedBottleneck, ResidualBottleneck, ResidualFFN,
)

SPACES = [SearchSpace(t, e) for t in ("s0", "s1", "s2") for e in (False, True)]


def _widths(arch: Architecture) -> list[int]:
    return [g.out_channels for _, _, g in arch.blocks()]


def _nondecreasing(values: list[int]) -> bool:
    return all(a <= b for a, b in zip(values, values[1:]))


# ---- genes, validation, JSON --------------------------------------------------------------------
def test_json_round_trip():
    for space in SPACES:
        rng = random.Random(1)
        for arch in [space.efficientformer_v2()] + [space.random(rng) for _ in range(10)]:
            text = arch.to_json()
            back = Architecture.from_json(text)
            assert back == arch and hash(back) == hash(arch)
            assert json.loads(text)["skeleton"] == space.skeleton
    with pytest.raises(ValueError, match="not an ESFormer architecture"):
        Architecture.from_json('{"skeleton": "s0"}')


def test_validation_errors_name_the_block_and_the_gene():
    ref = efficientformer_v2("s0")  # stages of 2-2-6-4 blocks, the last 2 of stages 3-4 attention
    cases = [
        (dict(stage=1, block=1, kernel_size=4), "stage 2 block 2: kernel_size=4 not in (3, 5, 7)"),
        (dict(stage=0, block=0, ffn_type="bottleneck"), "stage 1 block 1: ffn_type='bottleneck'"),
        (dict(stage=2, block=5, kernel_size=5), "stage 3 block 6: kernel_size=5 not in (3,)"),
        (dict(stage=2, block=5, num_heads=3), "stage 3 block 6: num_heads=3"),
        (dict(stage=3, block=3, head_dim=20), "stage 4 block 4: head_dim=20"),
        (dict(stage=0, block=1, num_heads=8), "stage 1 block 2: num_heads=8"),
        (dict(stage=1, block=1, expansion=7), "stage 2 block 2: expansion=7"),
        (dict(stage=2, block=0, out_channels=100), "stage 3 block 1: out_channels=100"),
    ]
    for change, message in cases:
        s, b = change.pop("stage"), change.pop("block")
        with pytest.raises(ValueError, match=re.escape(message)):
            ref.replace_block(s, b, **change)
    # bottlenecks exist only in the extended space, and only for FFN blocks there
    ext = efficientformer_v2("s0", extended=True)
    assert ext.replace_block(0, 0, ffn_type="bottleneck").stages[0][0].ffn_type == "bottleneck"
    with pytest.raises(ValueError, match=re.escape("stage 4 block 3: ffn_type='bottleneck'")):
        ext.replace_block(3, 2, ffn_type="bottleneck")
    with pytest.raises(ValueError, match="kernel_size=True is not an integer"):
        BlockGenes("ibn", True, 32, 4)
    with pytest.raises(ValueError, match="stage 1 has 1 blocks, skeleton s0 needs 2"):
        Architecture("s0", (ref.stages[0][:1],) + ref.stages[1:])
    with pytest.raises(ValueError, match="unknown skeleton 's9'"):
        SearchSpace("s9")


def test_output_channels_must_not_decrease():
    ref = efficientformer_v2("s1")  # stage 3 widths 120
    with pytest.raises(ValueError, match=re.escape(
            "stage 3 block 3: out_channels=112 < 120 of stage 3 block 2; output channels must be nondecreasing")):
        ref.replace_block(2, 2, out_channels=112)
    grown = ref.replace_block(2, 8, out_channels=128)  # the last block of a stage may widen alone
    assert grown.stages[2][8].out_channels == 128
    with pytest.raises(ValueError, match=re.escape("stage 3 block 9: out_channels=120 < 128")):
        grown.replace_block(2, 7, out_channels=128).replace_block(2, 8, out_channels=120)


# ---- operators ----------------------------------------------------------------------------------
def _changed_genes(a: Architecture, b: Architecture) -> set[str]:
    return {gene for (_, _, ga), (_, _, gb) in zip(a.blocks(), b.blocks())
            for gene in ALL_GENES if ga.get(gene) != gb.get(gene)}


def test_random_mutate_crossover_keep_validity_and_gene_kinds():
    mutated = {"topology": set(), "size": set()}
    for seed in range(60):
        for space in SPACES:
            rng = random.Random(seed)
            a, b = space.random(rng), space.random(rng)
            assert _nondecreasing(_widths(a)) and _nondecreasing(_widths(b))
            for kind, frozen in (("topology", "size"), ("size", "topology")):
                n = rng.randint(1, 4)
                child = space.mutate(a, rng, genes=kind, n_mutations=n)
                assert child.gene_values(frozen) == a.gene_values(frozen)
                assert _nondecreasing(_widths(child))
                if n == 1:
                    assert child != a
                mutated[kind] |= _changed_genes(a, child)
            both = space.mutate(a, rng, genes="all", n_mutations=3)
            assert _nondecreasing(_widths(both))
            kid = space.crossover(a, b, rng)
            assert _nondecreasing(_widths(kid))
            for s, (sa, sb, sk) in enumerate(zip(a.stages, b.stages, kid.stages)):
                parent_widths = {g.out_channels for g in sa + sb}
                for ga, gb, gk in zip(sa, sb, sk):
                    rest = {g: gk.get(g) for g in ALL_GENES if g != "out_channels"}
                    assert rest in ({g: ga.get(g) for g in rest}, {g: gb.get(g) for g in rest})
                    assert gk.out_channels in parent_widths
    assert mutated["topology"] == set(TOPOLOGY_GENES)
    assert mutated["size"] == set(SIZE_GENES)


def test_operators_accept_numpy_rng_and_are_reproducible():
    space = SearchSpace("s2", extended=True)
    a = space.random(np.random.default_rng(3))
    assert a == space.random(np.random.default_rng(3))
    assert space.mutate(a, random.Random(5), "size", 3) == space.mutate(a, random.Random(5), "size", 3)
    with pytest.raises(TypeError, match="rng must be"):
        space.random(7)
    with pytest.raises(ValueError, match="genes='shape'"):
        space.mutate(a, random.Random(0), genes="shape")
    with pytest.raises(ValueError, match="n_mutations=0"):
        space.mutate(a, random.Random(0), n_mutations=0)
    with pytest.raises(ValueError, match="given to space"):
        SearchSpace("s2").mutate(a, random.Random(0))


def test_budgets_reachable_and_exceedable():
    for target, budget in (("s0", 3.5e6), ("s1", 6e6), ("s2", 12.5e6)):
        space = SearchSpace(target)
        ends = []
        for pick in (0, -1):
            stages = tuple(tuple(BlockGenes(**{g: space.choices(s, b, g)[pick] for g in ALL_GENES})
                                 for b in range(d)) for s, d in enumerate(space.depths))
            ends.append(count_params(build_model(Architecture(target, stages), device="meta")))
        assert ends[0] < budget < ends[1], (target, ends)


# ---- networks against timm ----------------------------------------------------------------------
def _timm(target: str, device: str = "cpu") -> nn.Module:
    timm = pytest.importorskip("timm")
    return timm.create_model(f"efficientformerv2_{target}", pretrained=False, distillation=False,
                             device=device)


@pytest.mark.parametrize("target", ["s0", "s1", "s2"])
def test_efficientformer_v2_params_and_macs_match_timm(target):
    """Both networks on the meta device (shapes only) to keep this fast; the test below checks
    that meta counts equal the real network's."""
    ours, ref = build_model(efficientformer_v2(target), device="meta"), _timm(target, "meta")
    p_ours, p_ref = count_params(ours), count_params(ref)
    assert abs(p_ours - p_ref) <= 0.02 * p_ref, (p_ours, p_ref)
    m_ours, m_ref = count_macs(ours, 224), count_macs(ref, 224)
    assert abs(m_ours - m_ref) <= 0.02 * m_ref, (m_ours, m_ref)


def test_efficientformer_v2_s0_computes_what_timm_computes():
    """Same weights in both networks (copied in registration order) -> same logits.  BN statistics,
    biases, attention biases and layer scales are randomised so that every term matters."""
    torch.manual_seed(0)
    ref = _timm("s0")
    ours = build_model(efficientformer_v2("s0"))
    assert arch_cost(efficientformer_v2("s0")) == (count_params(ours), count_macs(ours, 224))
    with torch.no_grad():
        for name, t in ref.state_dict().items():
            if t.dtype.is_floating_point:
                if "running_var" in name:
                    t.uniform_(0.5, 1.5)
                elif "gamma" in name:  # layer scales, 1e-5 at init
                    t.uniform_(0.5, 1.0)
                elif "attention_biases" in name:  # zero at init
                    t.uniform_(-3.0, 3.0)
                elif t.dim() == 1:
                    t.uniform_(-0.5, 0.5)
    ref_state, our_keys = ref.state_dict(), list(ours.state_dict())
    assert len(ref_state) == len(our_keys)
    mapped = {}
    for k_ours, (k_ref, t) in zip(our_keys, ref_state.items()):
        assert ours.state_dict()[k_ours].shape == t.shape, (k_ours, k_ref)
        mapped[k_ours] = t
    ours.load_state_dict(mapped)
    x = torch.randn(2, 3, 224, 224)
    ref.eval(), ours.eval()
    with torch.no_grad():  # stage by stage: pooled logits alone would hide small differences
        h_ref, h_ours = ref.stem(x), ours.stem(x)
        for stage_ref, stage_ours in zip(ref.stages, ours.stages):
            h_ref, h_ours = stage_ref(h_ref), stage_ours(h_ours)
            _assert_close(h_ours, h_ref)
        _assert_close(ours(x), ref(x))


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    assert scale > 1e-2  # not a comparison of two near-zero tensors
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6 * scale)


# ---- every block type ---------------------------------------------------------------------------
def _tiny(extended: bool = True) -> Architecture:
    """An s0 network at small widths exercising every block type and channel growth in stages."""
    def ffn(t, k, c, e=2):
        return BlockGenes(t, k, c, e)

    def att(t, c, e=2, h=2, d=16):
        return BlockGenes(t, 3, c, e, h, d)
    return Architecture("s0", (
        (ffn("ibn", 3, 16), ffn("convnext", 5, 24)),
        (ffn("bottleneck", 7, 48), ffn("ibn", 7, 56)),
        (ffn("convnext", 3, 80), ffn("bottleneck", 3, 88), ffn("ibn", 5, 88), ffn("convnext", 7, 96),
         att("ibn", 96), att("convnext", 104, h=4, d=24)),
        (ffn("bottleneck", 5, 144), ffn("convnext", 3, 152), att("convnext", 152), att("ibn", 160, e=3)),
    ), extended)


def test_every_block_type_forward_and_backward_at_224():
    torch.manual_seed(0)
    model = build_model(_tiny(), num_classes=10, img_size=224)
    kinds = Counter(type(m).__name__ for m in model.modules())
    assert kinds["InvertedBottleneck"] == 2 + 3 and kinds["ConvNeXtFFN"] == 3 + 3
    assert kinds["ResidualBottleneck"] == 3 and kinds["Attention"] == 4
    assert kinds["AttentionDownsample"] == 1
    out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 10)
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.stages[2].blocks[4].attn.attention_biases.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [160, 256])
def test_other_resolutions(size):
    model = build_model(_tiny(), num_classes=7, img_size=size).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 7)
        with pytest.raises(ValueError, match=f"built for {size // 16}x{size // 16}"):
            model(torch.randn(1, 3, 224, 224))
    with pytest.raises(ValueError, match="img_size=200"):
        build_model(_tiny(), img_size=200)


def test_activations_and_norms_are_modules():
    """Proxies swap GELU->ReLU and BN->Identity by module replacement; all of them must be modules,
    counted here by hand from the genes: 2 in the stem, ibn 2, convnext 1, bottleneck 3, attention
    1 (+ its FFN), attention downsample 1."""
    arch = _tiny()
    hand = 2 + 1
    for s, b, g in arch.blocks():
        hand += {"ibn": 2, "convnext": 1, "bottleneck": 3}[g.ffn_type] + (1 if g.num_heads else 0)
    model = build_model(arch, num_classes=5).eval()
    assert sum(isinstance(m, nn.GELU) for m in model.modules()) == hand
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        y = model(x)
        for target, swap in ((nn.GELU, nn.ReLU), (nn.BatchNorm2d, nn.Identity)):
            clone = build_model(arch, num_classes=5).eval()
            clone.load_state_dict(model.state_dict())
            for parent in list(clone.modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, target):
                        setattr(parent, name, swap())
            assert not torch.allclose(clone(x), y)


# ---- hand counts and the zero-padded residual -----------------------------------------------------
def _conv_bn(c_in, c_out, k=1, groups=1):
    return c_in // groups * c_out * k * k + c_out + 2 * c_out  # weight, bias, BN affine


def test_block_params_and_macs_by_hand():
    hw = 8 * 8
    x = torch.randn(1, 16, 8, 8)
    ibn = ResidualFFN("ibn", 16, 24, 3, 5, 1e-5)
    assert isinstance(ibn.ffn, InvertedBottleneck)
    assert count_params(ibn) == _conv_bn(16, 48) + _conv_bn(48, 48, 5, 48) + _conv_bn(48, 24) + 24
    cnx = ResidualFFN("convnext", 16, 24, 3, 5, 1e-5)
    assert isinstance(cnx.ffn, ConvNeXtFFN)
    assert count_params(cnx) == _conv_bn(16, 16, 5, 16) + _conv_bn(16, 48) + _conv_bn(48, 24) + 24
    bot = ResidualBottleneck(16, 24, 3, 5)  # middle width 24 // 3 = 8
    assert count_params(bot) == _conv_bn(16, 8) + _conv_bn(8, 8, 5) + _conv_bn(8, 24)
    for block, macs in ((ibn, hw * (16 * 48 + 48 * 25 + 48 * 24)),
                        (cnx, hw * (16 * 25 + 16 * 48 + 48 * 24)),
                        (bot, hw * (16 * 8 + 8 * 8 * 25 + 8 * 24))):
        assert block(x).shape == (1, 24, 8, 8)
        assert _macs(block, x) == macs

    # attention, dim 32, 2 heads of query/key width 16, values 4x16 per head, 8x8 tokens
    n, qk, v = 64, 32, 128
    att = Attention(32, 2, 16, (8, 8))
    assert count_params(att) == (2 * _conv_bn(32, qk) + _conv_bn(32, v) + _conv_bn(v, v, 3, v)
                                 + 2 * (2 * 2 + 2) + _conv_bn(v, 32) + 2 * n)
    convs = n * (2 * 32 * qk + 32 * v + v * 9 + v * 32)
    talking_heads = 2 * (2 * 2 * n * n)
    matmuls = 2 * n * n * 16 + 2 * n * n * 64  # q @ k and attn @ v, per head
    assert _macs(att, torch.randn(1, 32, 8, 8)) == convs + talking_heads + matmuls
    strided = Attention(32, 2, 16, (8, 8), stride=2)  # 4x4 tokens, one extra depthwise conv
    assert count_params(strided) == count_params(att) - 2 * n + 2 * 16 + _conv_bn(32, 32, 3, 32)


def _macs(module: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    module.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() // 2


def test_residual_is_zero_padded_identity():
    x = torch.randn(2, 16, 6, 6)
    ffn = ResidualFFN("ibn", 16, 24, 2, 3, layer_scale_init=0.0)  # branch scaled to zero
    out = ffn(x)
    assert torch.equal(out[:, :16], x) and torch.equal(out[:, 16:], torch.zeros(2, 8, 6, 6))
    bot = ResidualBottleneck(16, 24, 2, 3)
    nn.init.zeros_(bot.expand.bn.weight)  # branch outputs exactly zero
    out = bot.eval()(x)
    torch.testing.assert_close(out[:, :16], nn.functional.gelu(x))
    assert torch.equal(out[:, 16:], torch.zeros(2, 8, 6, 6))
