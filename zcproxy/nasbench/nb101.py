"""NAS-Bench-101 (Ying et al., 2019): 423,624 unique cells trained on CIFAR-10 for 108 epochs.

Data sources, first found wins:

1. ``official_path`` if given (an official ``.tfrecord``; nothing else is tried then);
2. ``nasbench101/nasbench_only108.tfrecord`` or ``nasbench_only108.tfrecord`` in the data folder
   (the official file, read by :mod:`zcproxy.nasbench.tfrecord` without TensorFlow);
3. ``nasbench101/nb101_cifar10_108ep.csv.gz`` in the data folder: the compact layout with columns
   ``index,hash,num_vertices,adjacency_rows,ops,test_acc_mean_108ep,params``.

Either way the accuracy is the CIFAR-10 **test** accuracy (percent) at epoch 108, averaged over
the three training runs, and rows are sorted by module hash, so indices agree across sources.
Parsing takes seconds (CSV) to about a minute (tfrecord), so the first load writes a Parquet copy
and later loads read that (see :func:`load_cached_table`).

Architecture strings (the ``arch`` column) spell the pruned cell as stored by the source::

    <row 0>;<row 1>;...;<row V-1>|input|<op 1>|...|output

e.g. ``0110;0001;0001;0000|input|conv3x3-bn-relu|maxpool3x3|output``: the upper-triangular 0/1
adjacency matrix row by row, then the V vertex ops.  Isomorphic cells are one benchmark entry, so
:meth:`NB101.index_of` also accepts any other spelling of a cell (it falls back to the graph hash).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from zcproxy.nasbench.base import Benchmark, BenchmarkDataMissing
from zcproxy.paths import find_in_data_dir

INPUT, OUTPUT = "input", "output"
CONV3X3, CONV1X1, MAXPOOL3X3 = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"
# The order of config['available_ops'] in nasbench: the hash labels ops by their position here.
CANONICAL_OPS = (CONV3X3, CONV1X1, MAXPOOL3X3)

CSV_RELATIVE = "nasbench101/nb101_cifar10_108ep.csv.gz"
TFRECORD_RELATIVES = ("nasbench101/nasbench_only108.tfrecord", "nasbench_only108.tfrecord")
OFFICIAL_URL = "https://storage.googleapis.com/nasbench/nasbench_only108.tfrecord"
CSV_COLUMNS = ("index", "hash", "num_vertices", "adjacency_rows", "ops", "test_acc_mean_108ep", "params")
CACHE_ENV_VAR = "ZCPROXY_CACHE"
# Bump when the cached table's columns or meaning change, so old caches are rebuilt.
CACHE_FORMAT = 1

# TF batch norm "momentum" 0.997 is the decay of the running average; PyTorch's momentum is the
# weight of the new batch, so the equivalent is 1 - 0.997.
TORCH_BN_MOMENTUM = 1.0 - 0.997

HOW_TO_GET = (
    "Get the official NAS-Bench-101 file (about 500 MB) from\n"
    f"  {OFFICIAL_URL}\n"
    "and put it in <data dir>/nasbench101/ (or pass official_path=...), or provide the compact\n"
    f"table <data dir>/{CSV_RELATIVE}: gzipped CSV with columns {','.join(CSV_COLUMNS)}; one row per\n"
    "cell sorted by hash, index 0..N-1; adjacency_rows = the upper-triangular 0/1 matrix with rows\n"
    "joined by ';'; ops = 'input|...|output'; test_acc_mean_108ep = mean test accuracy in percent of\n"
    "the 3 runs at 108 epochs; params = trainable parameters.  Point ZCPROXY_DATA at the data dir."
)


# --------------------------------------------------------------------------------------------
# Cell specs: text form, pruning, isomorphism-invariant hash
# --------------------------------------------------------------------------------------------
def format_arch(matrix: np.ndarray | Sequence[Sequence[int]], ops: Sequence[str]) -> str:
    """The canonical ``arch`` string of a spec (see the module docstring)."""
    rows = ";".join("".join("1" if x else "0" for x in row) for row in np.asarray(matrix))
    return rows + "|" + "|".join(ops)


def parse_arch(arch: str) -> tuple[np.ndarray, list[str]]:
    """(adjacency matrix, ops) of an ``arch`` string; ValueError naming it if malformed."""
    parts = str(arch).split("|")
    rows = parts[0].split(";")
    ops = parts[1:]
    n = len(rows)
    if len(ops) != n or any(len(r) != n or set(r) - {"0", "1"} for r in rows):
        raise ValueError(f"{arch!r} is not a NAS-Bench-101 arch string "
                         "('<rows of 0/1 joined by ;>|input|<ops>|output' with one op per row)")
    matrix = np.array([[int(c) for c in r] for r in rows], dtype=np.int64).reshape(n, n)
    _check_spec(matrix, ops)
    return matrix, ops


def _check_spec(matrix: np.ndarray, ops: Sequence[str]) -> None:
    n = len(ops)
    if matrix.shape != (n, n):
        raise ValueError(f"adjacency of shape {matrix.shape} does not fit {n} ops")
    if not np.isin(matrix, (0, 1)).all() or np.diag(matrix).any():
        raise ValueError(f"adjacency must be 0/1 with an empty diagonal, got {matrix.tolist()}")
    if n < 2 or ops[0] != INPUT or ops[-1] != OUTPUT:
        raise ValueError(f"ops must run from {INPUT!r} to {OUTPUT!r}, got {list(ops)}")
    bad = [op for op in ops[1:-1] if op not in CANONICAL_OPS]
    if bad:
        raise ValueError(f"unknown NAS-Bench-101 op(s) {bad}; known: {list(CANONICAL_OPS)}")


def prune(matrix: np.ndarray | Sequence[Sequence[int]], ops: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Drop vertices not on some input→output path, as nasbench's ModelSpec does before hashing.

    Such vertices never influence the output, so cells that differ only in them are one entry of
    the benchmark.  ValueError if the input does not reach the output at all.
    """
    m = np.asarray(matrix, dtype=np.int64)
    ops = list(ops)
    _check_spec(m, ops)
    n = len(ops)

    def reach(start: int, adj: np.ndarray) -> set[int]:
        seen, stack = {start}, [start]
        while stack:
            for v in np.flatnonzero(adj[stack.pop()]).tolist():
                if v not in seen:
                    seen.add(v)
                    stack.append(v)
        return seen

    keep = sorted(reach(0, m) & reach(n - 1, m.T))
    if 0 not in keep or n - 1 not in keep:
        raise ValueError(f"invalid cell: the input does not reach the output ({format_arch(m, ops)!r})")
    return m[np.ix_(keep, keep)], [ops[i] for i in keep]


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def nb101_hash(matrix: np.ndarray | Sequence[Sequence[int]], ops: Sequence[str]) -> str:
    """The NAS-Bench-101 module hash: equal for isomorphic cells, the key of the official data.

    Weisfeiler-Lehman-style refinement: each vertex starts from md5 of (out-degree, in-degree,
    op label), then, V times, rehashes its sorted in-neighbour hashes, sorted out-neighbour
    hashes and own hash; the fingerprint is md5 of the sorted final hashes.  Labels are -1 for
    the input, -2 for the output, else the op's position in :data:`CANONICAL_OPS`.  The exact
    string forms (Python ``str`` of a tuple / a list) are part of the definition.
    """
    m, ops = prune(matrix, ops)
    n = len(ops)
    labels = [-1] + [CANONICAL_OPS.index(op) for op in ops[1:-1]] + [-2]
    in_deg, out_deg = m.sum(axis=0).tolist(), m.sum(axis=1).tolist()
    preds = [np.flatnonzero(m[:, v]).tolist() for v in range(n)]
    succs = [np.flatnonzero(m[v]).tolist() for v in range(n)]
    hashes = [_md5(str((out_deg[v], in_deg[v], labels[v]))) for v in range(n)]
    for _ in range(n):
        hashes = [_md5("".join(sorted(hashes[w] for w in preds[v])) + "|"
                       + "".join(sorted(hashes[w] for w in succs[v])) + "|" + hashes[v])
                  for v in range(n)]
    return _md5(str(sorted(hashes)))


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------
def count_params(model: nn.Module) -> int:
    """Trainable parameters that take part in the forward pass.

    nasbench_pytorch gives every unused vertex slot a ``Placeholder`` holding a dummy scalar
    parameter; those are not part of the NAS-Bench-101 network and are skipped here (networks from
    :meth:`NB101.build` have none left).  With them skipped the count equals the benchmark's
    ``trainable_parameters`` exactly.
    """
    from nasbench_pytorch.model.model import Placeholder

    dummy = {id(p) for m in model.modules() if isinstance(m, Placeholder)
             for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in dummy)


