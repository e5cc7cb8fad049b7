"""NAS-Bench-101: the tfrecord reader, the graph hash, the table cache and the networks.

Ground truth comes from outside our code: RFC 3720 / published CRC-32C vectors, the compact CSV
built from the official data (hashes, parameter counts, accuracies), nasbench's own
``graph_util.hash_module`` as shipped in nasbench_pytorch, and a TFRecord file that this test
writes itself with its own protobuf encoder.
"""
from __future__ import annotations

import base64
import gzip
import itertools
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from zcproxy.nasbench import nb101 as nb101_module
from zcproxy.nasbench import tfrecord
from zcproxy.nasbench.base import BenchmarkDataMissing
from zcproxy.nasbench.nb101 import (CANONICAL_OPS, NB101, build_network, count_params, format_arch,
                                    nb101_hash, parse_arch)
from zcproxy.nasbench.tfrecord import (TFRecordError, crc32c, crc32c_many, iter_nb101, iter_records,
                                       masked_crc32c, read_nb101_table, write_records)
from zcproxy.paths import find_in_data_dir


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def csv_path() -> Path:
    path, tried = find_in_data_dir(nb101_module.CSV_RELATIVE)
    assert path is not None, f"the NAS-Bench-101 CSV is part of the shared data; tried {tried}"
    return path


@pytest.fixture(scope="module")
def csv(csv_path) -> pd.DataFrame:
    return pd.read_csv(csv_path)


def _matrix(adjacency_rows: str) -> np.ndarray:
    return np.array([[int(c) for c in row] for row in adjacency_rows.split(";")])


def _cells_of_every_size(csv: pd.DataFrame, per_size: int, seed: int = 0) -> list[int]:
    """Row indices covering every vertex count, with and without an input→output edge."""
    rng = np.random.default_rng(seed)
    picks = []
    direct = csv["adjacency_rows"].str.split(";").str[0].str[-1] == "1"
    for nv in sorted(csv["num_vertices"].unique()):
        for has_direct in (False, True):
            rows = np.flatnonzero((csv["num_vertices"] == nv) & (direct == has_direct))
            picks += rng.choice(rows, size=min(per_size, len(rows)), replace=False).tolist()
    return picks


# --------------------------------------------------------------------------------------------
# a tiny protobuf + TFRecord writer, independent of the reader under test
# --------------------------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _double(number: int, x: float) -> bytes:
    return _key(number, 1) + struct.pack("<d", x)


