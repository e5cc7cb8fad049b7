"""Read the official NAS-Bench-101 ``.tfrecord`` files without TensorFlow or protobuf.

The official data (``nasbench_only108.tfrecord``, ``nasbench_full.tfrecord``) is a TFRecord
file whose every record is a JSON list ``[module_hash, epochs, adjacency, ops, metrics]``, the
last item a base64 ``nasbench.ModelMetrics`` protocol buffer.  Installing TensorFlow only to read
it is heavy, so this module implements the three small formats involved by hand:

* TFRecord framing: ``uint64 length | uint32 masked_crc32c(length) | data |
  uint32 masked_crc32c(data)``, little-endian.  Every CRC is verified, because a silently
  corrupted download would otherwise turn into wrong accuracies.
* CRC-32C (Castagnoli).  Checking 500 MB byte by byte in Python would take minutes, so the data
  CRCs of many records are computed at once with numpy (one vectorised step per byte position,
  across all records of a block); the 8-byte length CRCs are memoised per distinct length.
* The ``ModelMetrics`` protobuf (proto2, ``nasbench/lib/model_metrics.proto``)::

      message ModelMetrics   { repeated EvaluationData evaluation_data = 1;
                               optional int32 trainable_parameters = 2;
                               optional double total_time = 3; }
      message EvaluationData { optional double current_epoch = 1;  optional double training_time = 2;
                               optional double train_accuracy = 3; optional double validation_accuracy = 4;
                               optional double test_accuracy = 5;  optional string checkpoint_path = 6; }
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd


class TFRecordError(ValueError):
    """A TFRecord file is corrupt or truncated; the message names the file and byte offset."""


# --------------------------------------------------------------------------------------------
# CRC-32C
# --------------------------------------------------------------------------------------------
_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8  # TFRecord's masking constant


def _make_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _make_crc_table()
_CRC_TABLE_NP = np.array(_CRC_TABLE, dtype=np.uint32)


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data``; plain Python, meant for short inputs (use :func:`crc32c_many`)."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC, which avoids CRCs of data that itself contains CRCs."""
    return mask_crc(crc32c(data))


