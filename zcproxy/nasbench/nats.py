"""NATS-Bench adapters: the size space (``nats-sss``) and the topology space (``nats-tss``).

Two kinds of source give the accuracy table:

* a compact CSV in the data folder (fast; what development and CI use):
  ``nats-sss/nats_sss_hp90_valid.csv`` and ``nats-tss/nats_tss_hp200_test.csv``;
* the official NATS-Bench files, read through the ``nats_bench`` package: the fast-mode folder
  (``NATS-sss-v1_0-50262-simple/``, ``NATS-tss-v1_0-3ffb9-simple/``: ``meta.pickle.pbz2`` plus one
  file per architecture) or the single ``.pickle.pbz2`` file.  Reading every record takes minutes,
  so an official source is only used for the table when no CSV is found or when it is passed
  explicitly as ``official_path``.

Whatever the source, a space reports the same quantity, named by ``accuracy_split`` and
``accuracy_hp``: the size space ships *validation* accuracy after the 90-epoch schedule (CIFAR-10
trained on its train half), the topology space *test* accuracy after 200 epochs (CIFAR-10 trained
on train+valid), mean over seeds.  Mixing the two splits in one comparison would be wrong, so
the attribute travels with the adapter.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..paths import ENV_VAR, data_dir_candidates, find_in_data_dir
from .base import Benchmark, BenchmarkDataMissing, last_of_tuple
from .cells import (OP_NAMES, SSS_CHANNEL_CHOICES, count_flops, count_parameters,
                    dead_operations, parse_sss_channels, parse_tss_arch, sss_arch, sss_index,
                    sss_network, tss_network)

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}
RESOLUTION = {"cifar10": 32, "cifar100": 32, "ImageNet16-120": 16}
# Dataset names the official API knows; "cifar10-valid" is CIFAR-10 trained on the train half.
OFFICIAL_DATASETS = ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120")
NATS_URL = "https://github.com/D-X-Y/NATS-Bench"


def torch_home() -> Path:
    """Where ``nats_bench`` looks for its files by default: ``$TORCH_HOME``, else ``~/.torch``."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser()
    return Path.home() / ".torch"


def _is_official_source(path: Path) -> bool:
    """A fast-mode folder (with meta.pickle.pbz2) or a single .pickle.pbz2 / .pickle file."""
    if path.is_file():
        return path.name.endswith((".pickle.pbz2", ".pickle"))
    return path.is_dir() and (path / "meta.pickle.pbz2").is_file()


def _record_file(archive_dir: Path, index: int) -> Path | None:
    """The fast-mode record of one architecture (both names nats_bench accepts), or None."""
    for name in (f"{index:06d}.pickle.pbz2", f"{index}.pickle.pbz2"):
        if (archive_dir / name).is_file():
            return archive_dir / name
    return None


