"""Reader for the official CIFAR-10 python-pickle batches (``cifar-10-batches-py``).

No torchvision: the format is a pickled dict with ``b"data"`` (N×3072 uint8, channel-major)
and ``b"labels"``; reading it ourselves keeps the core install light.
"""
from __future__ import annotations

import os
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..paths import file_version, find_in_data_dir

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FOLDER = "cifar10/cifar-10-batches-py"
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
HOW_TO_GET = ("Get the python version of CIFAR-10 (cifar-10-python.tar.gz) from "
              "https://www.cs.toronto.edu/~kriz/cifar.html, extract it so that "
              "<data-dir>/cifar10/cifar-10-batches-py/test_batch exists, and pass --data-dir "
              "or set ZCPROXY_DATA=<data-dir>.")


class Cifar10Missing(FileNotFoundError):
    pass


def locate(root: str | os.PathLike | None = None) -> Path:
    """The ``cifar-10-batches-py`` folder: ``root`` itself if it is one, else looked up."""
    if root is not None and (Path(root) / "batches.meta").exists():
        return Path(root)
    path, tried = find_in_data_dir(FOLDER, root)
    if path is None:
        raise Cifar10Missing("CIFAR-10 batches not found. Looked in:\n"
                             + "\n".join(f"  - {p}" for p in tried) + "\n" + HOW_TO_GET)
    return path


def file_stamps(folder: Path, names: tuple[str, ...] | list[str]) -> tuple:
    """(name, :func:`zcproxy.paths.file_version`) of each file: the version of the files a
    cached read came from, so a file replaced in a long-lived process (a notebook) is read
    again instead of served from the cache."""
    return tuple((name, file_version(Path(folder) / name)) for name in names)


def standardise(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
                ) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` as floats: pixels in [0, 1], then per channel
    ``(x - mean) / std``.  Element-wise, so a subset gives the same values as the whole."""
    x = torch.from_numpy(images).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    return _read_split_version(folder, split, file_stamps(folder, SPLITS.get(split, ())))


@lru_cache(maxsize=4)
def _read_split_version(folder: Path, split: str, stamps: tuple) -> tuple[np.ndarray, np.ndarray]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, not {split!r}")
    images, labels = [], []
    for name in SPLITS[split]:
        file = folder / name
        if not file.exists():
            raise Cifar10Missing(f"{file} is missing (split {split!r}). {HOW_TO_GET}")
        with open(file, "rb") as fh:
            try:
                batch = pickle.load(fh, encoding="bytes")
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                label = np.asarray(batch[b"labels"], dtype=np.int64)
            except (pickle.UnpicklingError, EOFError, KeyError, TypeError) as err:
                raise ValueError(f"{file} is not a CIFAR-10 python batch: {err!r}") from err
        if data.ndim != 2 or data.shape[1] != 3072 or len(label) != len(data):
            raise ValueError(f"{file}: expected N×3072 data and N labels, got {data.shape} "
                             f"and {len(label)}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels)


def load_cifar10(root: str | os.PathLike | None = None, split: str = "test",
                 normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a split as float tensors ``(N, 3, 32, 32)`` and int64 labels.

    ``normalize`` maps pixels to [0, 1] then standardises with the usual CIFAR-10 statistics.
    """
    images, labels = _read_split(locate(root), split)
    x = (standardise(images, CIFAR10_MEAN, CIFAR10_STD) if normalize
         else torch.from_numpy(images).float().div_(255.0))
    return x, torch.from_numpy(labels)


def cifar10_batch(batch_size: int = 64, seed: int = 0, root: str | os.PathLike | None = None,
                  split: str = "test", device: torch.device | str = "cpu"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random batch of distinct normalised CIFAR-10 images with their labels."""
    images, labels = _read_split(locate(root), split)
    if not 1 <= batch_size <= len(images):
        raise ValueError(f"batch_size must be in 1..{len(images)}, got {batch_size}")
    idx = np.random.default_rng(seed).choice(len(images), size=batch_size, replace=False)
    # Only the chosen images are standardised, not the whole split.
    x = standardise(images[idx], CIFAR10_MEAN, CIFAR10_STD)
    return x.to(device), torch.from_numpy(labels[idx]).to(device)