def _strip_dummy_parameters(model: nn.Module) -> None:
    """Remove parameters that never take part, so every parameter gets a gradient.

    Gradient-based proxies (SNIP, GraSP, synflow, ...) iterate ``model.parameters()``; unused
    Placeholder scalars would have no gradient and count as weights.  ``Cell.dev_param`` (an
    empty tensor used only to find the device) becomes a non-persistent buffer so it still
    follows ``.to(device)``.
    """
    from nasbench_pytorch.model.model import Cell, Placeholder

    for m in model.modules():
        if isinstance(m, Placeholder) and "a" in m._parameters:
            del m.a
        elif isinstance(m, Cell) and "dev_param" in m._parameters:
            del m.dev_param
            m.register_buffer("dev_param", torch.empty(0), persistent=False)


def build_network(matrix: np.ndarray, ops: Sequence[str], num_classes: int = 10,
                  stem_channels: int = 128, num_stacks: int = 3, cells_per_stack: int = 3,
                  tf_like_init: bool = False, device: torch.device | str = "cpu") -> nn.Module:
    """The NAS-Bench-101 network of one cell spec (defaults: the benchmark's own settings).

    Built with ``nasbench_pytorch.model.Network``, whose forward returns the logits tensor and
    whose activations are all ``nn.ReLU`` modules (one per conv-bn-relu, none functional), so
    forward hooks on ``nn.ReLU`` see every activation.  ``tf_like_init`` picks that package's
    TensorFlow-like initialisation instead of its default He-normal one.
    """
    from nasbench_pytorch.model import Network

    matrix = np.asarray(matrix, dtype=np.int64)
    _check_spec(matrix, ops)
    if np.tril(matrix).any():
        raise ValueError(f"NAS-Bench-101 cells need an upper-triangular adjacency, got {matrix.tolist()}")
    net = Network((matrix, list(ops)), num_labels=num_classes, stem_out_channels=stem_channels,
                  num_stacks=num_stacks, num_modules_per_stack=cells_per_stack, tf_like=tf_like_init)
    _strip_dummy_parameters(net)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = TORCH_BN_MOMENTUM
    return net.to(device)