def mask_crc(crc: int | np.ndarray) -> int | np.ndarray:
    if isinstance(crc, np.ndarray):
        crc = crc.astype(np.uint32)
        return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(_MASK_DELTA)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def crc32c_many(buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CRC-32C of many byte ranges ``buffer[starts[i]:starts[i]+lengths[i]]`` at once.

    CRC is sequential within a range but independent across ranges, so one numpy step handles
    byte ``k`` of every range still that long; ranges are sorted longest first so the active
    ones are always a prefix.
    """
    buffer = np.asarray(buffer, dtype=np.uint8)
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(starts)
    out = np.empty(n, dtype=np.uint32)
    if n == 0:
        return out
    order = np.argsort(-lengths, kind="stable")
    pos = starts[order].copy()
    sorted_len = lengths[order]
    # active[k] = how many ranges are longer than k (sorted_len is non-increasing).
    active = np.searchsorted(-sorted_len, -np.arange(int(sorted_len[0])), side="left")
    crc = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
    table = _CRC_TABLE_NP
    for m in active.tolist():
        c = crc[:m]
        idx = (c ^ buffer[pos[:m]]) & np.uint32(0xFF)
        crc[:m] = table[idx] ^ (c >> np.uint32(8))
        pos[:m] += 1
    out[order] = crc ^ np.uint32(0xFFFFFFFF)
    return out


# --------------------------------------------------------------------------------------------
# TFRecord framing
# --------------------------------------------------------------------------------------------
_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the data
_BLOCK_BYTES = 32 << 20


def iter_records(path: str | os.PathLike, verify: bool = True) -> Iterator[bytes]:
    """Yield the data of every record in a TFRecord file, in file order.

    The file is read in blocks of about 32 MB; every record of a block has its CRCs checked
    before any of that block is yielded.  Raises :class:`TFRecordError` naming the file and the
    byte offset of the first bad or truncated record.
    """
    for _, data in iter_records_with_offsets(path, verify):
        yield data


def iter_records_with_offsets(path: str | os.PathLike, verify: bool = True) -> Iterator[tuple[int, bytes]]:
    """Like :func:`iter_records`, with the byte offset at which each record starts."""
    path = Path(path)
    length_crc_cache: dict[bytes, int] = {}
    with open(path, "rb") as f:
        carry = b""
        file_offset = 0  # file offset of carry[0]
        while True:
            chunk = f.read(_BLOCK_BYTES)
            buf = carry + chunk if carry else chunk
            at_eof = not chunk
            spans, consumed = _frame_block(path, buf, file_offset, at_eof, verify, length_crc_cache)
            if verify and spans:
                _verify_data_crcs(path, buf, file_offset, spans)
            for start, length in spans:
                yield file_offset + start - _HEADER, buf[start:start + length]
            carry = buf[consumed:]
            file_offset += consumed
            if at_eof:
                return


def _frame_block(path: Path, buf: bytes, base: int, at_eof: bool, verify: bool,
                 length_crc_cache: dict[bytes, int]) -> tuple[list[tuple[int, int]], int]:
    """(data start, data length) of each complete record in ``buf`` and the bytes they use.

    A partial record at the end is left for the next block, or reported as truncation at EOF.
    """
    spans = []
    off = 0
    size = len(buf)
    unpack = struct.unpack_from
    while off < size:
        if size - off < _HEADER:
            if at_eof:
                raise TFRecordError(f"{path}: truncated record header at byte offset {base + off}: "
                                    f"{size - off} bytes left, a header needs {_HEADER}")
            break
        length_bytes = buf[off:off + 8]
        if verify:
            expected = length_crc_cache.get(length_bytes)
            if expected is None:
                expected = masked_crc32c(length_bytes)
                length_crc_cache[length_bytes] = expected
            (stored,) = unpack("<I", buf, off + 8)
            if stored != expected:
                raise TFRecordError(
                    f"{path}: corrupt record at byte offset {base + off}: length CRC mismatch "
                    f"(stored 0x{stored:08x}, computed 0x{expected:08x})")
        (length,) = unpack("<Q", length_bytes)
        end = off + _HEADER + length + _FOOTER
        if end > size:
            if at_eof:
                raise TFRecordError(
                    f"{path}: truncated record at byte offset {base + off}: header says "
                    f"{length} data bytes but only {max(size - off - _HEADER, 0)} bytes follow it")
            break
        spans.append((off + _HEADER, length))
        off = end
    return spans, off


def _verify_data_crcs(path: Path, buf: bytes, base: int, spans: list[tuple[int, int]]) -> None:
    arr = np.frombuffer(buf, dtype=np.uint8)
    starts = np.fromiter((s for s, _ in spans), dtype=np.int64, count=len(spans))
    lengths = np.fromiter((n for _, n in spans), dtype=np.int64, count=len(spans))
    computed = mask_crc(crc32c_many(arr, starts, lengths))
    footer = starts + lengths
    stored = (arr[footer].astype(np.uint32) | (arr[footer + 1].astype(np.uint32) << 8)
              | (arr[footer + 2].astype(np.uint32) << 16) | (arr[footer + 3].astype(np.uint32) << 24))
    bad = np.flatnonzero(stored != computed)
    if len(bad):
        i = int(bad[0])
        raise TFRecordError(
            f"{path}: corrupt record at byte offset {base + int(starts[i]) - _HEADER}: data CRC "
            f"mismatch (stored 0x{int(stored[i]):08x}, computed 0x{int(computed[i]):08x})")


def write_records(path: str | os.PathLike, records: Sequence[bytes]) -> None:
    """Write records with TFRecord framing (used to make fixtures and converted subsets)."""
    with open(path, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length)
            f.write(struct.pack("<I", masked_crc32c(length)))
            f.write(data)
            f.write(struct.pack("<I", masked_crc32c(data)))


# --------------------------------------------------------------------------------------------
# ModelMetrics protobuf
# --------------------------------------------------------------------------------------------
@dataclass
class EvaluationData:
    current_epoch: float = 0.0
    training_time: float = 0.0
    train_accuracy: float = 0.0
    validation_accuracy: float = 0.0
    test_accuracy: float = 0.0
    checkpoint_path: str = ""


@dataclass
class ModelMetrics:
    evaluation_data: list[EvaluationData] = field(default_factory=list)
    trainable_parameters: int = 0
    total_time: float = 0.0


class ProtobufError(ValueError):
    """A protobuf message could not be decoded."""


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    byte = buf[pos] if pos < len(buf) else 0x80
    if byte < 0x80:  # the common one-byte case
        return byte, pos + 1
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint longer than 10 bytes")


def _iter_fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, raw value) of each field: int for varints, bytes otherwise."""
    pos = 0
    size = len(buf)
    while pos < size:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire} for field {number}")
        if pos > size:
            raise ProtobufError(f"field {number} runs past the end of the message")
        yield number, wire, value