class _NatsBenchmark(Benchmark):
    """Shared machinery; subclasses state which space, files and accuracy they stand for."""

    datasets = ("cifar10", "cifar100", "ImageNet16-120")
    output_selector = staticmethod(last_of_tuple)

    def input_shape(self, dataset: str = "cifar10") -> tuple[int, ...]:
        """ImageNet16-120 networks see 16x16 images, the CIFAR ones 32x32."""
        self._check_dataset(dataset)
        return (3, RESOLUTION[dataset], RESOLUTION[dataset])

    space: str                 # nats_bench's tag: "sss" or "tss"
    num_archs: int
    official_base: str         # e.g. "NATS-sss-v1_0-50262"
    csv_relative: str
    accuracy_split: str        # "valid" or "test"
    accuracy_hp: str           # training schedule of the table's accuracy: "90" or "200"
    # Per dataset: (official dataset name, metric key of get_more_info) of the table accuracy.
    _official_accuracy: dict[str, tuple[str, str]]
    _csv_accuracy: dict[str, str]

    def __init__(self, data_dir: str | os.PathLike | None = None,
                 official_path: str | os.PathLike | None = None):
        self.data_dir = data_dir
        self.official_path = Path(official_path).expanduser() if official_path is not None else None
        self._tables: dict[str, pd.DataFrame] | None = None
        self._api: Any = None
        self._api_path: Path | None = None
        self.source: Path | None = None  # where the table came from, once loaded

    # ------------------------------------------------------------------ Benchmark interface
    def table(self, dataset: str = "cifar10") -> pd.DataFrame:
        self._check_dataset(dataset)
        if self._tables is None:
            self._tables = self._load_tables()
        return self._tables[dataset]

    def build(self, index: int, dataset: str = "cifar10",
              device: torch.device | str = "cpu") -> nn.Module:
        self._check_dataset(dataset)
        return self._network(self.arch(index), NUM_CLASSES[dataset]).to(device)

    def _network(self, arch: str, num_classes: int) -> nn.Module:
        raise NotImplementedError

    # ------------------------------------------------------------------ search genome
    # Both spaces are a fixed number of positions with the same choices at each, and every
    # combination is an architecture of the benchmark: a genome is the tuple of choices (tss:
    # the six edges' op names in the cell string's order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2;
    # sss: the five widths).  A mutation changes ``mutations`` distinct positions, each to
    # another choice drawn uniformly; a crossover takes each position from either parent.
    genome_choices: tuple = ()

    def genome(self, index: int) -> tuple:
        return self._genome_of_arch(self.arch(index))

    def genome_index(self, genome: tuple) -> int:
        return self.index_of(self._arch_of_genome(genome))

    def mutate_genome(self, genome: tuple, rng, mutations: int = 1) -> tuple:
        self.genome_index(genome)  # ValueError for a genome of another space
        if isinstance(mutations, bool) or not 1 <= int(mutations) <= len(genome):
            raise ValueError(f"mutations={mutations!r}: a {self.name} genome has "
                             f"{len(genome)} positions")
        child = list(genome)
        for position in rng.sample(range(len(child)), int(mutations)):
            child[position] = rng.choice([c for c in self.genome_choices if c != child[position]])
        return tuple(child)

    def crossover_genomes(self, a: tuple, b: tuple, rng) -> tuple:
        self.genome_index(a), self.genome_index(b)
        return tuple(x if rng.randrange(2) else y for x, y in zip(a, b))

    def genome_vector(self, genome: tuple) -> np.ndarray:
        return np.array([self.genome_choices.index(c) for c in genome], dtype=np.int64)

    def _genome_of_arch(self, arch: str) -> tuple:
        raise NotImplementedError

    def _arch_of_genome(self, genome: tuple) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ official records
    def official_info(self, index: int, dataset: str = "cifar10",
                      hp: str | int | None = None) -> dict[str, Any]:
        """One architecture's official record: accuracy (%) on every split the benchmark kept
        for ``dataset`` (NaN where it has none), mean over seeds, and ``params``/``flops`` (M).

        ``dataset`` is an official name, including ``"cifar10-valid"`` (CIFAR-10 trained on the
        train half, the only CIFAR-10 run with a validation accuracy).  ``hp`` defaults to the
        schedule of the table (``accuracy_hp``).
        """
        if dataset not in OFFICIAL_DATASETS:
            raise ValueError(f"unknown NATS-Bench dataset {dataset!r}; "
                             f"choose from {', '.join(OFFICIAL_DATASETS)}")
        api, path = self._official_api()
        index = int(index)
        if not 0 <= index < len(api):
            raise IndexError(f"{self.name} has architectures 0..{len(api) - 1}, not {index}")
        hp = self.accuracy_hp if hp is None else str(hp)
        if not self._has_record(index):
            raise BenchmarkDataMissing(f"official {self.name} record of architecture {index}",
                                       [self._record_path_hint(index)],
                                       f"The folder {path} lacks this record; use the complete "
                                       f"{self.official_base}-simple archive from {NATS_URL}.")
        try:
            try:
                info = api.get_more_info(index, dataset, hp=hp, is_random=False)
            except KeyError:
                known = sorted(api.arch2infos_dict.get(index, {}).keys())
                if hp not in known:
                    raise ValueError(f"{self.name} records schedules hp={', '.join(known)}, "
                                     f"not {hp!r}") from None
                raise
            cost = api.get_cost_info(index, dataset, hp=hp)
        finally:
            self._forget(index)
        record = {"index": index, "arch": api.arch(index), "dataset": dataset, "hp": hp}
        for split in ("train", "valid", "test", "valtest"):
            record[f"{split}_accuracy"] = float(info.get(f"{split}-accuracy", np.nan))
        record["params"] = float(cost["params"])
        record["flops"] = float(cost["flops"])
        return record

    def _official_candidates(self) -> list[Path]:
        if self.official_path is not None:
            return [self.official_path]
        names = [f"{self.official_base}-simple", f"{self.official_base}.pickle.pbz2"]
        candidates = [torch_home() / name for name in names]
        for folder in data_dir_candidates(self.data_dir):
            candidates += [folder / f"nats-{self.space}" / name for name in names]
        return candidates

    def _find_official(self) -> Path | None:
        return next((p for p in self._official_candidates() if _is_official_source(p)), None)

    def _official_api(self) -> tuple[Any, Path]:
        if self._api is None:
            given = self.official_path
            if given is not None and given.exists() and not _is_official_source(given):
                raise ValueError(
                    f"official_path {given} is not an official NATS-Bench source: that is a "
                    f"{self.official_base}-simple folder holding meta.pickle.pbz2, or the single "
                    f"file {self.official_base}.pickle.pbz2 (a compact CSV belongs in the data "
                    f"folder as {self.csv_relative}, read without official_path)")
            path = self._find_official()
            if path is None:
                raise BenchmarkDataMissing(f"official {self.name} files",
                                           self._official_candidates(), self._how_to_get())
            import nats_bench  # imported late: only needed with official files

            # The fast-mode folder loads one record per query; the single file loads everything.
            self._api = nats_bench.create(str(path), self.space, fast_mode=path.is_dir(),
                                          verbose=False)
            self._api_path = path
        return self._api, self._api_path

    def _has_record(self, index: int) -> bool:
        api, path = self._official_api()
        if path.is_dir():
            return index in api.arch2infos_dict or _record_file(path, index) is not None
        return index in api.arch2infos_dict

    def _record_path_hint(self, index: int) -> Path:
        return self._api_path / f"{index:06d}.pickle.pbz2"

    def _forget(self, index: int) -> None:
        """Drop a fast-mode record after reading it: each holds every epoch of every run, and
        keeping thousands would exhaust memory.  (The single-file source keeps its records.)"""
        api, path = self._official_api()
        if path.is_dir():
            api.arch2infos_dict.pop(index, None)
            api.evaluated_indexes.discard(index)

    # ------------------------------------------------------------------ table loading
    def _load_tables(self) -> dict[str, pd.DataFrame]:
        if self.official_path is not None:  # an explicit official source wins over the CSV
            return self._tables_from_official()
        csv, csv_tried = find_in_data_dir(self.csv_relative, self.data_dir)
        if csv is not None:
            self.source = csv
            return self._tables_from_csv(csv)
        if self._find_official() is not None:
            return self._tables_from_official()
        raise BenchmarkDataMissing(f"{self.name} accuracy table",
                                   csv_tried + self._official_candidates(), self._how_to_get())

    def _read_csv(self, path: Path) -> pd.DataFrame:
        try:
            frame = pd.read_csv(path)
        except Exception as error:  # a truncated or non-CSV file: say which one
            raise ValueError(f"cannot read {self.name} table {path}: {error}") from error
        needed = ["index", "arch", *self._csv_accuracy.values(), *self._csv_extra_columns()]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"{path} lacks columns {missing}; expected at least {needed}")
        if len(frame) != self.num_archs or not np.array_equal(frame["index"].to_numpy(),
                                                              np.arange(self.num_archs)):
            raise ValueError(f"{path} must hold the {self.num_archs} {self.name} architectures "
                             f"in index order 0..{self.num_archs - 1}; it has {len(frame)} rows")
        for column in [*self._csv_accuracy.values(), *self._csv_extra_columns()]:
            if frame[column].isna().any():
                bad = int(frame.index[frame[column].isna()][0])
                raise ValueError(f"{path}: column {column} is empty at index {bad}")
            values = pd.to_numeric(frame[column], errors="coerce")
            if values.isna().any():  # a cell such as "abc": say where, not just "cannot convert"
                bad = int(frame.index[values.isna()][0])
                raise ValueError(f"{path}: column {column} holds {frame[column].iat[bad]!r} at "
                                 f"index {bad}, not a number")
            frame[column] = values
        frame["arch"] = frame["arch"].astype(str)
        return frame

    def _csv_extra_columns(self) -> list[str]:
        return []

    def _check_arches(self, arches: list[str], where: Path) -> Any:
        """Raise ValueError (naming ``where``) unless ``arches`` are the space's strings."""
        raise NotImplementedError

    def _tables_from_csv(self, path: Path) -> dict[str, pd.DataFrame]:
        raise NotImplementedError

    def _tables_from_official(self) -> dict[str, pd.DataFrame]:
        """Every record of the official source.  Architectures whose record file is absent get
        NaN (with a warning), so a partial folder still gives a table of the right shape."""
        api, path = self._official_api()
        self.source = path
        arches = [str(api.arch(i)) for i in range(len(api))]
        if len(arches) != self.num_archs:
            raise ValueError(f"{path} lists {len(arches)} architectures; {self.name} has "
                             f"{self.num_archs}")
        self._check_arches(arches, path)
        columns = {ds: {key: np.full(len(arches), np.nan) for key in ("accuracy", "params", "flops")}
                   for ds in self.datasets}
        absent = 0
        from tqdm.auto import tqdm

        for index in tqdm(range(len(arches)), desc=f"reading {self.name} records", disable=None):
            if not self._has_record(index):
                absent += 1
                continue
            try:
                for dataset in self.datasets:
                    official_dataset, metric = self._official_accuracy[dataset]
                    info = api.get_more_info(index, official_dataset, hp=self.accuracy_hp,
                                             is_random=False)
                    cost = api.get_cost_info(index, dataset, hp=self.accuracy_hp)
                    columns[dataset]["accuracy"][index] = info[metric]
                    columns[dataset]["params"][index] = cost["params"]
                    columns[dataset]["flops"][index] = cost["flops"]
            finally:
                self._forget(index)
        if absent:
            warnings.warn(f"{path} holds no record for {absent} of {len(arches)} {self.name} "
                          f"architectures; their accuracy, params and flops are NaN", stacklevel=4)
        return {ds: pd.DataFrame({"arch": arches, **cols}) for ds, cols in columns.items()}

    # ------------------------------------------------------------------ helpers
    def _check_dataset(self, dataset: str) -> None:
        if dataset not in self.datasets:
            raise ValueError(f"{self.name} has datasets {', '.join(self.datasets)}, "
                             f"not {dataset!r}")

    def _how_to_get(self) -> str:
        base = self.official_base
        csv_columns = ", ".join(["index", "arch", *self._csv_accuracy.values(),
                                 *self._csv_extra_columns()])
        return (f"The official NATS-Bench files come from {NATS_URL}: download the fast-mode "
                f"archive {base}-simple.tar and unpack it so that {base}-simple/meta.pickle.pbz2 "
                f"exists under $TORCH_HOME (default ~/.torch, as nats_bench expects), or pass its "
                f"path as official_path, or place it under nats-{self.space}/ in the data folder "
                f"(--data-dir or ${ENV_VAR}). The single file {base}.pickle.pbz2 works too. "
                f"Alternatively provide the compact CSV <data folder>/{self.csv_relative} with "
                f"columns {csv_columns} (one row per architecture, index 0..{self.num_archs - 1}).")