def _message(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def _evaluation(epoch: float, time_s: float, train: float, valid: float, test: float,
                checkpoint: str = "", unknown_field: bool = False) -> bytes:
    out = (_double(1, epoch) + _double(2, time_s) + _double(3, train) + _double(4, valid)
           + _double(5, test))
    if checkpoint:
        out += _message(6, checkpoint.encode())
    if unknown_field:  # a field from a newer schema: a fixed32 numbered 15
        out += _key(15, 5) + struct.pack("<I", 7)
    return out


def _model_metrics(evaluations: list[bytes], params: int, total_time: float) -> bytes:
    return (b"".join(_message(1, e) for e in evaluations) + _key(2, 0) + _varint(params)
            + _double(3, total_time))


def _frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


def _nb101_record(row: pd.Series, epochs: int, final_test: float, final_valid: float,
                  unknown_field: bool = False) -> bytes:
    matrix = _matrix(row["adjacency_rows"])
    ops = row["ops"].split("|")
    evals = [_evaluation(0.0, 0.0, 0.1, 0.1, 0.1),
             _evaluation(epochs / 2, 900.0, 0.5, 0.51, 0.52),  # halfway: must not be used
             _evaluation(float(epochs), 1800.0, 1.0, final_valid, final_test,
                         checkpoint=f"/ckpt/{row['hash']}/model.ckpt-{epochs}", unknown_field=unknown_field)]
    metrics = _model_metrics(evals, int(row["params"]), 2000.0)
    item = [row["hash"], epochs, "".join(str(x) for x in matrix.flatten()), ",".join(ops),
            base64.b64encode(metrics).decode()]
    return json.dumps(item).encode()


@pytest.fixture(scope="module")
def official_fixture(csv, tmp_path_factory):
    """A genuine-format tfrecord: 3 runs at 108 epochs of real cells (+ a 36-epoch run to skip)."""
    rows = csv.iloc[_cells_of_every_size(csv, per_size=1, seed=3)[:5]]
    offsets = (-0.004, 0.001, 0.003)  # mean 0: the mean test accuracy is the CSV's
    records, expected = [], {}
    for _, row in rows.iterrows():
        test = row["test_acc_mean_108ep"] / 100
        valid = test - 0.01
        for k, d in enumerate(offsets):
            records.append(_nb101_record(row, 108, test + d, valid + 2 * d, unknown_field=(k == 1)))
        records.append(_nb101_record(row, 36, 0.3, 0.3))
        expected[row["hash"]] = row
    order = np.random.default_rng(0).permutation(len(records))
    records = [records[i] for i in order]
    path = tmp_path_factory.mktemp("official") / "nasbench_only108.tfrecord"
    path.write_bytes(b"".join(_frame(r) for r in records))
    return path, records, expected


# --------------------------------------------------------------------------------------------
# CRC-32C and framing
# --------------------------------------------------------------------------------------------
def test_crc32c_matches_published_vectors():
    # RFC 3720 B.4 and the common check value / pangram vectors.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert crc32c(b"The quick brown fox jumps over the lazy dog") == 0x22620404
    # A masked value published with a TFRecord implementation's tests.
    assert masked_crc32c(b"1234567890asdfghjkl") == 4134599430


def test_crc32c_many_equals_one_at_a_time():
    rng = np.random.default_rng(0)
    buf = rng.integers(0, 256, size=5000, dtype=np.uint8)
    lengths = rng.integers(0, 300, size=40)
    starts = rng.integers(0, 5000 - 300, size=40)
    got = crc32c_many(buf, starts, lengths)
    raw = buf.tobytes()
    assert [int(c) for c in got] == [crc32c(raw[s:s + n]) for s, n in zip(starts, lengths)]


def test_write_records_uses_tfrecord_framing(tmp_path):
    records = [b"", b"a", b"hello world" * 50]
    write_records(tmp_path / "x.tfrecord", records)
    assert (tmp_path / "x.tfrecord").read_bytes() == b"".join(_frame(r) for r in records)
    assert list(iter_records(tmp_path / "x.tfrecord")) == records


def test_records_read_back_across_block_boundaries(official_fixture, monkeypatch):
    path, records, _ = official_fixture
    assert list(iter_records(path)) == records
    monkeypatch.setattr(tfrecord, "_BLOCK_BYTES", 97)  # records straddle many reads
    assert list(iter_records(path)) == records


def _record_offsets(records: list[bytes]) -> list[int]:
    return np.concatenate([[0], np.cumsum([len(r) + 16 for r in records])]).tolist()


def test_corrupt_data_byte_names_file_and_offset(official_fixture, tmp_path):
    path, records, _ = official_fixture
    raw = bytearray(path.read_bytes())
    starts = _record_offsets(records)
    raw[starts[2] + 12 + 5] ^= 0x01  # one bit inside the data of the third record
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError) as err:
        list(iter_records(bad))
    assert str(bad) in str(err.value) and f"byte offset {starts[2]}" in str(err.value)
    assert "data CRC" in str(err.value)


def test_corrupt_length_and_truncation_are_reported(official_fixture, tmp_path):
    path, records, _ = official_fixture
    raw = path.read_bytes()
    starts = _record_offsets(records)
    bad = bytearray(raw)
    bad[starts[1]] ^= 0x40  # the length of the second record
    (tmp_path / "len.tfrecord").write_bytes(bytes(bad))
    with pytest.raises(TFRecordError, match=f"len.tfrecord.*byte offset {starts[1]}.*length CRC"):
        list(iter_records(tmp_path / "len.tfrecord"))

    (tmp_path / "cut.tfrecord").write_bytes(raw[:-10])
    with pytest.raises(TFRecordError, match=f"cut.tfrecord: truncated record at byte offset {starts[-2]}"):
        list(iter_records(tmp_path / "cut.tfrecord"))
    (tmp_path / "cut2.tfrecord").write_bytes(raw[:starts[3] + 5])
    with pytest.raises(TFRecordError, match=f"truncated record header at byte offset {starts[3]}"):
        list(iter_records(tmp_path / "cut2.tfrecord"))


