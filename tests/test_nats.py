"""NATS-Bench: networks, arch strings, tables and official records.

Ground truth comes from outside our code: the genuine official NATS-Bench record files (read
with the ``nats_bench`` package directly, not through our adapter), the size-space CSV's
parameter and FLOP columns, and the official meta files' arch lists.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import nats_bench
import torch

from zcproxy.nasbench.base import BenchmarkDataMissing, last_of_tuple
from zcproxy.nasbench.cells import (OP_NAMES, SSS_CELL, count_flops, count_parameters,
                                    dead_operations, parse_sss_channels, parse_tss_arch,
                                    sss_arch, sss_index, sss_network, tss_network)
from zcproxy.nasbench.nats import NatsSss, NatsTss, tss_costs, tss_op_matrix
from zcproxy.paths import find_in_data_dir



NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}
RESOLUTION = {"cifar10": 32, "cifar100": 32, "ImageNet16-120": 16}
FIXTURE_ARCHS = (0, 11, 284)  # the archs whose full official records ship in nats-official/
HP = {"sss": "90", "tss": "200"}


def _require(relative: str) -> Path:
    path, tried = find_in_data_dir(relative)
    if path is None:
        pytest.fail(f"benchmark data {relative} missing; tried {tried}")
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests run many tiny single-image forwards; with two OpenMP threads on a shared
    2-core machine the threads spin-wait on each other and the module runs ~6x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def official_dirs() -> dict[str, Path]:
    return {space: _require(f"nats-official/{space}") for space in ("sss", "tss")}


@pytest.fixture(scope="module")
def official_apis(official_dirs):
    return {space: nats_bench.create(str(path), space, fast_mode=True, verbose=False)
            for space, path in official_dirs.items()}


@pytest.fixture(scope="module")
def sss_csv() -> pd.DataFrame:
    return pd.read_csv(_require("nats-sss/nats_sss_hp90_valid.csv"))


@pytest.fixture(scope="module")
def tss_csv() -> pd.DataFrame:
    return pd.read_csv(_require("nats-tss/nats_tss_hp200_test.csv"))


@pytest.fixture(scope="module")
def tss_bench() -> NatsTss:
    bench = NatsTss()
    bench.table()  # loads all three datasets once for the module
    return bench


# --------------------------------------------------------------------------------------------
# networks against the official records
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["sss", "tss"])
def test_params_and_flops_equal_official_records(space, official_apis):
    api = official_apis[space]
    make = sss_network if space == "sss" else tss_network
    for index in FIXTURE_ARCHS:
        for dataset, classes in NUM_CLASSES.items():
            cost = api.get_cost_info(index, dataset, hp=HP[space])
            net = make(api.arch(index), classes)
            assert count_parameters(net) == round(cost["params"] * 1e6), (space, index, dataset)
            assert count_flops(net, RESOLUTION[dataset]) == round(cost["flops"] * 1e6)


def test_official_configs_match_our_constructors(official_apis):
    """The records say which network was trained; our defaults must be that network."""
    tss = official_apis["tss"].get_net_config(0, "cifar10")
    assert (tss["C"], tss["N"]) == (16, 5)
    sss = official_apis["sss"].get_net_config(11, "cifar100")
    assert sss["genotype"] == SSS_CELL
    assert sss["channels"] == official_apis["sss"].arch(11) and sss["num_classes"] == 100


def test_sss_params_equal_csv_for_random_sample(sss_csv):
    rng = np.random.default_rng(20240601)
    rows = sss_csv.iloc[rng.choice(len(sss_csv), size=30, replace=False)]
    columns = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet16"}
    for k, row in enumerate(rows.itertuples()):
        dataset = list(NUM_CLASSES)[k % 3]
        net = sss_network(row.arch, NUM_CLASSES[dataset])
        params = getattr(row, f"params_M_{columns[dataset]}")
        assert count_parameters(net) == round(params * 1e6), row.arch
        if k % 3 == 0:  # FLOPs need a forward pass; a third of the sample is enough
            flops = getattr(row, f"flops_M_{columns[dataset]}")
            assert count_flops(net, RESOLUTION[dataset]) == round(flops * 1e6), row.arch


def test_tss_table_costs_equal_official_and_built_networks(tss_bench, official_apis):
    api = official_apis["tss"]
    for dataset in NUM_CLASSES:
        table = tss_bench.table(dataset)
        for index in FIXTURE_ARCHS:
            cost = api.get_cost_info(index, dataset, hp="200")
            assert table["params"].iat[index] == pytest.approx(cost["params"], abs=1e-9)
            assert table["flops"].iat[index] == pytest.approx(cost["flops"], abs=1e-9)
    # The table prices cells by summing per-edge costs; check that against whole networks,
    # including cells that mix every op.
    rng = np.random.default_rng(7)
    table = tss_bench.table("cifar100")
    for index in rng.choice(len(table), size=6, replace=False):
        net = tss_network(table["arch"].iat[index], 100)
        assert round(table["params"].iat[index] * 1e6) == count_parameters(net)
        assert round(table["flops"].iat[index] * 1e6) == count_flops(net, 32)


def test_tss_costs_rejects_bad_input():
    with pytest.raises(ValueError, match="row 1"):
        tss_op_matrix([SSS_CELL, "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"])
    with pytest.raises(ValueError, match="imagenet"):
        tss_costs(tss_op_matrix([SSS_CELL]), "imagenet")


# --------------------------------------------------------------------------------------------
# arch strings
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|",           # unknown op
    "|none~0|+|none~0|none~1|",                                      # two nodes
    "|none~0|+|none~0|+|none~0|none~1|none~2|",                      # node 2 has one edge
    "|none~0|+|none~1|none~0|+|none~0|none~1|none~2|",               # inputs out of order
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~3|",               # reads a later node
    "none~0|+|none~0|none~1|+|none~0|none~1|none~2|",                # missing bar
    "|none0|+|none~0|none~1|+|none~0|none~1|none~2|",                # missing ~
    "|none~00|+|none~0|none~1|+|none~0|none~1|none~2|",              # non-canonical index
    "",
])
def test_tss_arch_validation_names_the_string(bad):
    with pytest.raises(ValueError) as error:
        tss_network(bad, 10)
    assert repr(bad) in str(error.value)


@pytest.mark.parametrize("bad", ["8:8:8:8", "8:8:8:8:8:8", "8:8:8:8:12", "8:8:8:8:72", "0:8:8:8:8",
                                 "08:8:8:8:8", "8:8:8:8:", "a:8:8:8:8", "8,8,8,8,8", " 8:8:8:8:8"])
def test_sss_arch_validation_names_the_string(bad):
    with pytest.raises(ValueError) as error:
        sss_network(bad, 10)
    assert repr(bad) in str(error.value)
    with pytest.raises(ValueError):
        NatsSss(data_dir="/nonexistent").index_of(bad)


def test_non_string_arch_is_rejected():
    with pytest.raises(ValueError):
        parse_tss_arch(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        parse_sss_channels(12345)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# forward passes
# --------------------------------------------------------------------------------------------
def test_forward_shapes_and_output_selector():
    every_op = ("|none~0|+|skip_connect~0|avg_pool_3x3~1|"
                "+|nor_conv_1x1~0|nor_conv_3x3~1|avg_pool_3x3~2|")
    assert {op for node in parse_tss_arch(every_op) for op, _ in node} == set(OP_NAMES)
    x = torch.randn(2, 3, 32, 32)
    cases = [(tss_network(every_op, 10), 64, 10), (sss_network("8:16:24:32:64", 100), 64, 100),
             (sss_network("64:8:56:16:8", 120), 8, 120)]
    for net, width, classes in cases:
        out = net(x)
        assert isinstance(out, tuple) and len(out) == 2
        features, logits = out
        assert features.shape == (2, width) and logits.shape == (2, classes)
        assert torch.isfinite(logits).all()
        assert last_of_tuple(out) is logits
        assert NatsSss.output_selector(out) is logits and NatsTss.output_selector(out) is logits
    # ImageNet16-120 images are 16x16: the same networks must take them.
    assert sss_network("8:16:24:32:64", 120)(torch.randn(2, 3, 16, 16))[1].shape == (2, 120)


def test_channels_last_pool_changes_no_bit_of_any_score(monkeypatch):
    """The pool of ``avg_pool_3x3`` runs on a channels-last copy for speed; against the plain
    ``nn.AvgPool2d`` forward, two networks full of pools (and a skip across cells) must give
    the same logits, the same gradient of every parameter, and the same score for proxies that
    read every module's output (MeCo), take second derivatives through the pool (GraSP), read
    activation patterns (SWAP) or input gradients (jacob_cov)."""
    from zcproxy import api
    from zcproxy.nasbench import cells

    pools = ("|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_3x3~1|"
             "+|skip_connect~0|avg_pool_3x3~1|avg_pool_3x3~2|")
    mixed = ("|nor_conv_1x1~0|+|avg_pool_3x3~0|avg_pool_3x3~1|"
             "+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|")
    x, y = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(8)
    proxies = {"meco": {}, "grasp": {}, "swap": {"repeats": 2}, "jacob_cov": {}, "synflow": {}}

    def run() -> list:
        results = []
        for arch in (pools, mixed):
            torch.manual_seed(3)
            net = tss_network(arch, 10).train()
            logits = net(x)[1]
            logits.sum().backward()
            grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
            scores = api.score_many(tss_network(arch, 10), proxies, inputs=x, targets=y,
                                    output=last_of_tuple)
            results.append((logits.detach(), grads, scores))
        return results

    fast = run()
    assert any(isinstance(m, cells.ChannelsLastAvgPool2d) for m in tss_network(pools, 10).modules())
    monkeypatch.setattr(cells.ChannelsLastAvgPool2d, "forward", torch.nn.AvgPool2d.forward)
    plain = run()
    for (l1, g1, s1), (l2, g2, s2) in zip(fast, plain):
        assert torch.equal(l1, l2)
        assert len(g1) == len(g2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
        assert s1 == s2


def test_skip_across_widths_is_a_projection_not_identity():
    """In the size space the cell's skip edge changes width; it must still carry the input."""
    net = sss_network("8:8:8:8:16", 10).eval()
    last_cell = net.cells[-1]
    x = torch.randn(1, 8, 8, 8)
    assert last_cell(x).shape == (1, 16, 8, 8)


