"""CIFAR-10 through torchvision, with the standard crop-and-flip augmentation and a seeded validation split."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from lightning_compress.core.validation import ArgumentErrors

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_TRAIN_SIZE = 50_000


class CIFAR10DataModule(LightningDataModule):
    """CIFAR-10: 50,000 training images (minus a seeded validation split) and the 10,000 official test images.

    Training images get ``RandomCrop(32, padding=4)`` and a horizontal flip; validation and test images are only
    normalised. Batches are float32 ``(B, 3, 32, 32)`` and int64 labels. The data must already be under ``root``
    unless ``download=True`` (which needs internet access).

    Args:
        root: Folder holding (or to receive) ``cifar-10-batches-py/``.
        download: Download the archive into ``root`` in :meth:`prepare_data` if it is missing.
        batch_size: Batch size of every loader.
        num_workers: DataLoader worker processes.
        val_size: Training images held out (without augmentation) for validation.
        seed: Seeds the validation split and the training shuffle.

    Raises:
        ValueError: At construction, for an out-of-range argument.
        FileNotFoundError: In :meth:`prepare_data` / :meth:`setup`, if the data is not under ``root`` and ``download``
            is false.

    Example:
        >>> dm = CIFAR10DataModule(root="data/cifar10", download=True)  # doctest: +SKIP
        >>> dm.prepare_data(); dm.setup(); len(dm.train_dataset), len(dm.val_dataset)  # doctest: +SKIP
        (45000, 5000)
    """

    def __init__(
        self,
        root: str | os.PathLike = "data/cifar10",
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 2,
        val_size: int = 5000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        errors = ArgumentErrors()
        errors.int("batch_size", batch_size)
        errors.int("num_workers", num_workers, minimum=0)
        errors.int("seed", seed, minimum=0)
        errors.int("val_size", val_size)
        errors.raise_if_any()
        if val_size >= CIFAR10_TRAIN_SIZE:
            raise ValueError(f"`val_size` must be below {CIFAR10_TRAIN_SIZE}, got {val_size}")
        self.num_classes = 10
        self.metrics: tuple[str, ...] = ("acc",)
        self.task = "multiclass"
        self.root = Path(root)
        self.download = download
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.seed = seed
        normalize = transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.train_transform = transforms.Compose(
            [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
        )
        self.eval_transform = transforms.Compose([transforms.ToTensor(), normalize])
        self.train_dataset: Subset | None = None
        self.val_dataset: Subset | None = None
        self.test_dataset: datasets.CIFAR10 | None = None
        self.save_hyperparameters()

    def _missing_files(self) -> list[Path]:
        folder = self.root / datasets.CIFAR10.base_folder
        names = [name for name, _ in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list]
        return [folder / name for name in names if not (folder / name).is_file()]

    def _check_present(self) -> None:
        missing = self._missing_files()
        if missing:
            raise FileNotFoundError(
                f"CIFAR-10 not found under {self.root} (missing {missing[0]}): set `data.download=true` to download "
                f"it, or `data.root` to the folder holding {datasets.CIFAR10.base_folder}/"
            )

    def prepare_data(self) -> None:
        """Downloads the archive if ``download`` is true and it is missing; otherwise checks that it is there.

        Raises:
            FileNotFoundError: If the data is missing and ``download`` is false.
        """
        if self.download and self._missing_files():
            datasets.CIFAR10(str(self.root), train=True, download=True)
            datasets.CIFAR10(str(self.root), train=False, download=True)
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
        root = str(self.root)
        order = torch.randperm(CIFAR10_TRAIN_SIZE, generator=torch.Generator().manual_seed(self.seed)).tolist()
        val_idx, train_idx = order[: self.val_size], order[self.val_size :]
        self.train_dataset = Subset(datasets.CIFAR10(root, train=True, transform=self.train_transform), train_idx)
        self.val_dataset = Subset(datasets.CIFAR10(root, train=True, transform=self.eval_transform), val_idx)
        self.test_dataset = datasets.CIFAR10(root, train=False, transform=self.eval_transform)

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented batches ``(x, y)``: x ``(B, 3, 32, 32)`` float32, y ``(B,)`` int64."""
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Batches of the held-out training images, in a fixed order, without augmentation."""
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Batches of the 10,000 official test images, in a fixed order."""
        return self._loader(self.test_dataset, shuffle=False)

    def _loader(self, dataset: Subset | datasets.CIFAR10 | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("CIFAR10DataModule.setup() must run before asking for a dataloader")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