# --------------------------------------------------------------------------------------------
# NAS-Bench-101 records and table
# --------------------------------------------------------------------------------------------
def test_records_decode_to_the_values_written(official_fixture):
    path, records, expected = official_fixture
    decoded = list(iter_nb101(path))
    assert len(decoded) == len(records)
    for rec in decoded:
        row = expected[rec.module_hash]
        assert rec.ops == row["ops"].split("|")
        assert np.array_equal(rec.adjacency, _matrix(row["adjacency_rows"]))
        assert rec.metrics.trainable_parameters == row["params"]
        assert rec.metrics.total_time == 2000.0
        assert [e.current_epoch for e in rec.metrics.evaluation_data] == [0.0, rec.epochs / 2, rec.epochs]
        assert rec.metrics.evaluation_data[-1].checkpoint_path.endswith(f"model.ckpt-{rec.epochs}")


def test_table_from_tfrecord_averages_the_final_108_epoch_runs(official_fixture, csv):
    path, _, expected = official_fixture
    table = read_nb101_table(path)
    assert table["hash"].tolist() == sorted(expected)
    for _, t in table.iterrows():
        row = expected[t["hash"]]
        assert t["adjacency_rows"] == row["adjacency_rows"] and t["ops"] == row["ops"]
        assert t["num_vertices"] == row["num_vertices"]
        assert t["params"] == row["params"] and t["repeats"] == 3
        assert t["test_acc_mean_108ep"] == pytest.approx(row["test_acc_mean_108ep"], abs=1e-9)
        assert t["valid_acc_mean_108ep"] == pytest.approx(row["test_acc_mean_108ep"] - 1, abs=1e-9)
    assert read_nb101_table(path, epochs=36)["test_acc_mean_36ep"].tolist() == [30.0] * len(expected)


def test_protobuf_fields_in_any_order_and_missing_fields_decode():
    forward = _evaluation(108.0, 1.5, 0.25, 0.5, 0.75)
    fields = [forward[i:i + 9] for i in range(0, 45, 9)]
    backward = b"".join(reversed(fields)) + _message(6, b"ckpt")
    metrics = _model_metrics([backward, fields[4]], 123456, 9.0)
    decoded = tfrecord.decode_model_metrics(_double(3, 9.0) + metrics)
    first, second = decoded.evaluation_data
    assert (first.current_epoch, first.training_time, first.train_accuracy,
            first.validation_accuracy, first.test_accuracy, first.checkpoint_path) == (
        108.0, 1.5, 0.25, 0.5, 0.75, "ckpt")
    assert (second.test_accuracy, second.current_epoch, second.checkpoint_path) == (0.75, 0.0, "")
    assert decoded.trainable_parameters == 123456 and decoded.total_time == 9.0
    with pytest.raises(tfrecord.ProtobufError):
        tfrecord.decode_model_metrics(metrics[:-3])


def test_bad_record_content_is_reported(tmp_path):
    path = tmp_path / "junk.tfrecord"
    first = _frame(b'["abc", 108, "0100", "input,output", ""]')  # valid: no metrics at all
    path.write_bytes(first + _frame(b'["abc", 108, "0100", "input,output", "!!notbase64"]'))
    with pytest.raises(TFRecordError, match=f"junk.tfrecord: bad record at byte offset {len(first)}: "
                                            "record abc: bad ModelMetrics"):
        list(iter_nb101(path))
    path.write_bytes(first + _frame(b'{"not": "a list"}'))
    with pytest.raises(TFRecordError, match=f"byte offset {len(first)}: not a NAS-Bench-101 record"):
        list(iter_nb101(path))
    path.write_bytes(first)
    with pytest.raises(TFRecordError, match="cell abc has a run with no evaluation data"):
        read_nb101_table(path)


