"""A data module over in-memory tensors with a fixed, seeded train/val/test split."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from lightning_compress.data.split_data_module import SplitDataModule


class TensorDataModule(SplitDataModule):
    """Splits one labelled tensor data set into train/val/test with a seeded permutation and serves loaders.

    Subclasses implement :meth:`_load` (the whole data set as tensors, already normalised) and :meth:`_split_sizes`.
    The split depends only on ``seed`` and the data, so every run with the same seed sees the same test set. The
    loaders are :class:`~lightning_compress.data.split_data_module.SplitDataModule`'s (the training shuffle is seeded
    from ``seed`` too).

    Attributes:
        num_classes: Number of classes (set by the subclass).
        metrics: Metric names, primary first: ``("acc",)``.
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

    train_dataset: TensorDataset | None
    val_dataset: TensorDataset | None
    test_dataset: TensorDataset | None

    def __init__(self, num_classes: int, batch_size: int = 64, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(num_classes, batch_size, num_workers, seed)
        self.split_indices: dict[str, Tensor] = {}

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
