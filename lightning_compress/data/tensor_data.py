"""A data module over in-memory tensors with a fixed, seeded train/val/test split."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_compress.core.validation import ArgumentErrors


class TensorDataModule(LightningDataModule):
    """Splits one labelled tensor data set into train/val/test with a seeded permutation and serves loaders.

    Subclasses implement :meth:`_load` (the whole data set as tensors, already normalised) and :meth:`_split_sizes`.
    The split depends only on ``seed`` and the data, so every run with the same seed sees the same test set.

    Attributes:
        num_classes: Number of classes (set by the subclass).
        metrics: Metric names, primary first.
        task: ``"multiclass"``.
        split_indices: After :meth:`setup`, the row indices of each split into the full data set, keyed ``"train"``,
            ``"val"``, ``"test"``.

    Raises:
        ValueError: If ``batch_size`` < 1, or ``num_workers`` or ``seed`` is negative.

    Example:
        >>> class Ones(TensorDataModule):
        ...     def _load(self):
        ...         return torch.ones(10, 1, 2, 2), torch.zeros(10, dtype=torch.long)
        ...     def _split_sizes(self, n):
        ...         return 6, 2, 2
        >>> dm = Ones(num_classes=1, batch_size=4); dm.setup()
        >>> len(dm.train_dataset), next(iter(dm.train_dataloader()))[0].shape
        (6, torch.Size([4, 1, 2, 2]))
    """

    def __init__(self, num_classes: int, batch_size: int = 64, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        errors = ArgumentErrors()
        errors.int("batch_size", batch_size)
        errors.int("num_workers", num_workers, minimum=0)
        errors.int("seed", seed, minimum=0)
        errors.raise_if_any()
        self.num_classes = num_classes
        self.metrics: tuple[str, ...] = ("acc",)
        self.task = "multiclass"
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.split_indices: dict[str, Tensor] = {}
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None
        self.test_dataset: TensorDataset | None = None

    def _load(self) -> tuple[Tensor, Tensor]:
        """Returns the whole data set: inputs ``(N, ...)`` float32 and labels ``(N,)`` int64."""
        raise NotImplementedError

    def _split_sizes(self, n: int) -> tuple[int, int, int]:
        """Returns the (train, val, test) sizes for a data set of ``n`` rows; they sum to ``n``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Loads the tensors and splits them (once; later calls are no-ops).

        Args:
            stage: Ignored: all three splits are built together because they come from one permutation.
        """
        if self.train_dataset is not None:
            return
        x, y = self._load()
        sizes = self._split_sizes(len(y))
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed))
        train, val, test = torch.split(order, list(sizes))
        self.split_indices = {"train": train, "val": val, "test": test}
        self.train_dataset = TensorDataset(x[train], y[train])
        self.val_dataset = TensorDataset(x[val], y[val])
        self.test_dataset = TensorDataset(x[test], y[test])

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches ``(x, y)``; the order is seeded from ``seed`` (fresh each epoch, same across runs)."""
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Batches ``(x, y)`` of the validation split, in a fixed order."""
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Batches ``(x, y)`` of the test split, in a fixed order."""
        return self._loader(self.test_dataset, shuffle=False)

    def _loader(self, dataset: TensorDataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a dataloader")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