def test_build_uses_dataset_classes_and_device(tss_bench):
    sss = NatsSss(data_dir="/nonexistent")  # arch strings follow from the index, no table needed
    net = sss.build(sss_index("8:16:24:32:64"), "ImageNet16-120", device="cpu")
    assert net.classifier.out_features == 120
    assert next(net.parameters()).device.type == "cpu"
    net = tss_bench.build(11, "cifar100", device=torch.device("cpu"))
    assert net.classifier.out_features == 100
    assert count_parameters(net) == round(tss_bench.params(11, "cifar100") * 1e6)
    with pytest.raises(ValueError, match="ImageNet16-120"):
        tss_bench.build(0, "imagenet")


# --------------------------------------------------------------------------------------------
# indices
# --------------------------------------------------------------------------------------------
def test_sss_index_rule_matches_official_meta_and_csv(official_apis, sss_csv):
    meta = official_apis["sss"].meta_archs
    assert len(meta) == 32768
    assert [sss_arch(i) for i in range(len(meta))] == list(meta)
    assert sss_index("8:8:8:8:8") == 0 and sss_index("64:64:64:64:64") == 32767
    assert sss_index("16:8:8:8:8") == 8 ** 4  # first layer most significant
    rng = np.random.default_rng(3)
    for row in sss_csv.iloc[rng.choice(len(sss_csv), size=50, replace=False)].itertuples():
        assert sss_index(row.arch) == row.index
    with pytest.raises(IndexError):
        sss_arch(32768)


