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

from zcproxy.atomic import atomic_write
from zcproxy.nasbench.base import Benchmark, BenchmarkDataMissing
from zcproxy.nasbench.pooling import use_channels_last_max_pools
from zcproxy.paths import find_in_data_dir
from zcproxy.surgery import mark_chain_links

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

# The space's limits (nasbench's config module_vertices / max_edges).
MAX_VERTICES, MAX_EDGES = 7, 9

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


def _check_acyclic(matrix: np.ndarray, ops: Sequence[str]) -> None:
    # A graph is acyclic iff its adjacency matrix is nilpotent: A^n = 0 for n vertices.
    if np.linalg.matrix_power(matrix.astype(np.int64), len(ops)).any():
        raise ValueError(f"invalid cell: its graph has a cycle ({format_arch(matrix, ops)!r}); "
                         "NAS-Bench-101 cells are directed acyclic graphs")


def check_buildable(matrix: np.ndarray, ops: Sequence[str]) -> None:
    """ValueError (saying which rule) unless the spec is a NAS-Bench-101 cell as it stands:
    at most 7 vertices and 9 edges, upper-triangular (so acyclic), every vertex on an
    input→output path (the pruned form the benchmark stores)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    _check_spec(matrix, ops)
    edges = int(matrix.sum())
    if len(ops) > MAX_VERTICES or edges > MAX_EDGES:
        raise ValueError(f"NAS-Bench-101 cells have at most {MAX_VERTICES} vertices and "
                         f"{MAX_EDGES} edges; this one has {len(ops)} and {edges}")
    if np.tril(matrix).any():
        _check_acyclic(matrix, ops)
        raise ValueError(f"NAS-Bench-101 cells need an upper-triangular adjacency, got "
                         f"{matrix.tolist()} (relabel the vertices in topological order)")
    pruned, _ = prune(matrix, ops)  # ValueError if the input does not reach the output
    if len(pruned) != len(ops):
        raise ValueError(f"invalid cell {format_arch(matrix, ops)!r}: some vertices are not on "
                         "an input→output path; pass prune(matrix, ops) (the cell the "
                         "benchmark stores) instead")


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
    TensorFlow-like initialisation instead of its default He-normal one.  Its max-pools are
    ``ChannelsLastMaxPool2d`` (same maxima, faster forward on the CPU; ``nasbench/pooling.py``).
    """
    from nasbench_pytorch.model import Network

    matrix = np.asarray(matrix, dtype=np.int64)
    check_buildable(matrix, ops)
    net = Network((matrix, list(ops)), num_labels=num_classes, stem_out_channels=stem_channels,
                  num_stacks=num_stacks, num_modules_per_stack=cells_per_stack, tf_like=tf_like_init)
    _strip_dummy_parameters(net)
    mark_chain_links(net.layers)  # Network.forward: x = layer(x) for each, then mean, classifier
    use_channels_last_max_pools(net)
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
    for column in ("test_acc_mean_108ep", "params", "num_vertices"):
        values = pd.to_numeric(df[column], errors="coerce")
        if values.isna().any():  # a cell such as "abc": say where, not just "cannot convert"
            bad = int(values.isna().to_numpy().nonzero()[0][0])
            raise ValueError(f"{path}: column {column} holds {df[column].iat[bad]!r} at index "
                             f"{bad}, not a number")
        df[column] = values
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
            with atomic_write(path, "wb") as fh:
                pq.write_table(arrow, fh)
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
            if self.official_path.is_file() and not self.official_path.name.endswith(".tfrecord"):
                raise ValueError(f"official_path {self.official_path} is not a .tfrecord file "
                                 f"(the official NAS-Bench-101 file is nasbench_only108.tfrecord); "
                                 f"the compact table belongs in the data folder as "
                                 f"{CSV_RELATIVE}, read without official_path")
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
        matrix = np.asarray(matrix, dtype=np.int64)
        _check_spec(matrix, ops)
        _check_acyclic(matrix, ops)
        pruned, kept = prune(matrix, ops)
        if len(kept) > MAX_VERTICES or int(pruned.sum()) > MAX_EDGES:
            raise ValueError(f"{format_arch(matrix, ops)!r} is not a cell of {self.name}: after "
                             f"pruning it has {len(kept)} vertices and {int(pruned.sum())} edges "
                             f"(at most {MAX_VERTICES} and {MAX_EDGES})")
        lookup = getattr(self, "_hash_lookup", None)
        if lookup is None:
            hashes = self.table(self.datasets[0])["hash"]
            lookup = dict(zip(hashes.tolist(), range(len(hashes))))
            self._hash_lookup = lookup
        h = nb101_hash(matrix, ops)
        try:
            return lookup[h]
        except KeyError:
            raise ValueError(f"{format_arch(matrix, ops)!r} (hash {h}) is a valid cell but not "
                             f"one of the {len(lookup):,} in this {self.name} table") from None

    # -- networks --------------------------------------------------------------------------
    def build(self, index: int, dataset: str = "cifar10",
              device: torch.device | str = "cpu") -> nn.Module:
        """The untrained NAS-Bench-101 network: 128-channel stem, 3 stacks of 3 cells, 10 classes."""
        if dataset not in self.datasets:
            raise ValueError(f"NAS-Bench-101 has datasets {self.datasets}, not {dataset!r}")
        matrix, ops = self.spec(index)
        return build_network(matrix, ops, num_classes=10, tf_like_init=self.tf_like_init, device=device)

    # -- search genome ---------------------------------------------------------------------
    # A genome is a 7-vertex spec ``(rows, ops)``: the upper-triangular 0/1 adjacency as 7 row
    # tuples, and the 7 vertex ops.  Cells stored with fewer vertices are padded with
    # unconnected conv3x3 vertices before the output (pruning removes them again, so the padded
    # spec hashes to the same cell); later mutations may connect them.  The index comes from the
    # isomorphism-invariant module hash, so every spelling of a cell maps to its one entry, and
    # a spec the benchmark lacks (the input does not reach the output, more than 9 edges after
    # pruning) is invalid.  A point mutation flips one of the 21 possible edges or changes one of
    # the 5 interior ops (26 sites, uniform); a mutant is drawn again until it is valid and
    # another cell than its parent, a crossover child (each site from either parent) until valid.
    def genome(self, index: int) -> tuple:
        matrix, ops = self.spec(index)
        return pad_genome(matrix, ops)

    def genome_index(self, genome: tuple) -> int:
        # Memoised (hashing a cell costs ~0.3 ms; a search asks about the same genomes often).
        cache = self.__dict__.setdefault("_genome_cache", {})
        try:
            index = cache.get(genome)
        except TypeError:  # unhashable: not a genome; genome_spec says why
            index = None
        if index is None:
            try:
                matrix, ops = genome_spec(genome)
                index = self.index_of_spec(matrix, ops)
            except ValueError as err:
                index = str(err)
            if len(cache) > 200_000:
                cache.clear()
            try:
                cache[genome] = index
            except TypeError:
                pass
        if isinstance(index, str):
            raise ValueError(index)
        return index

    def mutate_genome(self, genome: tuple, rng, mutations: int = 1) -> tuple:
        parent = self.genome_index(genome)
        if isinstance(mutations, bool) or not 1 <= int(mutations) <= len(GENOME_SITES):
            raise ValueError(f"mutations={mutations!r}: a genome has {len(GENOME_SITES)} sites")
        for _ in range(GENOME_ATTEMPTS):
            rows, ops = [list(r) for r in genome[0]], list(genome[1])
            for site in rng.sample(range(len(GENOME_SITES)), int(mutations)):
                kind, where = GENOME_SITES[site]
                if kind == "edge":
                    rows[where[0]][where[1]] ^= 1
                else:
                    ops[where] = rng.choice([op for op in CANONICAL_OPS if op != ops[where]])
            child = (tuple(tuple(r) for r in rows), tuple(ops))
            try:
                if self.genome_index(child) != parent:
                    return child
            except ValueError:
                continue
        raise RuntimeError(f"no valid mutant of {format_arch(*genome_spec(genome))!r} in "
                           f"{GENOME_ATTEMPTS} draws")

    def crossover_genomes(self, a: tuple, b: tuple, rng) -> tuple:
        """Each edge and interior op from either parent; ``a`` itself if no mix is valid."""
        self.genome_index(a), self.genome_index(b)
        for _ in range(GENOME_ATTEMPTS):
            rows = [list(r) for r in a[0]]
            ops = list(a[1])
            for kind, where in GENOME_SITES:
                if rng.randrange(2):
                    continue
                if kind == "edge":
                    rows[where[0]][where[1]] = b[0][where[0]][where[1]]
                else:
                    ops[where] = b[1][where]
            child = (tuple(tuple(r) for r in rows), tuple(ops))
            if self.is_valid_genome(child):
                return child
        return a

    def genome_vector(self, genome: tuple) -> np.ndarray:
        rows, ops = genome
        return np.array([rows[w[0]][w[1]] if kind == "edge" else CANONICAL_OPS.index(ops[w])
                         for kind, w in GENOME_SITES], dtype=np.int64)