# --------------------------------------------------------------------------------------------
# Table loading and caching
# --------------------------------------------------------------------------------------------
def table_from_csv(path: Path) -> pd.DataFrame:
    """The benchmark table from the compact CSV layout."""
    df = pd.read_csv(path)
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(CSV_COLUMNS)}")
    if not np.array_equal(df["index"].to_numpy(), np.arange(len(df))):
        raise ValueError(f"{path}: column 'index' must run 0..N-1 in order")
    return _standard_table(df, "test_acc_mean_108ep", valid_col=None)


def table_from_tfrecord(path: Path) -> pd.DataFrame:
    """The benchmark table from an official NAS-Bench-101 tfrecord (108-epoch runs)."""
    from zcproxy.nasbench.tfrecord import read_nb101_table

    return _standard_table(read_nb101_table(path, epochs=108), "test_acc_mean_108ep",
                           valid_col="valid_acc_mean_108ep")


def _standard_table(df: pd.DataFrame, acc_col: str, valid_col: str | None) -> pd.DataFrame:
    out = pd.DataFrame({
        "arch": (df["adjacency_rows"].astype(str) + "|" + df["ops"].astype(str)).to_numpy(dtype=object),
        "accuracy": df[acc_col].to_numpy(dtype=np.float64),
        "params": df["params"].to_numpy(dtype=np.float64) / 1e6,
        "trainable_parameters": df["params"].to_numpy(dtype=np.int64),
        "hash": df["hash"].astype(str).to_numpy(dtype=object),
        "num_vertices": df["num_vertices"].to_numpy(dtype=np.int64),
        "validation_accuracy": (df[valid_col].to_numpy(dtype=np.float64) if valid_col
                                else np.full(len(df), np.nan)),
    })
    if out["hash"].duplicated().any():
        raise ValueError(f"duplicate cell hash {out['hash'][out['hash'].duplicated()].iat[0]}")
    return out


