"""The walk at the end of training: :class:`CompressionPlanner` runs :func:`~lightning_compress.planner.walk.compress`
on the trained network and the fit's data when ``fit`` ends, so that a training run ends in the compressed model
(``lc-train experiment=compress_mnist``: train the MNIST-5k CNN, then walk it through the planner).

Example:
    >>> import lightning.pytorch as pl
    >>> planner = CompressionPlanner(max_drop=0.5, latency_ratio=0.3, run_dir="outputs/compress")
    >>> trainer = pl.Trainer(max_epochs=12, callbacks=[planner])
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_compress.core.sharding import check_sharding
from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.planner.budget import Budget
from lightning_compress.planner.steps import STEP_ORDER, PlannerSettings

__all__ = ["CompressionPlanner"]


class CompressionPlanner(Callback):
    """Walks the planner over the trained model when ``fit`` ends (rank zero only); :attr:`result` holds its
    :class:`~lightning_compress.planner.walk.PlannerResult`.

    The model walked is the network at the end of ``fit`` (the last epoch's weights), on the fit's datamodule (or its
    train and validation dataloaders).

    Args:
        max_drop, latency_ratio, latency_ms, size_ratio, size_mb, batch_size: The
            :class:`~lightning_compress.planner.budget.Budget`.
        run_dir: The planner's run folder.
        steps: Steps to walk (default: all, in order).
        explore, qat_epochs, distill_max_epochs, distill_time_s, prune_fraction, unstructured_sparsity,
            calibration_batches, limit_train_batches: The
            :class:`~lightning_compress.planner.steps.PlannerSettings`.
        export_formats: Formats the chosen model is also exported to.
        repeats: Timed calls per candidate.

    Raises:
        ValueError: On a bad budget, setting or step name (all listed at once), in ``__init__``.
    """

    def __init__(
        self,
        max_drop: float,
        run_dir: Union[str, os.PathLike],
        latency_ratio: Optional[float] = None,
        latency_ms: Optional[float] = None,
        size_ratio: Optional[float] = None,
        size_mb: Optional[float] = None,
        batch_size: int = 32,
        steps: Sequence[str] = STEP_ORDER,
        explore: bool = False,
        qat_epochs: int = 2,
        distill_max_epochs: int = 8,
        distill_time_s: float = 180.0,
        prune_fraction: float = 0.5,
        unstructured_sparsity: float = 0.9,
        calibration_batches: int = 16,
        limit_train_batches: Optional[int] = None,
        export_formats: Sequence[str] = ("onnx",),
        repeats: int = 10,
    ) -> None:
        errors = ArgumentErrors("CompressionPlanner: ")
        try:
            self.budget = Budget(max_drop, latency_ratio, latency_ms, size_ratio, size_mb, batch_size)
        except ValueError as err:
            errors.add(str(err))
        try:
            self.settings = PlannerSettings(calibration_batches, qat_epochs, distill_max_epochs, distill_time_s,
                                            prune_fraction, unstructured_sparsity, explore=explore,
                                            limit_train_batches=limit_train_batches)  # fmt: skip
        except ValueError as err:
            errors.add(str(err))
        steps = list(steps)
        errors.require(bool(steps) and all(s in STEP_ORDER for s in steps), "steps",
                       f"names from {', '.join(STEP_ORDER)}", steps)  # fmt: skip
        errors.require(isinstance(run_dir, (str, os.PathLike)) and str(run_dir) != "", "run_dir", "a folder", run_dir)
        errors.int("repeats", repeats)
        errors.raise_if_any()
        self.run_dir, self.steps, self.export_formats, self.repeats = run_dir, steps, list(export_formats), repeats
        self.result: Any = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_sharding(trainer, self)  # refuses sharded strategies: core.sharding.SHARDED_SUPPORT

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        from lightning_compress.core.target import find_network
        from lightning_compress.planner.walk import compress

        network = copy.deepcopy(find_network(pl_module)[0]).cpu().eval()
        data: Any = trainer.datamodule
        if data is None:
            data = (trainer.train_dataloader, trainer.val_dataloaders)
        self.result = compress(network, data, self.budget, self.run_dir, settings=self.settings, steps=self.steps,
                               export_formats=self.export_formats, repeats=self.repeats)  # fmt: skip