def _double(value: object, wire: int, name: str) -> float:
    if wire != 1:
        raise ProtobufError(f"{name} should be a double (wire type 1), got wire type {wire}")
    return struct.unpack("<d", value)[0]  # type: ignore[arg-type]


_EVAL_DOUBLES = {1: "current_epoch", 2: "training_time", 3: "train_accuracy",
                 4: "validation_accuracy", 5: "test_accuracy"}
# Fields 1..5 written in order, as protobuf serializers do: keys 0x09, 0x11, 0x19, 0x21, 0x29
# (field << 3 | wire type 1), each followed by 8 little-endian bytes.
_FIVE_DOUBLES = struct.Struct("<BdBdBdBdBd")
_FIVE_DOUBLE_KEYS = (0x09, 0x11, 0x19, 0x21, 0x29)


def decode_evaluation_data(buf: bytes) -> EvaluationData:
    rest = buf
    ev = None
    if len(buf) >= _FIVE_DOUBLES.size:
        # Fast path (1.3 M records x 3 evaluations in the official file): one unpack.
        k1, a, k2, b, k3, c, k4, d, k5, e = _FIVE_DOUBLES.unpack_from(buf)
        if (k1, k2, k3, k4, k5) == _FIVE_DOUBLE_KEYS:
            ev = EvaluationData(a, b, c, d, e)
            if len(buf) == _FIVE_DOUBLES.size:
                return ev
            rest = buf[_FIVE_DOUBLES.size:]
    if ev is None:
        ev = EvaluationData()
    for number, wire, value in _iter_fields(rest):
        name = _EVAL_DOUBLES.get(number)
        if name is not None:
            setattr(ev, name, _double(value, wire, name))
        elif number == 6 and wire == 2:
            ev.checkpoint_path = value.decode("utf-8")  # type: ignore[union-attr]
    return ev


def decode_model_metrics(buf: bytes) -> ModelMetrics:
    """Decode a serialized ``nasbench.ModelMetrics``; unknown fields are skipped as protobuf does."""
    metrics = ModelMetrics()
    evaluations = metrics.evaluation_data
    pos, size = 0, len(buf)
    while pos < size:  # inlined rather than _iter_fields: this runs 1.3 M times per file
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire} for field {number}")
        if pos > size:
            raise ProtobufError(f"field {number} runs past the end of the message")
        if number == 1:
            if wire != 2:
                raise ProtobufError(f"evaluation_data should be a message, got wire type {wire}")
            evaluations.append(decode_evaluation_data(value))  # type: ignore[arg-type]
        elif number == 2:
            if wire != 0:
                raise ProtobufError(f"trainable_parameters should be an int32, got wire type {wire}")
            # int32 is sign-extended to 64 bits on the wire.
            metrics.trainable_parameters = value - (1 << 64) if value >= 1 << 63 else value  # type: ignore[operator]
        elif number == 3:
            metrics.total_time = _double(value, wire, "total_time")
    return metrics


# --------------------------------------------------------------------------------------------
# NAS-Bench-101 records
# --------------------------------------------------------------------------------------------
@dataclass
class NB101Record:
    """One training run of one cell, as stored in the official file."""
    module_hash: str
    epochs: int
    adjacency: np.ndarray  # (V, V) int8, upper triangular
    ops: list[str]
    metrics: ModelMetrics