GENOME_VERTICES = 7
GENOME_ATTEMPTS = 1000
# The 21 upper-triangular edges (i, j), then the 5 interior vertices whose op can change.
GENOME_SITES: tuple = tuple([("edge", (i, j)) for i in range(GENOME_VERTICES)
                             for j in range(i + 1, GENOME_VERTICES)]
                            + [("op", v) for v in range(1, GENOME_VERTICES - 1)])


def pad_genome(matrix: np.ndarray | Sequence[Sequence[int]], ops: Sequence[str]) -> tuple:
    """The 7-vertex genome of a spec: unconnected conv3x3 vertices inserted before the output."""
    m = np.asarray(matrix, dtype=np.int64)
    n = len(ops)
    if n > GENOME_VERTICES:
        raise ValueError(f"a NAS-Bench-101 cell has at most {GENOME_VERTICES} vertices, not {n}")
    padded = np.zeros((GENOME_VERTICES, GENOME_VERTICES), dtype=np.int64)
    keep = list(range(n - 1)) + [GENOME_VERTICES - 1]  # old vertex k goes to keep[k]
    padded[np.ix_(keep, keep)] = m
    new_ops = list(ops[:-1]) + [CONV3X3] * (GENOME_VERTICES - n) + [ops[-1]]
    return tuple(tuple(int(x) for x in row) for row in padded), tuple(new_ops)


def genome_spec(genome: tuple) -> tuple[np.ndarray, list[str]]:
    """(adjacency, ops) of a genome; ValueError if it is not a 7-vertex spec."""
    try:
        rows, ops = genome
        matrix = np.array(rows, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"a NAS-Bench-101 genome is (7 adjacency rows, 7 ops), not {genome!r}") from None
    if matrix.shape != (GENOME_VERTICES, GENOME_VERTICES) or len(ops) != GENOME_VERTICES:
        raise ValueError(f"a NAS-Bench-101 genome has {GENOME_VERTICES} vertices, got "
                         f"{matrix.shape} adjacency and {len(ops)} ops")
    if np.tril(matrix).any():
        raise ValueError(f"a genome's adjacency must be upper-triangular, got {matrix.tolist()}")
    _check_spec(matrix, list(ops))
    return matrix, list(ops)
