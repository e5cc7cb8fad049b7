"""Training and validation data: an ImageNet-layout image folder or the CIFAR-10 python batches,
with timm's augmentation pipeline, deterministic per-epoch shuffling and exact sharded evaluation.

Layouts accepted by :func:`open_datasets` (``root`` is the ``--data`` folder):

* ``root/train/<class>/*.png|jpg...`` and ``root/val/<class>/...`` (torchvision ``ImageFolder``);
* CIFAR-10: ``root`` is ``cifar-10-batches-py`` itself, or holds it (``root/cifar-10-batches-py``
  or ``root/cifar10/cifar-10-batches-py``).  With ``data_batch_1..5`` present, training uses
  them and validation ``test_batch``; with ``val_fraction`` the training pool (or, when only
  ``test_batch`` exists, that batch) is split class-stratified into train/val by a fixed seed,
  so every run and every process sees the same split.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, load_cifar10

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLIT_SEED = 0  # the train/val split must not change with the training seed


class UnreadableImage(ValueError):
    """An image file of the training or validation folder that cannot be decoded."""


def load_image(path: str) -> Image.Image:
    """An RGB image, or UnreadableImage naming the file: PIL's own errors for a truncated or
    corrupt file ("image file is truncated") do not say which of a million files it was."""
    try:
        with open(path, "rb") as fh:
            return Image.open(fh).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"{path}: cannot read this image ({type(err).__name__}: "
                              f"{err}); replace or remove the file") from None


class ArrayImageDataset(Dataset):
    """Images held in memory as uint8 ``(N, H, W, 3)``, served as PIL images to timm transforms
    (which expect PIL input, like an image folder would give)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, np.asarray(labels, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


@dataclass
class Datasets:
    train: Dataset
    val: Dataset
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str
    eval_crop_pct: float = 0.95  # centre-crop fraction for validation (1.0: already tight crops)

    def set_transforms(self, train: Callable, val: Callable) -> None:
        self.train.transform, self.val.transform = train, val


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int = SPLIT_SEED
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices; each class gives ``round(val_fraction * count)`` to val."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"validation fraction {val_fraction!r} must be in (0, 1)")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_val = int(round(val_fraction * len(members)))
        val.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ValueError(f"validation fraction {val_fraction} leaves an empty split "
                         f"({len(train_idx)} train / {len(val_idx)} val images)")
    return train_idx, val_idx


def _cifar_folder(root: Path) -> Path | None:
    for candidate in (root, root / "cifar-10-batches-py", root / "cifar10" / "cifar-10-batches-py"):
        if (candidate / "batches.meta").exists() or (candidate / "test_batch").exists():
            return candidate
    return None


def _cifar_arrays(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_cifar10(folder, split, normalize=False)  # floats k/255: exact round trip
    images = (x * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return images, y.numpy()


def open_datasets(root: str | os.PathLike, val_fraction: float | None = None) -> Datasets:
    """The train/val datasets under ``root`` (layouts in the module docstring), without
    transforms: the normalisation statistics come with them, so set transforms afterwards
    (:meth:`Datasets.set_transforms`)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"--data {root}: no such folder")
    if (root / "train").is_dir() and (root / "val").is_dir():
        if val_fraction is not None:
            raise ValueError(f"{root} is an image folder with its own val/; "
                             "the validation split option is for CIFAR-10 batches only")
        from torchvision.datasets import ImageFolder
        train = ImageFolder(str(root / "train"), transform=None, loader=load_image)
        val = ImageFolder(str(root / "val"), transform=None, loader=load_image)
        if val.classes != train.classes:
            missing = sorted(set(train.classes) ^ set(val.classes))
            raise ValueError(f"{root}: train/ and val/ class folders differ (e.g. {missing[:5]})")
        return Datasets(train, val, len(train.classes), IMAGENET_MEAN, IMAGENET_STD,
                        f"image folder {root} ({len(train)} train / {len(val)} val images, "
                        f"{len(train.classes)} classes)")
    folder = _cifar_folder(root)
    if folder is None:
        raise FileNotFoundError(
            f"--data {root}: found neither an image folder ({root / 'train'} and {root / 'val'}) "
            f"nor CIFAR-10 python batches ({root}/[cifar10/]cifar-10-batches-py/test_batch)")
    has_train = all((folder / f"data_batch_{i}").exists() for i in range(1, 6))
    if has_train and val_fraction is None:
        (xt, yt), (xv, yv) = _cifar_arrays(folder, "train"), _cifar_arrays(folder, "test")
        what = "data_batch_1..5 / test_batch"
    else:
        if val_fraction is None:
            raise ValueError(
                f"{folder} holds only test_batch (no data_batch_1..5): pass a validation fraction "
                "(--cifar-split-val 0.1) to split it into train and val")
        pool = "train" if has_train else "test"
        images, labels = _cifar_arrays(folder, pool)
        train_idx, val_idx = stratified_split(labels, val_fraction)
        xt, yt, xv, yv = images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]
        what = f"{'data_batch_1..5' if has_train else 'test_batch'} split {1 - val_fraction:g}/{val_fraction:g}"
    return Datasets(ArrayImageDataset(xt, yt), ArrayImageDataset(xv, yv),
                    10, CIFAR10_MEAN, CIFAR10_STD,
                    f"CIFAR-10 {folder} ({what}: {len(yt)} train / {len(yv)} val images)",
                    eval_crop_pct=1.0)


def build_transforms(img_size: int, randaugment: str, random_erasing: float,
                     mean: Sequence[float], std: Sequence[float],
                     crop_scale: tuple[float, float] = (0.08, 1.0), crop_pct: float = 0.95,
                     interpolation: str = "bicubic") -> tuple[Callable, Callable]:
    """(train, val) transforms from timm: random-resized crop, flip, RandAugment, random erasing
    (pixel mode, as EfficientFormerV2) for training; resize + centre crop for validation."""
    from timm.data import create_transform
    train = create_transform(img_size, is_training=True, scale=tuple(crop_scale),
                             auto_augment=randaugment or None, re_prob=random_erasing,
                             re_mode="pixel", interpolation=interpolation,
                             mean=tuple(mean), std=tuple(std))
    val = create_transform(img_size, is_training=False, crop_pct=crop_pct,
                           interpolation=interpolation, mean=tuple(mean), std=tuple(std))
    return train, val


class ShardSampler(Sampler[int]):
    """Every ``world``-th index from ``rank``: the shards partition the dataset exactly (no
    padding duplicates, unlike DistributedSampler), so summed counts give exact accuracy."""

    def __init__(self, length: int, rank: int = 0, world: int = 1):
        self.length, self.rank, self.world = length, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


class EpochLoader:
    """A training DataLoader whose order and worker seeds depend only on (seed, epoch, rank),
    so an interrupted run that resumes at an epoch boundary sees the very same batches."""

    def __init__(self, dataset: Dataset, batch_size: int, rank: int, world: int, seed: int,
                 workers: int = 0, pin_memory: bool = False):
        if len(dataset) < batch_size * world:
            raise ValueError(f"{len(dataset)} training images cannot fill one global batch of "
                             f"{batch_size * world}; lower --batch-size")
        self.sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                          seed=seed, drop_last=True)
        self.generator = torch.Generator()
        self.seed, self.rank = seed, rank
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler,
                                 num_workers=workers, pin_memory=pin_memory, drop_last=True,
                                 generator=self.generator, persistent_workers=False)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed((self.seed * 1_000_003 + epoch) * 1024 + self.rank)
        return self.loader


def val_loader(dataset: Dataset, batch_size: int, rank: int, world: int, workers: int = 0,
               pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world),
                      num_workers=workers, pin_memory=pin_memory)

