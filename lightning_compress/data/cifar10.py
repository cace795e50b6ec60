"""CIFAR-10 through torchvision, with the standard crop-and-flip augmentation and a seeded validation split.

torchvision (the ``vision`` extra) is imported when the data module is built, not with this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Subset

from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.data.split_data_module import SplitDataModule
from lightning_compress.models.torchvision_model import import_torchvision

if TYPE_CHECKING:
    from torchvision import datasets

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_TRAIN_SIZE = 50_000


def _datasets() -> ModuleType:
    return import_torchvision("CIFAR10DataModule").datasets


class CIFAR10DataModule(SplitDataModule):
    """CIFAR-10: 50,000 training images (minus a seeded validation split) and the 10,000 official test images.

    Training images get ``RandomCrop(32, padding=4)`` and a horizontal flip; validation and test images are only
    normalised. Batches are float32 ``(B, 3, 32, 32)`` and int64 labels: the training loader shuffles (seeded), the
    validation loader serves the held-out training images and the test loader the 10,000 official test images, both
    in a fixed order. The data must already be under ``root`` unless ``download=True`` (which needs internet access).

    Args:
        root: Folder holding (or to receive) ``cifar-10-batches-py/``.
        download: Download the archive into ``root`` in :meth:`prepare_data` if it is missing.
        batch_size: Batch size of every loader.
        num_workers: DataLoader worker processes.
        val_size: Training images held out (without augmentation) for validation.
        seed: Seeds the validation split and the training shuffle.

    Raises:
        ValueError: At construction, for an out-of-range argument.
        ModuleNotFoundError: At construction, if torchvision is not installed (``pip install
            'lightning-compress[vision]'``).
        FileNotFoundError: In :meth:`prepare_data` / :meth:`setup`, if the data is not under ``root`` and ``download``
            is false.

    Example:
        >>> dm = CIFAR10DataModule(root="data/cifar10", download=True)  # doctest: +SKIP
        >>> dm.prepare_data(); dm.setup(); len(dm.train_dataset), len(dm.val_dataset)  # doctest: +SKIP
        (45000, 5000)
    """

    train_dataset: Subset | None
    val_dataset: Subset | None
    test_dataset: datasets.CIFAR10 | None

    def __init__(
        self,
        root: str | os.PathLike = "data/cifar10",
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 2,
        val_size: int = 5000,
        seed: int = 0,
    ) -> None:
        errors = ArgumentErrors()
        errors.int("val_size", val_size)
        super().__init__(10, batch_size, num_workers, seed, errors=errors)
        if val_size >= CIFAR10_TRAIN_SIZE:
            raise ValueError(f"`val_size` must be below {CIFAR10_TRAIN_SIZE}, got {val_size}")
        transforms = import_torchvision("CIFAR10DataModule").transforms
        self.root = Path(root)
        self.download = download
        self.val_size = val_size
        normalize = transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.train_transform = transforms.Compose(
            [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
        )
        self.eval_transform = transforms.Compose([transforms.ToTensor(), normalize])
        self.save_hyperparameters()

    def _missing_files(self) -> list[Path]:
        cifar = _datasets().CIFAR10
        folder = self.root / cifar.base_folder
        names = [name for name, _ in cifar.train_list + cifar.test_list]
        return [folder / name for name in names if not (folder / name).is_file()]

    def _check_present(self) -> None:
        missing = self._missing_files()
        if missing:
            raise FileNotFoundError(
                f"CIFAR-10 not found under {self.root} (missing {missing[0]}): set `data.download=true` to download "
                f"it, or `data.root` to the folder holding {_datasets().CIFAR10.base_folder}/"
            )

    def prepare_data(self) -> None:
        """Downloads the archive if ``download`` is true and it is missing; otherwise checks that it is there.

        Raises:
            FileNotFoundError: If the data is missing and ``download`` is false.
        """
        if self.download and self._missing_files():
            _datasets().CIFAR10(str(self.root), train=True, download=True)
            _datasets().CIFAR10(str(self.root), train=False, download=True)
        self._check_present()

    def setup(self, stage: str | None = None) -> None:
        """Builds the three splits (once).

        Args:
            stage: Ignored: the splits are cheap to index.

        Raises:
            FileNotFoundError: If the data is missing (run :meth:`prepare_data` with ``download=True`` first).
        """
        if self.train_dataset is not None:
            return
        self._check_present()
        root, cifar = str(self.root), _datasets().CIFAR10
        order = torch.randperm(CIFAR10_TRAIN_SIZE, generator=torch.Generator().manual_seed(self.seed)).tolist()
        val_idx, train_idx = order[: self.val_size], order[self.val_size :]
        self.train_dataset = Subset(cifar(root, train=True, transform=self.train_transform), train_idx)
        self.val_dataset = Subset(cifar(root, train=True, transform=self.eval_transform), val_idx)
        self.test_dataset = cifar(root, train=False, transform=self.eval_transform)