def user_cache_dir() -> Path:
    """``$ZCPROXY_CACHE``, else ``$XDG_CACHE_HOME/zcproxy``, else ``~/.cache/zcproxy``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zcproxy"


def _dir_writable(folder: Path) -> bool:
    """Writable, and not made read-only on purpose.

    Root may write into folders without write bits, but such folders (the shared data folder)
    are read-only by intent, so the permission bits are respected too.
    """
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def cache_paths(source: Path, cache_dir: Path | None = None) -> list[Path]:
    """Where the cached copy of ``source`` may live, in the order they are tried."""
    source = Path(source).resolve()
    user = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    key = hashlib.sha1(str(source).encode("utf-8")).hexdigest()[:12]
    return [source.parent / f"{source.name}.zcproxy.parquet", user / f"{key}-{source.name}.parquet"]


def _source_stamp(source: Path) -> dict:
    st = source.stat()
    return {"source": str(source.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "format": CACHE_FORMAT}


def load_cached_table(source: Path, parse: Callable[[Path], pd.DataFrame],
                      cache_dir: Path | None = None) -> tuple[pd.DataFrame, Path | None]:
    """``parse(source)``, through a Parquet cache; returns (table, cache file used or written).

    The cache goes next to the source if that folder is writable, else to the user cache dir.
    It records the source's size and modification time and is rebuilt when they change.  A cache
    that cannot be written only costs speed, so that is a warning, not an error.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamp = _source_stamp(source)
    candidates = cache_paths(source, cache_dir)
    for path in candidates:
        if not path.is_file():
            continue
        try:
            meta = pq.read_schema(path).metadata or {}
            if json.loads(meta.get(b"zcproxy", b"{}")) == stamp:
                return pq.read_table(path).to_pandas(), path
        except (OSError, ValueError, pa.ArrowException):
            pass  # unreadable or stale: rebuild below
    table = parse(source)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                           b"zcproxy": json.dumps(stamp).encode("utf-8")})
    errors = []
    for path in candidates:
        folder = path.parent
        try:
            if path is candidates[-1]:
                folder.mkdir(parents=True, exist_ok=True)
            if not _dir_writable(folder):
                errors.append(f"{folder}: not writable")
                continue
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            pq.write_table(arrow, tmp)
            os.replace(tmp, path)
            return table, path
        except OSError as e:
            errors.append(f"{path}: {e}")
    warnings.warn(f"could not cache the table of {source}: " + "; ".join(errors), stacklevel=2)
    return table, None


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------
class NB101(Benchmark):
    """NAS-Bench-101 on CIFAR-10: test accuracy at 108 epochs (mean of 3 runs), params, networks.

    Extra table columns: ``hash`` (module hash), ``num_vertices``, ``trainable_parameters``
    (exact count) and ``validation_accuracy`` (percent; NaN when the source is the CSV, which
    does not carry it).
    """

    name = "nb101"
    datasets = ("cifar10",)

    def __init__(self, data_dir: str | os.PathLike | None = None,
                 official_path: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, tf_like_init: bool = False):
        self.data_dir = data_dir
        self.official_path = Path(official_path).expanduser() if official_path is not None else None
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.tf_like_init = tf_like_init
        self._table: pd.DataFrame | None = None
        self.source: Path | None = None
        self.cache_file: Path | None = None

    # -- data ------------------------------------------------------------------------------
    def find_source(self) -> tuple[Path, Callable[[Path], pd.DataFrame]]:
        """The file the table comes from and its parser; BenchmarkDataMissing if there is none."""
        if self.official_path is not None:
            if self.official_path.is_file():
                return self.official_path, table_from_tfrecord
            raise BenchmarkDataMissing("NAS-Bench-101 official file", [self.official_path], HOW_TO_GET)
        tried: list[Path] = []
        for relative in TFRECORD_RELATIVES:
            path, paths = find_in_data_dir(relative, self.data_dir)
            tried += paths
            if path is not None and path.is_file():
                return path, table_from_tfrecord
        path, paths = find_in_data_dir(CSV_RELATIVE, self.data_dir)
        tried += paths
        if path is not None and path.is_file():
            return path, table_from_csv
        raise BenchmarkDataMissing("NAS-Bench-101 data", tried, HOW_TO_GET)

    def table(self, dataset: str = "cifar10") -> pd.DataFrame:
        if dataset not in self.datasets:
            raise ValueError(f"NAS-Bench-101 has datasets {self.datasets}, not {dataset!r}")
        if self._table is None:
            source, parse = self.find_source()
            self._table, self.cache_file = load_cached_table(source, parse, self.cache_dir)
            self.source = source
        return self._table

    # -- lookups ---------------------------------------------------------------------------
    def spec(self, index: int) -> tuple[np.ndarray, list[str]]:
        """(adjacency matrix, ops) of one cell, as stored by the source."""
        return parse_arch(self.arch(index))

    def index_of(self, arch: str) -> int:
        """Index of an arch string, or of any isomorphic or unpruned spelling of the same cell."""
        try:
            return super().index_of(arch)
        except ValueError:
            pass
        matrix, ops = parse_arch(arch)
        return self.index_of_spec(matrix, ops)

    def index_of_spec(self, matrix: np.ndarray | Sequence[Sequence[int]], ops: Sequence[str]) -> int:
        """Index of the cell a spec denotes (by module hash); ValueError if it is not in the table."""
        lookup = getattr(self, "_hash_lookup", None)
        if lookup is None:
            hashes = self.table(self.datasets[0])["hash"]
            lookup = dict(zip(hashes.tolist(), range(len(hashes))))
            self._hash_lookup = lookup
        h = nb101_hash(matrix, ops)
        try:
            return lookup[h]
        except KeyError:
            raise ValueError(f"{format_arch(np.asarray(matrix), ops)!r} (hash {h}) is not a cell of "
                             f"{self.name}: more than 7 vertices or 9 edges after pruning?") from None

    # -- networks --------------------------------------------------------------------------
    def build(self, index: int, dataset: str = "cifar10",
              device: torch.device | str = "cpu") -> nn.Module:
        """The untrained NAS-Bench-101 network: 128-channel stem, 3 stacks of 3 cells, 10 classes."""
        if dataset not in self.datasets:
            raise ValueError(f"NAS-Bench-101 has datasets {self.datasets}, not {dataset!r}")
        matrix, ops = self.spec(index)
        return build_network(matrix, ops, num_classes=10, tf_like_init=self.tf_like_init, device=device)