# --------------------------------------------------------------------------------------------
# the graph hash
# --------------------------------------------------------------------------------------------
def test_hash_reproduces_the_benchmark_hashes(csv):
    from nasbench_pytorch.model.graph_util import hash_module  # nasbench's own algorithm

    rows = csv.sample(50, random_state=1)
    for _, row in rows.iterrows():
        matrix, ops = _matrix(row["adjacency_rows"]), row["ops"].split("|")
        ours = nb101_hash(matrix, ops)
        assert ours == row["hash"]
        labels = [-1] + [CANONICAL_OPS.index(op) for op in ops[1:-1]] + [-2]
        assert hash_module(matrix, labels) == ours


def test_isomorphic_and_unpruned_specs_hash_equal(csv):
    row = csv[(csv["num_vertices"] == 7)].iloc[12]
    matrix, ops = _matrix(row["adjacency_rows"]), row["ops"].split("|")
    same_order, other_order = 0, 0
    for perm in itertools.permutations(range(1, 6)):
        p = [0, *perm, 6]
        pm = matrix[np.ix_(p, p)]
        pops = [ops[i] for i in p]
        assert nb101_hash(pm, pops) == row["hash"]
        if not np.tril(pm).any() and not np.array_equal(pm, matrix):
            other_order += 1
        same_order += 1
    assert same_order == 120 and other_order > 0  # some relabelings stay valid NB101 specs

    changed = list(ops)
    changed[3] = next(op for op in CANONICAL_OPS if op != ops[3])
    assert nb101_hash(matrix, changed) != row["hash"]

    # A vertex that does not reach the output is pruned away before hashing.
    small = csv[csv["num_vertices"] == 5].iloc[0]
    m5, ops5 = _matrix(small["adjacency_rows"]), small["ops"].split("|")
    m6 = np.zeros((6, 6), dtype=int)
    m6[:4, :4], m6[:4, 5] = m5[:4, :4], m5[:4, 4]
    m6[0, 4] = 1  # dangling
    ops6 = ops5[:4] + [CANONICAL_OPS[0], "output"]
    assert nb101_hash(m6, ops6) == small["hash"]


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError, match="does not reach the output"):
        nb101_hash(np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]]), ["input", CANONICAL_OPS[0], "output"])
    with pytest.raises(ValueError, match="unknown NAS-Bench-101 op"):
        nb101_hash(np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]]), ["input", "conv5x5", "output"])
    with pytest.raises(ValueError, match="not a NAS-Bench-101 arch string"):
        parse_arch("011;001|input|output")


# --------------------------------------------------------------------------------------------
# the benchmark adapter
# --------------------------------------------------------------------------------------------
def _write_csv_subset(csv: pd.DataFrame, folder: Path, n: int = 300) -> Path:
    sub = csv.sample(n, random_state=0).sort_values("hash").reset_index(drop=True)
    sub["index"] = np.arange(n)
    path = folder / nb101_module.CSV_RELATIVE
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt") as f:
        sub.to_csv(f, index=False, float_format="%.8f")
    return path


def _forbid_parsing(monkeypatch):
    def fail(path):
        raise AssertionError(f"parsed {path} again instead of using the cache")
    monkeypatch.setattr(nb101_module, "table_from_csv", fail)
    monkeypatch.setattr(nb101_module, "table_from_tfrecord", fail)


def test_csv_table_is_cached_next_to_a_writable_source(csv, tmp_path, monkeypatch):
    path = _write_csv_subset(csv, tmp_path)
    monkeypatch.setenv(nb101_module.CACHE_ENV_VAR, str(tmp_path / "user-cache"))
    bench = NB101(data_dir=tmp_path)
    table = bench.table()
    assert bench.source == path and bench.cache_file.parent == path.parent
    sub = pd.read_csv(path)
    assert len(bench) == 300 and table.index.tolist() == list(range(300))
    assert (table["arch"] == sub["adjacency_rows"] + "|" + sub["ops"]).all()
    assert np.allclose(table["accuracy"], sub["test_acc_mean_108ep"])
    assert np.array_equal(np.round(table["params"] * 1e6), sub["params"])
    assert table["validation_accuracy"].isna().all()

    _forbid_parsing(monkeypatch)
    again = NB101(data_dir=tmp_path)
    pd.testing.assert_frame_equal(again.table(), table)
    assert again.cache_file == bench.cache_file

    # A changed source invalidates the cache.
    monkeypatch.undo()
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    calls = []
    original = nb101_module.table_from_csv
    monkeypatch.setattr(nb101_module, "table_from_csv", lambda p: calls.append(p) or original(p))
    NB101(data_dir=tmp_path).table()
    assert calls == [path]