class NatsSss(_NatsBenchmark):
    """NATS-Bench size space: 32,768 width choices of one fixed cell.

    Accuracy is the *validation* accuracy after 90 epochs (``accuracy_split = "valid"``); the
    official CIFAR-10 test accuracy runs about 3 points higher and ranks almost identically.
    """

    name = "nats-sss"
    space = "sss"
    num_archs = 8 ** 5
    official_base = "NATS-sss-v1_0-50262"
    csv_relative = "nats-sss/nats_sss_hp90_valid.csv"
    accuracy_split = "valid"
    accuracy_hp = "90"
    _official_accuracy = {"cifar10": ("cifar10-valid", "valid-accuracy"),
                          "cifar100": ("cifar100", "valid-accuracy"),
                          "ImageNet16-120": ("ImageNet16-120", "valid-accuracy")}
    _csv_accuracy = {"cifar10": "cifar10_valid_acc_hp90",
                     "cifar100": "cifar100_valid_acc_hp90",
                     "ImageNet16-120": "imagenet16_120_valid_acc_hp90"}
    _csv_cost_suffix = {"cifar10": "cifar10", "cifar100": "cifar100",
                        "ImageNet16-120": "imagenet16"}

    def __len__(self) -> int:  # the space is fixed, no need to read a table to know its size
        return self.num_archs

    def arch(self, index: int) -> str:
        return sss_arch(self._check_index(index))

    def index_of(self, arch: str) -> int:
        return sss_index(arch)

    def _network(self, arch: str, num_classes: int) -> nn.Module:
        return sss_network(arch, num_classes)

    genome_choices = SSS_CHANNEL_CHOICES

    def _genome_of_arch(self, arch: str) -> tuple:
        return parse_sss_channels(arch)

    def _arch_of_genome(self, genome: tuple) -> str:
        if not isinstance(genome, tuple):
            raise ValueError(f"a {self.name} genome is a tuple of 5 widths, not {genome!r}")
        return ":".join(str(c) for c in genome)

    def _csv_extra_columns(self) -> list[str]:
        return [f"{kind}_M_{suffix}" for suffix in self._csv_cost_suffix.values()
                for kind in ("params", "flops")]

    def _check_arches(self, arches: list[str], where: Path) -> None:
        # Rows must follow the official index rule, or index_of/arch would disagree with the table.
        for index, arch in enumerate(arches):
            if arch != sss_arch(index):
                parse_sss_channels(arch)  # a malformed string gets its own message
                raise ValueError(f"{where}: row {index} is {arch!r}, but the NATS size-space "
                                 f"index {index} is {sss_arch(index)!r}")

    def _tables_from_csv(self, path: Path) -> dict[str, pd.DataFrame]:
        frame = self._read_csv(path)
        self._check_arches(frame["arch"].tolist(), path)
        return {ds: pd.DataFrame({
            "arch": frame["arch"],
            "accuracy": frame[self._csv_accuracy[ds]].astype(float),
            "params": frame[f"params_M_{self._csv_cost_suffix[ds]}"].astype(float),
            "flops": frame[f"flops_M_{self._csv_cost_suffix[ds]}"].astype(float),
        }) for ds in self.datasets}


