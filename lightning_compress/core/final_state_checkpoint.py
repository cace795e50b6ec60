"""A ``ModelCheckpoint`` whose best checkpoint is always a compressed one: a checkpoint saved before every
compression schedule reached its final state never becomes the best.

Selecting the best checkpoint by a validation score alone picks, in a pruning run, an early and barely pruned model
(it scores best because it is dense), and pairs its accuracy with a sparsity it never had.
:class:`FinalStateCheckpoint` asks every :class:`~lightning_compress.core.compression_callback.CompressionCallback` of
the trainer (:class:`~lightning_compress.GradualMagnitudePruning`, :class:`~lightning_compress.NMSparsity`,
:class:`~lightning_compress.OneShotPruning`, :class:`~lightning_compress.QuantizationAwareTraining`) whether its state
is final when a checkpoint is due; only then may the checkpoint enter the top-k. ``save_last`` and the other saving
options work as in ``ModelCheckpoint`` (a resume needs the last checkpoint, final or not). Without compression
callbacks it is a plain ``ModelCheckpoint``; so it is without a ``monitor`` (the latest checkpoint is then the best,
which is final at the end of a schedule that ends with training).

Example:
    >>> import lightning.pytorch as pl
    >>> from lightning_compress import GradualMagnitudePruning
    >>> checkpoint = FinalStateCheckpoint(monitor="val/acc", mode="max", save_last=True)
    >>> trainer = pl.Trainer(max_epochs=12, callbacks=[GradualMagnitudePruning(0.9, end_epoch=8), checkpoint])
"""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import Tensor
from typing_extensions import override

from lightning_compress.core.compression_callback import CompressionCallback

__all__ = ["FinalStateCheckpoint", "compression_callbacks"]


def compression_callbacks(trainer: pl.Trainer) -> list[CompressionCallback]:
    """The trainer's compression callbacks, in its order.

    Example:
        >>> import lightning.pytorch as pl
        >>> compression_callbacks(pl.Trainer(logger=False, enable_checkpointing=False))
        []
    """
    return [c for c in trainer.callbacks if isinstance(c, CompressionCallback)]


class FinalStateCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that lets only checkpoints of the final compressed state become the best; see the module
    docstring. It takes ``ModelCheckpoint``'s arguments.

    Attributes:
        first_final_step: The ``global_step`` of the first checkpoint that was considered for the top-k (every
            schedule final then); None while none was.
        skipped: ``(global_step, why)`` of the checkpoints kept out of the top-k because a schedule was not final.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_final_step: Optional[int] = None
        self.skipped: list[tuple[int, str]] = []

    @override
    def check_monitor_top_k(self, trainer: pl.Trainer, current: Optional[Tensor] = None) -> bool:
        pending = [c for c in compression_callbacks(trainer) if not c.is_final]
        if pending:
            why = "; ".join(c.describe_state() for c in pending)
            self.skipped.append((trainer.global_step, why))
            if self.verbose:
                rank_zero_info(f"step {trainer.global_step}: not a candidate for the best checkpoint ({why})")
            return False
        if self.first_final_step is None:
            self.first_final_step = trainer.global_step
        return super().check_monitor_top_k(trainer, current)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "first_final_step": self.first_final_step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        step = state_dict.get("first_final_step")
        self.first_final_step = None if step is None else int(step)