def test_read_only_source_is_cached_in_the_user_cache_dir(csv, tmp_path, monkeypatch):
    path = _write_csv_subset(csv, tmp_path, n=50)
    user = tmp_path / "user-cache"
    monkeypatch.setenv(nb101_module.CACHE_ENV_VAR, str(user))
    path.parent.chmod(0o555)  # read-only on purpose (root could still write: must not)
    try:
        bench = NB101(data_dir=tmp_path)
        assert len(bench) == 50
        assert bench.cache_file.parent == user
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
        _forbid_parsing(monkeypatch)
        assert NB101(data_dir=tmp_path).table()["hash"].tolist() == bench.table()["hash"].tolist()
    finally:
        path.parent.chmod(0o755)


def test_official_file_feeds_the_adapter(official_fixture, tmp_path, monkeypatch):
    path, _, expected = official_fixture
    monkeypatch.setenv(nb101_module.CACHE_ENV_VAR, str(tmp_path / "user-cache"))
    bench = NB101(official_path=path, data_dir=tmp_path / "nothing-here")
    table = bench.table()
    assert bench.source == path and bench.cache_file.parent == path.parent
    assert table["hash"].tolist() == sorted(expected)
    for i, h in enumerate(table["hash"]):
        row = expected[h]
        assert bench.arch(i) == row["adjacency_rows"] + "|" + row["ops"]
        assert bench.accuracy(i) == pytest.approx(row["test_acc_mean_108ep"], abs=1e-9)
        assert bench.params(i) == pytest.approx(row["params"] / 1e6)
        assert bench.index_of(bench.arch(i)) == i
    assert table["validation_accuracy"].notna().all()
    _forbid_parsing(monkeypatch)
    assert len(NB101(official_path=path).table()) == len(expected)


def test_official_file_in_the_data_dir_is_preferred(official_fixture, csv, tmp_path, monkeypatch):
    path, _, expected = official_fixture
    _write_csv_subset(csv, tmp_path, n=20)
    (tmp_path / "nasbench101" / path.name).write_bytes(path.read_bytes())
    monkeypatch.setenv(nb101_module.CACHE_ENV_VAR, str(tmp_path / "user-cache"))
    bench = NB101(data_dir=tmp_path)
    assert bench.table()["hash"].tolist() == sorted(expected)
    assert bench.source.name == "nasbench_only108.tfrecord"