class NatsTss(_NatsBenchmark):
    """NATS-Bench topology space (= NAS-Bench-201): 15,625 cells at C=16, N=5.

    Accuracy is the *test* accuracy after 200 epochs (``accuracy_split = "test"``), mean of the
    three seeds.  The compact CSV carries no costs, so params and FLOPs are computed from our
    networks (exact: the tests match them to the official records).
    """

    name = "nats-tss"
    space = "tss"
    num_archs = 5 ** 6
    official_base = "NATS-tss-v1_0-3ffb9"
    csv_relative = "nats-tss/nats_tss_hp200_test.csv"
    accuracy_split = "test"
    accuracy_hp = "200"
    _official_accuracy = {"cifar10": ("cifar10", "test-accuracy"),
                          "cifar100": ("cifar100", "test-accuracy"),
                          "ImageNet16-120": ("ImageNet16-120", "test-accuracy")}
    _csv_accuracy = {"cifar10": "cifar10_test_acc",
                     "cifar100": "cifar100_test_acc",
                     "ImageNet16-120": "imagenet16_120_test_acc"}

    populations = {"no-dead-ops": "the cells in which every operation lies on a path from "
                                  "the cell's input to its output (9,445 of 15,625), the cells "
                                  "VKDNW (CVPR 2025) ranks in its Table 1"}

    def _in_population(self, name: str, arch: str) -> bool:
        return not dead_operations(arch)  # the one population declared above

    def _network(self, arch: str, num_classes: int) -> nn.Module:
        return tss_network(arch, num_classes)

    genome_choices = OP_NAMES

    def _genome_of_arch(self, arch: str) -> tuple:
        return tuple(op for node in parse_tss_arch(arch) for op, _ in node)

    def _arch_of_genome(self, genome: tuple) -> str:
        if not isinstance(genome, tuple) or len(genome) != 6 or not all(
                op in OP_NAMES for op in genome):
            raise ValueError(f"a {self.name} genome is a tuple of 6 op names from "
                             f"{', '.join(OP_NAMES)}, not {genome!r}")
        return _tss_string(list(genome))

    def _check_arches(self, arches: list[str], where: Path) -> np.ndarray:
        """Validates every cell string and returns their op matrix (see :func:`tss_op_matrix`)."""
        choices = tss_op_matrix(arches, where)
        if len(set(arches)) != len(arches):
            twice = pd.Series(arches)[pd.Series(arches).duplicated()].iloc[0]
            raise ValueError(f"{where}: architecture {twice!r} appears twice")
        return choices

    def _tables_from_csv(self, path: Path) -> dict[str, pd.DataFrame]:
        frame = self._read_csv(path)
        arches = frame["arch"].tolist()
        choices = self._check_arches(arches, path)
        tables = {}
        for ds in self.datasets:
            params, flops = tss_costs(choices, ds)
            tables[ds] = pd.DataFrame({"arch": frame["arch"],
                                       "accuracy": frame[self._csv_accuracy[ds]].astype(float),
                                       "params": params, "flops": flops})
        return tables


