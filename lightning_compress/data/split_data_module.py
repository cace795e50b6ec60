"""The base of every data module: train/val/test datasets served by three loaders built one way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lightning_compress.core.validation import ArgumentErrors

TASKS = ("multiclass", "regression")


class SplitDataModule(LightningDataModule):
    """Holds the loader settings and the three splits; subclasses fill the splits in :meth:`setup`.

    Every loader batches ``batch_size`` rows with ``num_workers`` worker processes (kept alive between epochs when
    there are any). The training loader shuffles with its own ``torch.Generator`` seeded from ``seed``: each epoch
    a new order, and the same orders in every run with that seed; with ``seed=None`` it shuffles from torch's global
    RNG. The validation and test loaders keep the datasets' order. A subclass that needs its own batching overrides
    :meth:`collate_fn`.

    Attributes:
        num_classes: Number of classes (1 for a regression).
        metrics: Metric names, primary first.
        task: ``"multiclass"`` or ``"regression"``.
        train_dataset: The training split, after :meth:`setup` (``None`` before); likewise ``val_dataset`` and
            ``test_dataset``.

    Args:
        num_classes: See above.
        batch_size: Batch size of every loader.
        num_workers: DataLoader worker processes.
        seed: Seeds the training shuffle; ``None`` for an unseeded one.
        metrics: See above.
        task: See above.
        pin_memory: Whether the loaders pin memory (faster host-to-GPU copies).
        errors: The subclass's own argument checks, if any: the checks of ``batch_size``, ``num_workers`` and
            ``seed`` are added to them, so that one ``ValueError`` lists every problem of the call.

    Raises:
        ValueError: If ``num_classes`` or ``batch_size`` < 1, ``num_workers`` or ``seed`` is negative, ``metrics`` is
            not a non-empty tuple of names (a string is not), ``task`` is unknown or ``pin_memory`` not a bool (or
            ``errors`` holds a problem).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> class Squares(SplitDataModule):
        ...     def setup(self, stage=None):
        ...         x = torch.arange(10.0)
        ...         self.train_dataset = self.val_dataset = self.test_dataset = TensorDataset(x, x**2)
        >>> dm = Squares(num_classes=1, batch_size=4, task="regression"); dm.setup()
        >>> [len(x) for x, _ in dm.val_dataloader()]
        [4, 4, 2]
    """

    def __init__(
        self,
        num_classes: int,
        batch_size: int,
        num_workers: int = 0,
        seed: Optional[int] = 0,
        *,
        metrics: tuple[str, ...] = ("acc",),
        task: str = "multiclass",
        pin_memory: bool = False,
        errors: Optional[ArgumentErrors] = None,
    ) -> None:
        super().__init__()
        errors = ArgumentErrors() if errors is None else errors
        errors.int("num_classes", num_classes)
        if isinstance(metrics, str):
            errors.add(f"`metrics` must be a tuple of metric names, got the string {metrics!r} (write ({metrics!r},))")
        else:
            errors.require(
                isinstance(metrics, (tuple, list)) and len(metrics) > 0 and all(isinstance(m, str) for m in metrics),
                "metrics",
                "a non-empty tuple of metric names",
                metrics,
            )
        errors.one_of("task", task, TASKS)
        errors.bool("pin_memory", pin_memory)
        errors.int("batch_size", batch_size)
        errors.int("num_workers", num_workers, minimum=0)
        if seed is not None:
            errors.int("seed", seed, minimum=0)
        errors.raise_if_any()
        self.num_classes = num_classes
        self.metrics = tuple(metrics)
        self.task = task
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.train_dataset: Optional[Dataset] = None
        self.val_dataset: Optional[Dataset] = None
        self.test_dataset: Optional[Dataset] = None

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of the training split; the order is seeded from ``seed`` (fresh each epoch, same across
        runs)."""
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Batches of the validation split, in a fixed order."""
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Batches of the test split, in a fixed order."""
        return self._loader(self.test_dataset, shuffle=False)

    def collate_fn(self) -> Optional[Callable[[list[Any]], Any]]:
        """The loaders' ``collate_fn``; ``None`` (PyTorch's default collation) unless a subclass needs its own.

        Called once per loader, after :meth:`setup`.
        """
        return None

    def _not_set_up(self) -> RuntimeError:
        """The error raised when a loader is asked for before :meth:`setup`."""
        return RuntimeError(f"{type(self).__name__}.setup() must run before asking for a dataloader")

    def _loader(self, dataset: Optional[Dataset], shuffle: bool) -> DataLoader:
        if dataset is None:
            raise self._not_set_up()
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle and self.seed is not None else None,
            collate_fn=self.collate_fn(),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
