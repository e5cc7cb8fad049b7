"""The Table 5 ablation driver: its budgets, its commands, and the report's rescoring."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest
import torch

from zcproxy.esformer import Architecture, SearchSpace, build_model
from zcproxy.explain import explain
from zcproxy.search import SearchConfig, run_search
from zcproxy.search.__main__ import build_parser, config_from_args
from zcproxy.search.ablation import (
    RATE_PER_MINUTE, ablation_runs, block_type_of, is_finished, main, report,
)


def _config_of(run) -> SearchConfig:
    argv = run.command(Path("out"))[3:]  # after "python -m zcproxy.search"
    return config_from_args(build_parser().parse_args(argv))


def test_budgets_are_the_paper_minutes_at_the_measured_rates():
    runs = {r.name: r for r in ablation_runs([0])}
    assert set(runs) == {"decoupled-seed0", "logsynflow-seed0", "combined-seed0",
                         "decoupled-abs-seed0"}
    ls, es = RATE_PER_MINUTE["logsynflow"], RATE_PER_MINUTE["entropic"]
    for name, run in runs.items():
        cfg = _config_of(run)
        assert (cfg.target, cfg.extended, cfg.max_params, cfg.mode) == ("s1", True, 6.0, run.mode)
        assert cfg.es_proxy == run.reading and cfg.total_minutes is None  # counts, not minutes
        b = cfg.budgets()
        if run.mode == "logsynflow":  # 45 minutes of LogSynflow, 3 per multi-start
            assert b.total_candidates / ls == pytest.approx(45, abs=0.01)
            assert b.multistart_candidates / ls == pytest.approx(3, abs=0.01)
        elif run.mode == "combined":  # both proxies per candidate
            assert b.total_candidates * (1 / ls + 1 / es) == pytest.approx(45, abs=0.02)
        else:  # ES multi-starts; a topology + a size phase take 10 minutes; 45 in all
            assert b.multistart_candidates / es == pytest.approx(3, abs=0.01)
            assert b.phase_candidates * (1 / ls + 1 / es) == pytest.approx(10, abs=0.01)
            minutes = 5 * b.multistart_candidates / es + 3 * b.phase_candidates * (1 / ls + 1 / es)
            assert minutes == pytest.approx(45, abs=0.05)
    assert runs["decoupled-abs-seed0"].reading == "entropic_abs"


def test_block_types_name_every_layer_of_a_network():
    space = SearchSpace("s0", extended=True)
    arch = space.random(random.Random(1))
    model = build_model(arch, img_size=64, layer_scale_init=None)
    kinds = {block_type_of(arch, name) for name, _ in model.named_parameters()}
    assert "other" in kinds  # the final norm and the head belong to no block
    assert kinds - {"other"} <= {"stem", "downsample", "attention", "ibn", "convnext", "bottleneck"}
    attention = [f"stages.{s}.blocks.{b}.x" for s, b, _ in arch.blocks() if space.is_attention(s, b)]
    assert attention and all(block_type_of(arch, n) == "attention" for n in attention)
    s, b, genes = next((s, b, g) for s, b, g in arch.blocks() if not space.is_attention(s, b))
    assert block_type_of(arch, f"stages.{s}.blocks.{b}.ffn.expand.act") == genes.ffn_type


def test_report_rescores_the_final_networks_as_the_search_scored_them(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    cfg = SearchConfig(target="s0", extended=True, resolution=64, starts=1, start_population=3,
                       start_tournament=2, population=3, tournament=2, phase_candidates=3,
                       total_candidates=9, seed=0, max_params=6.0)
    run = next(r for r in ablation_runs([0]) if r.name == "decoupled-seed0")
    run_search(cfg, tmp_path / "interrupted", progress=False, stop_after=4)
    assert not is_finished(tmp_path / "interrupted")
    run_search(cfg, tmp_path / run.name, progress=False)
    assert is_finished(tmp_path / run.name)

    text = report(tmp_path, ablation_runs([0]))
    assert text.startswith("# Table 5 at full length: 1 of 4 searches finished")
    rows = pd.read_csv(tmp_path / "runs.csv")
    best = json.loads((tmp_path / run.name / "best.json").read_text())
    # the rescored ES of the guiding reading is the score the search logged for that network
    assert rows.loc[0, "entropic"] == pytest.approx(best["scores"]["entropic"], rel=1e-9)
    assert math.isfinite(rows.loc[0, "entropic_abs"])
    arch = Architecture.from_dict(best["arch"])
    assert rows.loc[0, "blocks"] == sum(1 for _ in arch.blocks())
    assert rows.loc[0, "bottlenecks"] == sum(g.ffn_type == "bottleneck" for _, _, g in arch.blocks())
    # per block type, the entropies add up to the score, and the activation layers to explain's
    types = pd.read_csv(tmp_path / "block_types.csv")
    for reading in ("entropic", "entropic_abs"):
        part = types[types["reading"] == reading]
        assert part["sum"].sum() == pytest.approx(rows.loc[0, reading], rel=1e-9)
    model = build_model(arch, img_size=64, layer_scale_init=None)
    assert types[types["reading"] == "entropic"]["count"].sum() == \
        len(explain(model, "entropic", input_shape=(3, 64, 64)))
    assert "| decoupled | `entropic` | 0 |" in (tmp_path / "table5.md").read_text()
    # the controlled swaps: every FFN position of EfficientFormerV2-S0 in each of the three
    # types; the IBN rows are all the unchanged reference network, hence one score
    swaps = pd.read_csv(tmp_path / "block_swaps.csv")
    positions = sum(not arch.space.is_attention(s, b) for s, b, _ in arch.blocks())
    assert len(swaps) == 3 * positions
    assert sorted(swaps["ffn_type"].unique()) == ["bottleneck", "convnext", "ibn"]
    ibn = swaps[swaps["ffn_type"] == "ibn"]
    assert ibn["entropic"].nunique() == 1 and ibn["params"].nunique() == 1
    assert "One block changed" in text

    # nothing finished: a clear error, exit status 2
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished search" in capsys.readouterr().err