def test_missing_data_lists_every_path_and_the_download(tmp_path):
    with pytest.raises(BenchmarkDataMissing) as err:
        NB101(data_dir=tmp_path).table()
    message = str(err.value)
    for relative in (*nb101_module.TFRECORD_RELATIVES, nb101_module.CSV_RELATIVE):
        assert str(tmp_path / relative) in message
    assert len(err.value.tried) == 3
    assert nb101_module.OFFICIAL_URL in message and "adjacency_rows" in message
    with pytest.raises(BenchmarkDataMissing, match="nope.tfrecord"):
        NB101(official_path=tmp_path / "nope.tfrecord").table()


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The real 423,624-cell table; the cache goes to a temporary user cache dir."""
    cache = tmp_path_factory.mktemp("user-cache")
    old = os.environ.get(nb101_module.CACHE_ENV_VAR)
    os.environ[nb101_module.CACHE_ENV_VAR] = str(cache)
    try:
        bench = NB101()
        bench.table()
        yield bench, cache
    finally:
        if old is None:
            del os.environ[nb101_module.CACHE_ENV_VAR]
        else:
            os.environ[nb101_module.CACHE_ENV_VAR] = old


def test_full_table_loads_from_cache_without_parsing(full, csv, monkeypatch):
    bench, cache = full
    table = bench.table()
    assert len(table) == 423_624 == len(csv)
    assert {"arch", "accuracy", "params"} <= set(table.columns)
    if not nb101_module._dir_writable(bench.source.parent):
        assert bench.cache_file.parent == cache  # the shared data folder is read-only
    assert (table["hash"] == csv["hash"]).all()
    assert np.allclose(table["accuracy"], csv["test_acc_mean_108ep"])
    _forbid_parsing(monkeypatch)
    again = NB101(cache_dir=bench.cache_file.parent)  # parsing is forbidden: the cache serves
    assert len(again.table()) == 423_624


def test_spec_and_index_of(full, csv):
    bench, _ = full
    for i in (0, 1234, 423_623):
        matrix, ops = bench.spec(i)
        assert np.array_equal(matrix, _matrix(csv["adjacency_rows"].iat[i]))
        assert ops == csv["ops"].iat[i].split("|")
        assert bench.index_of(format_arch(matrix, ops)) == i
        assert bench.index_of_spec(matrix, ops) == i
    # another spelling of a cell: its vertices relabelled in another valid order
    row = 1234
    matrix, ops = bench.spec(row)
    for perm in itertools.permutations(range(1, len(ops) - 1)):
        p = [0, *perm, len(ops) - 1]
        pm = matrix[np.ix_(p, p)]
        if not np.tril(pm).any() and not np.array_equal(pm, matrix):
            arch = format_arch(pm, [ops[k] for k in p])
            assert arch != bench.arch(row) and bench.index_of(arch) == row
            break
    else:
        pytest.fail("cell 1234 has no second topological order; pick another")
    with pytest.raises(ValueError, match="is not a cell of nb101"):
        bench.index_of(format_arch(np.triu(np.ones((7, 7), dtype=int), 1), ["input", *[CANONICAL_OPS[0]] * 5, "output"]))
    with pytest.raises(ValueError, match="not a NAS-Bench-101 arch string"):
        bench.index_of("garbage")
    with pytest.raises(ValueError, match="imagenet"):
        bench.table("imagenet")


def test_networks_have_the_benchmark_parameter_counts(full, csv):
    bench, _ = full
    picks = _cells_of_every_size(csv, per_size=1, seed=5)
    assert len(picks) >= 10 and len(set(csv["num_vertices"].iloc[picks])) == 6
    for i in picks:
        net = bench.build(i)
        expected = int(csv["params"].iat[i])
        assert count_params(net) == expected, csv["adjacency_rows"].iat[i]
        assert sum(p.numel() for p in net.parameters()) == expected  # nothing unused is left


def test_count_params_skips_nasbench_pytorch_placeholders(csv):
    from nasbench_pytorch.model import Network

    row = csv[csv["num_vertices"] == 5].iloc[3]
    raw = Network((_matrix(row["adjacency_rows"]), row["ops"].split("|")))
    assert sum(p.numel() for p in raw.parameters()) > row["params"]  # the dummy scalars
    assert count_params(raw) == row["params"]


def _relu_count(matrix: np.ndarray, ops: list[str]) -> int:
    """conv-bn-relu ops plus 1x1 input projections per cell, 9 cells, plus the stem's."""
    convs = sum(op.startswith("conv") for op in ops)
    projections = int(matrix[0, 1:].sum())
    return 1 + 9 * (convs + projections)


def test_network_forward_hooks_and_gradients(csv):
    row = csv[(csv["num_vertices"] == 6) & (csv["params"] < 3_000_000)].iloc[0]
    matrix, ops = _matrix(row["adjacency_rows"]), row["ops"].split("|")
    torch.manual_seed(0)
    net = build_network(matrix, ops, stem_channels=16, device="cpu")  # narrow: same wiring, faster
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == _relu_count(matrix, ops)
    seen = []
    for m in relus:
        m.register_forward_hook(lambda mod, inp, out: seen.append(mod))
    out = net(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    assert len(seen) == len(relus) and {id(m) for m in seen} == {id(m) for m in relus}
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert all(m.momentum == pytest.approx(0.003) for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert next(net.parameters()).device.type == "cpu"
