"""The CIFAR-10 python-batch reader, on a file the test writes and on the shared test batch."""
import pickle

import numpy as np
import pytest
import torch

from zcproxy.data import CIFAR10_MEAN, Cifar10Missing, cifar10_batch, load_cifar10
from zcproxy.paths import find_in_data_dir


def write_batch(folder, name, data, labels):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "wb") as fh:
        pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"test"}, fh)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"] * 10}))


def test_reader_decodes_channel_major_pixels(tmp_path):
    data = np.zeros((2, 3072), dtype=np.uint8)
    data[0, 0] = 255           # image 0, red channel, pixel (0, 0)
    data[1, 1024 + 33] = 51    # image 1, green channel, pixel (1, 1)
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_batch(folder, "test_batch", data, [3, 7])
    x, y = load_cifar10(tmp_path, normalize=False)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [3, 7]
    assert x[0, 0, 0, 0] == 1.0 and x[1, 1, 1, 1] == pytest.approx(0.2)
    assert x.sum() == pytest.approx(1.2)
    xn, _ = load_cifar10(tmp_path)
    assert xn[0, 1, 0, 0] == pytest.approx(-CIFAR10_MEAN[1] / 0.2435, rel=1e-5)


def test_corrupt_batch_is_reported(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_batch(folder, "test_batch", np.zeros((2, 100), dtype=np.uint8), [0, 1])
    with pytest.raises(ValueError, match="3072"):
        load_cifar10(tmp_path)


def test_missing_folder_names_the_path_and_how_to_get_it(tmp_path):
    with pytest.raises(Cifar10Missing) as err:
        load_cifar10(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    assert "cs.toronto.edu" in str(err.value)


def test_shared_test_batch_is_read_and_batches_are_seeded():
    folder, _ = find_in_data_dir("cifar10/cifar-10-batches-py")
    assert folder is not None, "the shared data folder is part of the CI contract"
    x, y = load_cifar10()
    assert x.shape == (10000, 3, 32, 32) and y.bincount().tolist() == [1000] * 10
    assert abs(float(x.mean())) < 0.1
    a, ya = cifar10_batch(64, seed=1)
    b, yb = cifar10_batch(64, seed=1)
    assert torch.equal(a, b) and torch.equal(ya, yb) and a.shape == (64, 3, 32, 32)
    assert len({tuple(r.flatten()[:20].tolist()) for r in a}) == 64