def test_index_arch_round_trip(tss_bench, official_apis, tss_csv):
    sss = NatsSss(data_dir="/nonexistent")
    assert len(sss) == 32768
    for index in (0, 1, 8, 284, 32767):
        assert sss.index_of(sss.arch(index)) == index
    assert len(tss_bench) == 15625
    # The tss CSV's arch order is the official meta order (the index is the official index).
    assert list(official_apis["tss"].meta_archs) == tss_csv["arch"].tolist()
    for index in (0, 11, 284, 15624):
        assert tss_bench.index_of(tss_bench.arch(index)) == index
    with pytest.raises(ValueError, match="not an architecture"):
        tss_bench.index_of("|none~0|+|none~0|none~1|+|none~0|none~1|none~3|")
    with pytest.raises(IndexError):
        tss_bench.arch(15625)


# --------------------------------------------------------------------------------------------
# tables and official records
# --------------------------------------------------------------------------------------------
def test_tables_have_the_interface_columns(tss_bench, sss_csv, tss_csv):
    sss = NatsSss()
    assert sss.accuracy_split == "valid" and tss_bench.accuracy_split == "test"
    for bench, csv, column in ((sss, sss_csv, "cifar100_valid_acc_hp90"),
                               (tss_bench, tss_csv, "cifar100_test_acc")):
        table = bench.table("cifar100")
        assert list(table.index) == list(range(len(csv)))
        assert {"arch", "accuracy", "params", "flops"} <= set(table.columns)
        assert not table[["accuracy", "params", "flops"]].isna().any().any()
        np.testing.assert_array_equal(table["accuracy"].to_numpy(), csv[column].to_numpy())
    assert sss.table("cifar10") is sss.table("cifar10")  # cached on the instance


