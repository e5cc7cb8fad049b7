"""CIFAR-100 and ImageNet16-120 readers, on files in the official pickle formats written here."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from zcproxy.data import dataset_batch
from zcproxy.data.images import IMAGE_SETS, read_split


def _write_cifar100(folder, n=6):
    """As the official cifar-100-python/test: a Python-2 style pickle with bytes keys."""
    folder.mkdir(parents=True)
    data = np.arange(n * 3072, dtype=np.int64).reshape(n, 3072) % 256
    entry = {b"batch_label": b"testing batch 1 of 1", b"filenames": [b"x.png"] * n,
             b"fine_labels": list(range(n)), b"coarse_labels": [0] * n,
             b"data": data.astype(np.uint8)}
    with open(folder / "test", "wb") as fh:
        pickle.dump(entry, fh, protocol=2)
    return data


def _write_imagenet16(folder, labels):
    """As ImageNet16/val_data: 'data' N×768 uint8, 1-based 'labels' over 1000 classes."""
    folder.mkdir(parents=True)
    n = len(labels)
    data = (np.arange(n * 768).reshape(n, 768) * 7 % 256).astype(np.uint8)
    with open(folder / "val_data", "wb") as fh:
        pickle.dump({"data": data, "labels": list(labels), "mean": np.zeros(768)}, fh, protocol=2)
    return data


def test_cifar100_reader_decodes_and_normalises(tmp_path):
    raw = _write_cifar100(tmp_path / "cifar100" / "cifar-100-python")
    x, y, source = dataset_batch("cifar100", 6, seed=0, root=tmp_path)
    assert source == "cifar100" and x.shape == (6, 3, 32, 32)
    spec = IMAGE_SETS["cifar100"]
    images, labels = read_split("cifar100", tmp_path / "cifar100" / "cifar-100-python")
    # find the row each sampled image came from through its label (labels are 0..5, distinct)
    for img, label in zip(x, y.tolist()):
        pixel = raw[label, 0] / 255  # channel 0, row 0, col 0
        assert float(img[0, 0, 0]) == pytest.approx((pixel - spec.mean[0]) / spec.std[0], rel=1e-5)
        assert np.array_equal(images[label], raw[label].reshape(3, 32, 32))
    assert sorted(y.tolist()) == list(range(6))


def test_imagenet16_keeps_the_first_120_classes_and_shifts_labels(tmp_path):
    raw = _write_imagenet16(tmp_path / "ImageNet16", [1, 120, 121, 500, 7])
    images, labels = read_split("ImageNet16-120", tmp_path / "ImageNet16")
    assert labels.tolist() == [0, 119, 6]
    assert np.array_equal(images[2], raw[4].reshape(3, 16, 16))
    x, y, source = dataset_batch("ImageNet16-120", 3, root=tmp_path)
    assert source == "ImageNet16-120" and x.shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="batch_size"):
        dataset_batch("ImageNet16-120", 4, root=tmp_path)


def test_corrupt_file_is_named(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cifar-100-python/test is not a cifar100"):
        dataset_batch("cifar100", 2, root=tmp_path)


def test_missing_dataset_falls_back_to_cifar10_and_says_so(tmp_path):
    """The shared data folder has CIFAR-10 only: ImageNet16-120 networks get CIFAR-10 images
    resized to 16x16, labelled as such."""
    x, y, source = dataset_batch("ImageNet16-120", 8, seed=1)
    assert source.startswith("cifar10 (no ImageNet16-120 images")
    assert x.shape == (8, 3, 16, 16) and y.dtype == torch.int64
    x100, _, source100 = dataset_batch("cifar100", 8, seed=1)
    assert source100.startswith("cifar10 (no cifar100") and x100.shape == (8, 3, 32, 32)
