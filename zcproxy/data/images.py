"""Real image batches for the datasets of the NAS benchmarks: CIFAR-10, CIFAR-100, ImageNet16-120.

A data-dependent proxy (NASWOT, SNIP, ZiCo, ...) scored on a NATS-Bench network trained for
CIFAR-100 or ImageNet16-120 should see that dataset's images.  :func:`dataset_batch` reads them
from the official files when they are in the data folder and otherwise falls back to CIFAR-10
images (resized to the network's input for ImageNet16-120), and *says so*: the third value it
returns names the images actually used, so tables can label those cells.

Formats (read here without torchvision, like :mod:`zcproxy.data.cifar10`):

* CIFAR-100, ``<data>/cifar100/cifar-100-python/{train,test}``: one pickle per split, a dict
  with ``b"data"`` (N×3072 uint8, channel-major) and ``b"fine_labels"`` (0..99), as on
  https://www.cs.toronto.edu/~kriz/cifar.html.
* ImageNet16-120, ``<data>/ImageNet16/{train_data_batch_1..10, val_data}``: pickles of the
  downsampled ImageNet (Chrabaszcz et al. 2017, 16×16 variant) with ``"data"`` (N×768 uint8,
  channel-major) and 1-based ``"labels"``; NATS-Bench keeps the images of classes 1..120 and
  shifts labels to 0..119 (D-X-Y/AutoDL-Projects ``xautodl/datasets/DownsampledImageNet.py``).
  Its "test" split is ``val_data``.

Normalisation statistics are NATS-Bench's (xautodl ``get_datasets``).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..paths import find_in_data_dir
from .cifar10 import Cifar10Missing, cifar10_batch, file_stamps, standardise


@dataclass(frozen=True)
class ImageSet:
    """Where a dataset's official pickles live and how to decode them."""

    name: str
    folder: str                           # relative to the data folder
    files: dict[str, tuple[str, ...]]     # split -> pickle files
    label_key: str
    shape: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    first_label: int = 0                  # 1 for ImageNet16's 1-based labels
    classes: int | None = None            # keep only labels first_label..first_label+classes-1
    how_to_get: str = ""


IMAGE_SETS = {
    "cifar100": ImageSet(
        "cifar100", "cifar100/cifar-100-python", {"train": ("train",), "test": ("test",)},
        "fine_labels", (3, 32, 32), tuple(v / 255 for v in (129.3, 124.1, 112.4)),
        tuple(v / 255 for v in (68.2, 65.4, 70.4)),
        how_to_get="Get cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                   "and extract it so that <data-dir>/cifar100/cifar-100-python/test exists."),
    "ImageNet16-120": ImageSet(
        "ImageNet16-120", "ImageNet16",
        {"train": tuple(f"train_data_batch_{i}" for i in range(1, 11)), "test": ("val_data",)},
        "labels", (3, 16, 16), tuple(v / 255 for v in (122.68, 116.66, 104.01)),
        tuple(v / 255 for v in (63.22, 61.26, 65.09)), first_label=1, classes=120,
        how_to_get="Get the 16x16 downsampled ImageNet (Imagenet16_train.zip, Imagenet16_val.zip "
                   "from image-net.org, or NATS-Bench's ImageNet16 folder) so that "
                   "<data-dir>/ImageNet16/val_data exists."),
}


def locate(dataset: str, root: str | os.PathLike | None = None) -> Path | None:
    """The folder of ``dataset``'s pickles (``root`` itself if it holds them), or None."""
    spec = IMAGE_SETS[dataset]
    if root is not None and (Path(root) / spec.files["test"][0]).exists():
        return Path(root)
    path, _ = find_in_data_dir(spec.folder, root)
    return path


def read_split(dataset: str, folder: Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, C, H, W)`` uint8 and 0-based int64 labels of one split, checked (read once
    per version of its files)."""
    names = IMAGE_SETS[dataset].files.get(split, ()) if dataset in IMAGE_SETS else ()
    return _read_split_version(dataset, Path(folder), split, file_stamps(Path(folder), names))


@lru_cache(maxsize=4)
def _read_split_version(dataset: str, folder: Path, split: str, stamps: tuple
                        ) -> tuple[np.ndarray, np.ndarray]:
    spec = IMAGE_SETS[dataset]
    if split not in spec.files:
        raise ValueError(f"split must be one of {sorted(spec.files)}, not {split!r}")
    images, labels = [], []
    for name in spec.files[split]:
        file = folder / name
        if not file.exists():
            raise FileNotFoundError(f"{file} is missing ({dataset}, split {split!r}). "
                                    f"{spec.how_to_get}")
        with open(file, "rb") as fh:
            try:
                entry = pickle.load(fh, encoding="bytes")
                entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
                data = np.asarray(entry["data"], dtype=np.uint8)
                label = np.asarray(entry[spec.label_key], dtype=np.int64)
            except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError,
                    ValueError) as err:
                raise ValueError(f"{file} is not a {dataset} python batch: {err!r}") from err
        size = int(np.prod(spec.shape))
        if data.ndim != 2 or data.shape[1] != size or len(label) != len(data):
            raise ValueError(f"{file}: expected N×{size} data and N labels, got "
                             f"{data.shape} and {len(label)}")
        images.append(data.reshape(-1, *spec.shape))
        labels.append(label)
    x, y = np.concatenate(images), np.concatenate(labels) - spec.first_label
    if spec.classes is not None:
        keep = (y >= 0) & (y < spec.classes)
        x, y = x[keep], y[keep]
    return x, y


def dataset_batch(dataset: str, batch_size: int = 64, seed: int = 0,
                  root: str | os.PathLike | None = None, split: str = "test",
                  device: torch.device | str = "cpu",
                  shape: tuple[int, int, int] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A seeded batch of distinct normalised images for networks trained on ``dataset``.

    Returns ``(x, y, source)``; ``source`` is ``dataset`` when its own images were read, or
    ``"cifar10 (no <dataset> images in the data folder)"`` when CIFAR-10 stood in, resized to
    ``shape`` (default: the dataset's own image shape).
    """
    if dataset == "cifar10":
        x, y = cifar10_batch(batch_size, seed=seed, root=root, split=split, device=device)
        return x, y, "cifar10"
    if dataset not in IMAGE_SETS:
        raise ValueError(f"no images for dataset {dataset!r}; known: cifar10, "
                         f"{', '.join(IMAGE_SETS)}")
    spec = IMAGE_SETS[dataset]
    shape = tuple(shape or spec.shape)
    folder = locate(dataset, root)
    if folder is None:
        try:
            x, y = cifar10_batch(batch_size, seed=seed, root=root, split=split)
        except Cifar10Missing as err:
            raise Cifar10Missing(f"neither {dataset} nor CIFAR-10 images found. "
                                 f"{spec.how_to_get}\n{err}") from None
        source = f"cifar10 (no {dataset} images in the data folder)"
    else:
        images, labels = read_split(dataset, folder, split)
        if not 1 <= batch_size <= len(images):
            raise ValueError(f"batch_size must be in 1..{len(images)}, got {batch_size}")
        idx = np.random.default_rng(seed).choice(len(images), size=batch_size, replace=False)
        x = standardise(images[idx], spec.mean, spec.std)
        y = torch.from_numpy(labels[idx])
        source = dataset
    if tuple(x.shape[1:]) != shape:
        x = F.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False,
                          antialias=True)
    return x.to(device), y.to(device), source