@pytest.mark.parametrize("space", ["sss", "tss"])
def test_official_info_agrees_with_csv(space, official_dirs, sss_csv, tss_csv):
    bench = (NatsSss if space == "sss" else NatsTss)(official_path=official_dirs[space])
    for index in FIXTURE_ARCHS:
        if space == "sss":
            row = sss_csv.iloc[index]
            pairs = [("cifar10-valid", "valid_accuracy", row.cifar10_valid_acc_hp90),
                     ("cifar100", "valid_accuracy", row.cifar100_valid_acc_hp90),
                     ("ImageNet16-120", "valid_accuracy", row.imagenet16_120_valid_acc_hp90)]
        else:
            row = tss_csv.iloc[index]
            pairs = [("cifar10", "test_accuracy", row.cifar10_test_acc),
                     ("cifar100", "test_accuracy", row.cifar100_test_acc),
                     ("ImageNet16-120", "test_accuracy", row.imagenet16_120_test_acc)]
        for dataset, key, expected in pairs:
            info = bench.official_info(index, dataset)
            assert info["arch"] == row.arch and info["hp"] == HP[space]
            assert round(info[key], 6) == pytest.approx(expected, abs=1e-9), (index, dataset)
        if space == "sss":
            info = bench.official_info(index, "cifar100")
            assert info["params"] == pytest.approx(row.params_M_cifar100, abs=1e-9)
            assert info["flops"] == pytest.approx(row.flops_M_cifar100, abs=1e-9)
    # Other schedules are readable too; the short one scores lower than the full one.
    assert bench.official_info(11, "cifar10", hp=12)["test_accuracy"] < \
        bench.official_info(11, "cifar10")["test_accuracy"]
    with pytest.raises(ValueError, match="hp"):
        bench.official_info(11, "cifar10", hp=13)
    with pytest.raises(ValueError, match="cifar10-valid"):
        bench.official_info(11, "imagenet")
    with pytest.raises(BenchmarkDataMissing, match="000012.pickle.pbz2"):
        bench.official_info(12, "cifar10")


def test_official_table_from_partial_folder(official_dirs, sss_csv):
    bench = NatsSss(official_path=official_dirs["sss"])
    with pytest.warns(UserWarning, match="32765 of 32768"):
        table = bench.table("cifar10")
    assert bench.source == official_dirs["sss"]
    assert len(table) == 32768 and table["accuracy"].notna().sum() == 3
    for index in FIXTURE_ARCHS:
        row = sss_csv.iloc[index]
        assert table["arch"].iat[index] == row.arch
        assert round(table["accuracy"].iat[index], 6) == pytest.approx(row.cifar10_valid_acc_hp90)
        assert table["params"].iat[index] == pytest.approx(row.params_M_cifar10, abs=1e-9)