# --------------------------------------------------------------------------- tss costs
@functools.lru_cache(maxsize=None)
def _tss_op_costs(dataset: str) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Parameter and FLOP counts of the all-``none`` network, and what one edge with each op adds.

    Every edge of a topology cell maps C to C channels at stride 1 and owns its modules, so an
    op adds the same cost wherever it sits, and a network costs the base plus its six edges:
    five small networks per dataset price all 15,625 cells (the tests check the result against
    directly built networks and the official records).
    """
    num_classes, resolution = NUM_CLASSES[dataset], RESOLUTION[dataset]
    params = np.zeros(len(OP_NAMES), dtype=np.int64)
    flops = np.zeros(len(OP_NAMES), dtype=np.int64)
    # Building draws initial weights: fork the RNG so that loading a table never shifts the
    # weights of the next network a caller builds under its own seed.
    with torch.random.fork_rng(devices=[]):
        for op_index, op in enumerate(OP_NAMES):  # the network with this op on all six edges
            net = tss_network(_tss_string([op] * 6), num_classes)
            params[op_index], flops[op_index] = count_parameters(net), count_flops(net, resolution)
    base = OP_NAMES.index("none")
    extra_params, extra_flops = params - params[base], flops - flops[base]
    if (extra_params % 6).any() or (extra_flops % 6).any():
        raise AssertionError("topology-space edge costs are not uniform across edges")
    return int(params[base]), int(flops[base]), extra_params // 6, extra_flops // 6


def _tss_string(ops: list[str]) -> str:
    """Cell string of six ops in edge order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2."""
    return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)


def tss_op_matrix(arches: list[str], where: object = "arch list") -> np.ndarray:
    """(n, 6) indices into ``OP_NAMES`` of each cell's edges; ValueError naming a bad row."""
    op_position = {op: i for i, op in enumerate(OP_NAMES)}
    rows = []
    for index, arch in enumerate(arches):
        try:
            genotype = parse_tss_arch(arch)
        except ValueError as error:
            raise ValueError(f"{where}: row {index}: {error}") from None
        rows.append([op_position[op] for node in genotype for op, _ in node])
    return np.array(rows, dtype=np.int64).reshape(len(arches), 6)


def tss_costs(choices: np.ndarray, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Params and FLOPs (both in millions) of topology-space cells given by
    :func:`tss_op_matrix`, as NATS-Bench records them."""
    if dataset not in NUM_CLASSES:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(NUM_CLASSES)}")
    base_params, base_flops, extra_params, extra_flops = _tss_op_costs(dataset)
    params = base_params + extra_params[choices].sum(axis=1)
    flops = base_flops + extra_flops[choices].sum(axis=1)
    return params / 1e6, flops / 1e6
