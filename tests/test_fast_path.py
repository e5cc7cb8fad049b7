"""The fast path (issue 16): other arithmetic, the same ranks.

``exact=False`` lets NASWOT compute its ReLU codes in bfloat16 channels-last, the signed
Entropic Score in float32 channels-last (weights still drawn in float64), and Synflow and
LogSynflow their gradients in float32 channels-last where float32 holds them (float64 where not).  These tests are the
small-sample fidelity gate: on real benchmark architectures the fast scores rank exactly as
the exact ones, differ only in the last bits, and no other proxy changes at all.  The
1,000-architecture measurement per benchmark is benchmarks/FIDELITY.md.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import zcproxy
from zcproxy import correlate
from zcproxy.context import ProxyContext
from zcproxy.proxies.naswot import positive
from zcproxy.runner import FAST_ARITHMETIC, ScoringJob, Worker
from zcproxy.stats import spearman_rho
from zcproxy.surgery import drawn_in, mark_chain_links, reinitialise
from zcproxy.verify import GATE_SPEARMAN, compare_scores

from nets import small_cnn

CORE = ("naswot", "logsynflow", "entropic")


def _score(bench: str, indices: list[int], exact: bool, proxies=CORE) -> dict[str, np.ndarray]:
    worker = Worker(ScoringJob(bench=bench, proxies=proxies, exact=exact, threads=1))
    rows = [r for i in indices for r in worker.score((i, str(worker.arches[i]), proxies))]
    assert not [r for r in rows if r[6] and not r[6].startswith("undefined")], rows
    return {p: np.array([r[4] for r in rows if r[2] == p]) for p in proxies}


@pytest.mark.parametrize("bench,n", [("nats-tss", 10), ("nats-sss", 8), ("nb101", 3)])
def test_fast_scores_rank_like_exact_ones(bench, n):
    from zcproxy.nasbench import get_benchmark
    indices = get_benchmark(bench).sample(n, seed=11)
    exact, fast = _score(bench, indices, True), _score(bench, indices, False)
    for proxy in CORE:
        e, f = exact[proxy], fast[proxy]
        assert np.array_equal(np.isfinite(e), np.isfinite(f)), proxy
        finite = np.isfinite(e)
        np.testing.assert_allclose(f[finite], e[finite], rtol=2e-4, err_msg=proxy)
        if finite.sum() > 2:
            assert spearman_rho(f[finite], e[finite]).value >= GATE_SPEARMAN, proxy
    # The fast path did take effect (bfloat16 codes are not float32 codes; float32 gradients
    # are not float64 ones: the adapters mark their networks' chain links, so float32 holds R).
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert not np.array_equal(exact["naswot"], fast["naswot"])
    assert not np.isin(fast["logsynflow"][np.isfinite(exact["logsynflow"])],
                       exact["logsynflow"]).any()


def _chain(depth: int, width: int = 16) -> torch.nn.Module:
    layers = [torch.nn.Conv2d(3, width, 3, padding=1, bias=False), torch.nn.ReLU()]
    for _ in range(depth):
        layers += [torch.nn.Conv2d(width, width, 3, padding=1, bias=False), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(width, 10))


@pytest.mark.parametrize("depth,links", [(3, False), (60, False), (60, True)])
def test_synflow_fast_path_stays_in_float32_range_or_falls_back(depth, links):
    """A chain deep enough that R exceeds float32's range must score exactly as the float64
    path (the fallback) unless its links are declared, a shallow one, or a deep one whose links
    are declared (each link's output rescaled by a power of two), within float32 rounding of
    it (the float32 path)."""
    torch.manual_seed(0)
    model = _chain(depth)
    if links:
        mark_chain_links(model)
    scores = {exact: zcproxy.score_many(model, ["synflow", "logsynflow"], input_shape=(3, 8, 8),
                                        exact=exact) for exact in (True, False)}
    for proxy in ("synflow", "logsynflow"):
        e, f = scores[True][proxy], scores[False][proxy]
        assert math.isfinite(e) and e > 0
        if depth == 60:
            assert e > 3.4e38 or proxy == "logsynflow"  # R overflows float32 here
        if depth == 60 and not links:
            assert f == e, proxy
        else:
            assert f != e and f == pytest.approx(e, rel=1e-5), proxy


def test_fast_path_leaves_every_other_proxy_bit_identical():
    others = ("grad_norm", "snip", "jacob_cov", "zen", "entropic_abs", "n_params")
    indices = [11, 4021]
    exact = _score("nats-tss", indices, True, others)
    fast = _score("nats-tss", indices, False, others)
    for proxy in others:
        assert np.array_equal(exact[proxy], fast[proxy], equal_nan=True), proxy


def test_bfloat16_codes_are_read_as_positive_exactly():
    values = torch.tensor([[0.0, -0.0, 1e-30, -1e-30, 3.5, -2.0, float("inf")]])
    for dtype in (torch.float32, torch.bfloat16):
        t = values.to(dtype)
        assert positive(t).tolist() == (t > 0).tolist()


def test_entropic_fast_path_scores_the_same_float64_draws():
    model = small_cnn()
    x = torch.rand(2, 3, 16, 16)
    exact = zcproxy.score(model, "entropic", inputs=x, activation_check="warn")
    fast = zcproxy.score(model, "entropic", inputs=x, exact=False, activation_check="warn")
    assert fast == pytest.approx(exact, rel=1e-5)
    # an independent draw differs by far more: the fast path is a rounding, not another draw
    other = zcproxy.score(model, "entropic", inputs=x, seed=1, activation_check="warn")
    assert abs(other - exact) > 100 * abs(fast - exact)


def test_drawn_in_draws_in_float64_and_restores_dtype_and_layout():
    net = small_cnn().float().to(memory_format=torch.channels_last)
    reference = small_cnn().double()
    reinitialise(reference, 7)
    with drawn_in(net, torch.float64):
        assert all(p.dtype == torch.float64 and p.is_contiguous() for p in net.parameters())
        reinitialise(net, 7)
    conv = net[0].weight
    assert conv.dtype == torch.float32 and conv.is_contiguous(memory_format=torch.channels_last)
    for mine, ref in zip(net.parameters(), reference.parameters()):
        assert torch.equal(mine, ref.float())


def test_a_journal_is_continued_only_with_its_arithmetic(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--bench", "nats-tss", "--sample", "3", "--seed", "5", "--proxies", "logsynflow",
            "--no-baselines", "--bootstrap", "0", "--no-progress", "--out", str(out)]
    assert correlate.main(base + ["--exact"]) == 0
    capsys.readouterr()
    assert correlate.main(base) == 2                     # fast now, exact there: refused
    err = capsys.readouterr().err
    assert f"arithmetic: exact there, {FAST_ARITHMETIC} now" in err and "--exact" in err
    assert correlate.main(base + ["--exact"]) == 0       # the same arithmetic continues
    assert "reusing 3 scored architectures" in capsys.readouterr().err
    # a journal of an earlier revision of the fast path is not continued by today's
    for record in (out / "journal.csv", out / "run.json"):
        text = record.read_text()
        assert '"arithmetic": "exact"' in text
        record.write_text(text.replace('"arithmetic": "exact"', '"arithmetic": "fast"', 1))
    assert correlate.main(base) == 2
    err = capsys.readouterr().err
    assert f"arithmetic: fast there, {FAST_ARITHMETIC} now" in err and "--fresh" in err


def _table(values) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame({"index": range(n), "arch": [f"a{i}" for i in range(n)],
                         "accuracy": np.linspace(0, 1, n), "naswot": values})


def test_verify_judges_runs_of_other_arithmetic_by_the_fidelity_gate():
    ref = _table([1.0, 2.0, 3.0, 4.0, -math.inf])
    close = _table([1.00001, 2.0, 3.00002, 4.0, -math.inf])
    same = compare_scores(close, ref)                               # both exact: tolerance
    assert not same.reproduced and not same.passed
    fast = compare_scores(close, ref, arithmetic=("fast", "exact"))
    assert fast.reproduced_in_rank and fast.passed
    assert "reproduced in rank" in fast.summary()
    swapped = compare_scores(_table([1.0, 3.0, 2.0, 4.0, -math.inf]), ref,
                             arithmetic=("fast", "exact"))
    assert not swapped.passed and "outside the fidelity gate" in swapped.summary()
    lost = compare_scores(_table([1.0, 2.0, 3.0, 4.0, 5.0]), ref, arithmetic=("fast", "exact"))
    assert not lost.passed                                  # -inf became finite


def test_pick_dtype_falls_back_to_exact_where_bfloat16_is_not_native():
    ctx = ProxyContext(model=small_cnn(), device=torch.device("cpu"), exact=True)
    assert ctx.pick_dtype(None, torch.bfloat16) is None
    ctx.exact = False
    expected = torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    assert ctx.pick_dtype(None, torch.bfloat16) is expected
    assert ctx.pick_dtype(torch.float64, torch.float32) is torch.float32


def test_verify_command_reads_each_runs_arithmetic_from_run_json(tmp_path, capsys):
    from zcproxy.verify import main as verify_main
    for name, values, record in (("ref", [1.0, 2.0, 3.0, 4.0], {}),
                                 ("new", [1.00001, 2.0, 3.00002, 4.0], {"arithmetic": "fast"})):
        (tmp_path / name).mkdir()
        _table(values).to_csv(tmp_path / name / "scores.csv", index=False)
        (tmp_path / name / "run.json").write_text(json.dumps(record))
    assert verify_main([str(tmp_path / "new"), str(tmp_path / "ref")]) == 0
    assert "reproduced in rank (fast vs exact arithmetic" in capsys.readouterr().out
    (tmp_path / "new" / "run.json").write_text("{}")          # both exact: tolerance decides
    assert verify_main([str(tmp_path / "new"), str(tmp_path / "ref")]) == 1


def test_fast_path_flips_few_relu_codes():
    """relu_codes lists units in one order on both paths, so codes compare unit by unit."""
    from zcproxy.nasbench import get_benchmark
    from zcproxy.proxies.naswot import relu_codes
    from zcproxy.data import cifar10_batch
    bench = get_benchmark("nats-sss")
    torch.manual_seed(3)
    model = bench.build(12345)
    x, y = cifar10_batch(16)
    codes = [relu_codes(ProxyContext(model=model, device=torch.device("cpu"), inputs=x,
                                     targets=y, output=bench.output_selector, exact=exact))
             for exact in (True, False)]
    assert codes[0].shape == codes[1].shape
    flipped = np.mean(codes[0] != codes[1])
    assert flipped < 0.01            # bfloat16 moves only activations near zero across it
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert flipped > 0           # ... and it does move some