def test_official_files_found_under_torch_home(tmp_path, monkeypatch, official_dirs, tss_csv):
    home = tmp_path / "torch-home"
    home.mkdir()
    (home / "NATS-tss-v1_0-3ffb9-simple").symlink_to(official_dirs["tss"], target_is_directory=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    empty = tmp_path / "data"
    empty.mkdir()
    bench = NatsTss(data_dir=empty)  # no CSV here, so the official folder is the source
    assert bench.official_info(0, "cifar10")["test_accuracy"] == pytest.approx(
        tss_csv["cifar10_test_acc"].iat[0], abs=1e-6)
    with pytest.warns(UserWarning):
        assert bench.arch(284) == tss_csv["arch"].iat[284]
    assert bench.source == home / "NATS-tss-v1_0-3ffb9-simple"


@pytest.mark.parametrize("cls, archive", [(NatsSss, "NATS-sss-v1_0-50262-simple"),
                                          (NatsTss, "NATS-tss-v1_0-3ffb9-simple")])
def test_missing_data_lists_every_path(cls, archive, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    bench = cls(data_dir=tmp_path)  # constructing reads nothing
    with pytest.raises(BenchmarkDataMissing) as error:
        bench.table("cifar10")
    message = str(error.value)
    expected = [tmp_path / bench.csv_relative, tmp_path / "th" / archive,
                tmp_path / f"nats-{bench.space}" / archive]
    for path in expected:
        assert path in error.value.tried and str(path) in message
    assert "https://github.com/D-X-Y/NATS-Bench" in message and f"{archive}.tar" in message
    assert "TORCH_HOME" in message and "index, arch" in message
    with pytest.raises(BenchmarkDataMissing):
        bench.official_info(0)
    bad = cls(official_path=tmp_path / "nowhere")
    with pytest.raises(BenchmarkDataMissing, match="nowhere"):
        bad.table()


def test_malformed_csv_is_rejected_with_its_path(tmp_path):
    folder = tmp_path / "nats-sss"
    folder.mkdir()
    path = folder / "nats_sss_hp90_valid.csv"
    path.write_text("index,arch,cifar10_valid_acc_hp90\n0,8:8:8:8:8,76.9\n")
    with pytest.raises(ValueError, match=str(path)):
        NatsSss(data_dir=tmp_path).table()


@pytest.mark.parametrize("arch, dead", [
    (SSS_CELL, []),
    # node 1's conv feeds nothing (both of node 1's outputs are none): dead
    ("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_1x1~2|",
     [(1, 0, "nor_conv_3x3")]),
    # node 2 reads nothing live, so its pool to the output is dead, and so is node 1's conv
    ("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|avg_pool_3x3~2|",
     [(1, 0, "nor_conv_3x3"), (3, 2, "avg_pool_3x3")]),
    # a path of skips keeps every edge on it alive; the empty cell has no operation at all
    ("|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|", []),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", []),
])
def test_dead_operations_by_hand(arch, dead):
    assert dead_operations(arch) == dead


def test_no_dead_ops_population_is_the_9445_cells_vkdnw_ranks(tss_bench):
    """VKDNW's analysis notebook (ondratybl/VKDNW ``NB201/tss_analyze.ipynb``) prints "No. of
    archs ... after filtering: 9445" for the cells it ranks in its Table 1; the same count from
    our rule over the whole space, through the adapter's population interface."""
    mask = tss_bench.population_mask("no-dead-ops", range(len(tss_bench)))
    assert mask.sum() == 9445
    assert tss_bench.population_mask("all", [0, 1]).tolist() == [True, True]
    with pytest.raises(ValueError, match="no population 'dead'.*no-dead-ops"):
        tss_bench.population_mask("dead", [0])
