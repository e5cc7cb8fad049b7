"""Real input batches for data-dependent proxies."""
from .cifar10 import CIFAR10_MEAN, CIFAR10_STD, Cifar10Missing, cifar10_batch, load_cifar10
from .images import IMAGE_SETS, dataset_batch

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "Cifar10Missing", "cifar10_batch", "load_cifar10",
           "IMAGE_SETS", "dataset_batch"]