def parse_nb101_record(data: bytes) -> NB101Record:
    """Decode one record's JSON list and its embedded protobuf."""
    try:
        module_hash, epochs, raw_adjacency, raw_ops, raw_metrics = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, TypeError) as e:
        raise ValueError(f"not a NAS-Bench-101 record (expected a 5-item JSON list): {e}") from None
    dim = int(round(len(raw_adjacency) ** 0.5))
    if dim * dim != len(raw_adjacency) or set(raw_adjacency) - {"0", "1"}:
        raise ValueError(f"record {module_hash}: adjacency {raw_adjacency!r} is not a square 0/1 matrix")
    adjacency = (np.frombuffer(raw_adjacency.encode("ascii"), dtype=np.uint8) - ord("0"))
    adjacency = adjacency.astype(np.int8).reshape(dim, dim)
    # The official writer joins the ops with commas; accept a JSON list too.
    ops = raw_ops.split(",") if isinstance(raw_ops, str) else list(raw_ops)
    if len(ops) != dim:
        raise ValueError(f"record {module_hash}: {len(ops)} ops for a {dim}-vertex matrix")
    try:
        metrics = decode_model_metrics(base64.b64decode(raw_metrics, validate=True))
    except (binascii.Error, ProtobufError) as e:
        raise ValueError(f"record {module_hash}: bad ModelMetrics: {e}") from None
    return NB101Record(str(module_hash), int(epochs), adjacency, ops, metrics)


def iter_nb101(path: str | os.PathLike, verify: bool = True) -> Iterator[NB101Record]:
    """Every record of an official NAS-Bench-101 file, decoded."""
    for offset, data in iter_records_with_offsets(path, verify=verify):
        try:
            yield parse_nb101_record(data)
        except ValueError as e:
            raise TFRecordError(f"{path}: bad record at byte offset {offset}: {e}") from None


def adjacency_rows(matrix: np.ndarray) -> str:
    """The compact text form of an adjacency matrix: rows of 0/1 digits joined by ``;``."""
    return ";".join("".join("1" if x else "0" for x in row) for row in np.asarray(matrix))


def read_nb101_table(path: str | os.PathLike, epochs: int = 108, verify: bool = True) -> pd.DataFrame:
    """One row per unique cell trained for ``epochs``, sorted by hash (the CSV's ``index`` order).

    Columns: ``hash``, ``num_vertices``, ``adjacency_rows`` (rows joined by ``;``), ``ops``
    (joined by ``|``), ``test_acc_mean_108ep`` and ``valid_acc_mean_108ep`` (percent, mean over
    the repeats of the accuracy at the last evaluation), ``params`` (trainable parameters) and
    ``repeats``.  Accuracies are percent so that this table and the compact CSV agree.
    """
    cells: dict[str, list] = {}
    for rec in iter_nb101(path, verify=verify):
        if rec.epochs != epochs:
            continue
        if not rec.metrics.evaluation_data:
            raise TFRecordError(f"{path}: cell {rec.module_hash} has a run with no evaluation data")
        final = rec.metrics.evaluation_data[-1]
        entry = cells.get(rec.module_hash)
        if entry is None:
            cells[rec.module_hash] = [rec.adjacency, rec.ops, rec.metrics.trainable_parameters,
                                      [final.test_accuracy], [final.validation_accuracy]]
        else:
            entry[3].append(final.test_accuracy)
            entry[4].append(final.validation_accuracy)
    if not cells:
        raise TFRecordError(f"{path}: no records trained for {epochs} epochs")
    hashes = sorted(cells)
    rows = []
    for h in hashes:
        adjacency, ops, params, test, valid = cells[h]
        rows.append((h, len(ops), adjacency_rows(adjacency), "|".join(ops),
                     100.0 * float(np.mean(test)), 100.0 * float(np.mean(valid)), int(params), len(test)))
    return pd.DataFrame(rows, columns=["hash", "num_vertices", "adjacency_rows", "ops",
                                       f"test_acc_mean_{epochs}ep", f"valid_acc_mean_{epochs}ep",
                                       "params", "repeats"])
