"""scikit-learn's 1,797 UCI optical digits (8x8), as a data module."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.data.tensor_data import TensorDataModule

# Mean and std of all 1,797 images after /16 (computed once, like MNIST's 0.1307 / 0.3081).
DIGITS_MEAN = 0.3053
DIGITS_STD = 0.3760
DIGITS_SIZE = 1797


class DigitsDataModule(TensorDataModule):
    """The UCI 8x8 digits of ``sklearn.datasets.load_digits``, split train/val/test with a seed.

    Images are float32 ``(N, 1, 8, 8)``: pixel counts 0..16 divided by 16, then normalised with the data set's
    mean 0.3053 and std 0.3760; labels are int64 in [0, 9]. With the defaults the split is 1,258 / 180 / 359.

    Args:
        batch_size: Batch size of every loader.
        val_fraction: Fraction of the 1,797 images for validation (rounded to a count).
        test_fraction: Fraction for test (rounded); the rest is the training set.
        seed: Seeds the split and the training shuffle.
        num_workers: DataLoader worker processes.

    Raises:
        ValueError: If an argument is out of range, the two fractions leave no training data, or a fraction rounds to
            no image at all (an empty validation or test split).

    Example:
        >>> dm = DigitsDataModule(); dm.setup()
        >>> len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)
        (1258, 180, 359)
    """

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(num_classes=10, batch_size=batch_size, seed=seed, num_workers=num_workers)
        errors = ArgumentErrors()
        errors.interval("val_fraction", val_fraction, 0, 1, "()", kind="a float ")
        if errors.interval("test_fraction", test_fraction, 0, 1, "()", kind="a float ") and len(errors) == 0:
            if val_fraction + test_fraction >= 1.0:
                errors.add(
                    "`val_fraction` + `test_fraction` must be below 1 to leave training data,"
                    f" got {val_fraction} + {test_fraction}"
                )
            for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
                if round(DIGITS_SIZE * fraction) == 0:
                    errors.add(
                        f"`{name}` must leave at least one of the {DIGITS_SIZE:,} images to its split, got {fraction}"
                        f" (0 of {DIGITS_SIZE:,}): use at least {1 / DIGITS_SIZE:.5f}"
                    )
        errors.raise_if_any()
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.save_hyperparameters()

    def _load(self) -> tuple[Tensor, Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        return (images - DIGITS_MEAN) / DIGITS_STD, torch.tensor(digits.target, dtype=torch.int64)

    def _split_sizes(self, n: int) -> tuple[int, int, int]:
        n_val, n_test = round(n * self.val_fraction), round(n * self.test_fraction)
        return n - n_val - n_test, n_val, n_test
