"""The part every mask-holding callback shares: its :class:`ParameterMasks`, the pruned gradients zeroed before each
optimizer step, and letting go of their optimizer hooks when ``fit`` ends, fails or is torn down.

Subclasses (:class:`~lightning_compress.GradualMagnitudePruning`, :class:`~lightning_compress.NMSparsity`,
:class:`~lightning_compress.OneShotPruning`) build ``self._masks`` in their own ``on_fit_start`` and extend
:meth:`_detach` when they hold more hooks.
"""

from __future__ import annotations

from typing import Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch.optim import Optimizer
from typing_extensions import override

from lightning_compress.masking import ParameterMasks

__all__ = ["MaskingCallback"]


class MaskingCallback(Callback):
    """A callback that holds :class:`ParameterMasks` (``None`` until ``fit`` starts)."""

    _masks: Optional[ParameterMasks] = None

    @property
    def masks(self) -> Optional[ParameterMasks]:
        """The masks, once ``fit`` has started."""
        return self._masks

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if self._masks is not None:
            self._masks.apply_to_grads(optimizer)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._detach()

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._detach()

    def _detach(self) -> None:
        """Remove the masks' optimizer hooks (the masks and the zeros they made stay)."""
        if self._masks is not None:
            self._masks.detach()
