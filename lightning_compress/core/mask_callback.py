"""The template every mask-holding callback follows: select weights when ``fit`` starts, hold their
:class:`~lightning_compress.core.masks.ParameterMasks`, update them on a schedule of optimizer steps, keep the pruned
gradients at zero, save and restore the masks exactly, and let go of the optimizer hooks when ``fit`` ends.

A subclass (:class:`~lightning_compress.GradualMagnitudePruning`, :class:`~lightning_compress.NMSparsity`,
:class:`~lightning_compress.OneShotPruning`) fills in:

* ``_CONFIG``: the names of the constructor arguments that identify it (its ``state_key``), and ``_COMPARED``: the
  further ones a resumed run must share (see :mod:`~lightning_compress.core.compression_callback`);
* :meth:`~MaskingCallback._select`: the weights to mask, by name;
* :meth:`~MaskingCallback._due` and :meth:`~MaskingCallback._update`: when and how the masks change;
* :meth:`~MaskingCallback._extra_state` / :meth:`~MaskingCallback._load_extra_state` /
  :meth:`~MaskingCallback._reset_schedule`: the schedule's own state;
* ``is_final`` / ``final_step`` / ``describe_state``: whether the masks are those the schedule ends in.

When ``fit`` starts and before every mask update the weights are checked for NaN and Inf
(:meth:`MaskingCallback._check_finite`): a mask applied by multiplication would turn every pruned weight of a NaN layer
into NaN.

Lightning restores callback state before ``on_fit_start`` builds the masks, so a restored state waits
(``_pending_state``) until the masks exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from typing_extensions import override

from lightning_compress.core.compression_callback import CompressionCallback
from lightning_compress.core.masks import ParameterMasks
from lightning_compress.core.sharding import all_reduce_, check_sharding
from lightning_compress.core.target import schedule_step
from lightning_compress.core.validation import check_finite

__all__ = ["MaskingCallback"]


class MaskingCallback(CompressionCallback):
    """A callback that holds :class:`ParameterMasks` (``None`` until ``fit`` starts); see the module docstring."""

    _masks: Optional[ParameterMasks] = None
    _pending_state: Optional[dict[str, Any]] = None
    _last_update_step: int = -1
    _skipped: dict[str, str] = {}

    # ----------------------------------------------------------------------------------- what a subclass defines

    def _select(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, nn.Parameter]:
        """The weights to mask, by name relative to the compression target (called in ``on_fit_start``)."""
        raise NotImplementedError

    def _due(self, step: int) -> bool:
        """Whether the masks change at optimizer step ``step``."""
        return False

    def _update(self, trainer: pl.Trainer, step: int) -> None:
        """Change the masks at ``step`` (``_last_update_step`` is already ``step``)."""

    def _reset_schedule(self) -> None:
        """New masks were built (a first ``fit``, or other weights): forget the schedule's progress."""

    def _extra_state(self) -> dict[str, Any]:
        """What the subclass saves beside the masks and ``last_update_step``."""
        return {}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`_extra_state` (keys added later must be read with ``.get``)."""

    def _attach(self, trainer: pl.Trainer) -> None:
        """Keep pruned weights at zero across the optimizer steps."""
        assert self._masks is not None
        self._masks.attach(trainer.optimizers)

    # ------------------------------------------------------------------------------------------------ template
    @property
    def masks(self) -> Optional[ParameterMasks]:
        """The masks, once ``fit`` has started."""
        return self._masks

    @property
    def skipped(self) -> dict[str, str]:
        """The selected weights left dense, with the reason, once ``fit`` has started."""
        return dict(self._skipped)

    def _check_finite(self, tensors: list[Tensor], when: str) -> None:
        """Refuse NaN / Inf values in ``tensors`` (one per masked weight, local shards when sharded), e.g. those a mask
        update ranks. With sharded weights every rank raises when any rank finds one (one all-reduce of a flag), so
        that no rank is left waiting in a collective.

        Args:
            tensors: One per masked weight, in the masks' order.
            when: What was about to happen (``"mask update at step 40"``), for the message.

        Raises:
            ValueError: Naming every such weight (on the ranks whose shards hold them; the others say so).
        """
        masks = self._masks
        assert masks is not None
        before = f"{type(self).__name__}'s {when}"
        if masks.group is None:
            check_finite(dict(zip(masks.names, tensors)), before)
            return
        error: Optional[ValueError] = None
        try:
            check_finite(dict(zip(masks.names, tensors)), before)
        except ValueError as err:
            error = err
        flag = torch.tensor([0 if error is None else 1], device=masks.masks[0].device)
        if int(all_reduce_(flag, masks.group)) == 0:
            return
        if error is not None:
            raise error
        raise ValueError(
            f"refusing {before}: another rank's shards of the masked weights hold NaN or Inf values (its error names"
            " them). The model diverged or was loaded from a damaged file"
        )

    def _holds(self, params: Mapping[str, nn.Parameter]) -> bool:
        """Whether the current masks are on exactly these parameter objects, in this order."""
        return self._masks is not None and [id(p) for p in self._masks.params] == [id(p) for p in params.values()]

    def _use(self, params: Mapping[str, nn.Parameter]) -> ParameterMasks:
        """The masks for ``params``: the current ones if they are on these parameters, else new all-True masks."""
        if self._masks is None or not self._holds(params):
            self._masks = ParameterMasks(params, who=type(self).__name__)
            self._last_update_step = -1
            self._reset_schedule()
        return self._masks

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_sharding(trainer, self)  # the decision: core.sharding.SHARDED_SUPPORT

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        masks = self._use(self._select(trainer, pl_module))
        if self._pending_state is not None:
            self._load_pending()
        self._check_finite(masks.local_params, "masking (fit start)")
        self._attach(trainer)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.sanity_checking or self._masks is None:
            return
        step = schedule_step(trainer, pl_module)
        if step == self._last_update_step or not self._due(step):
            return
        self._last_update_step = step
        self._update(trainer, step)

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

    # ---------------------------------------------------------------------------------------------- state dict
    @override
    def state_dict(self) -> dict[str, Any]:
        if self._masks is None:
            return dict(self._pending_state or {})
        return {
            **self._masks.state_dict(),
            "last_update_step": self._last_update_step,
            **self._extra_state(),
            "config": self.resume_config(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = dict(state_dict)
        if self._masks is not None:
            self._load_pending()

    def _load_pending(self) -> None:
        """Restore the waiting state into the masks (which exist by now), and re-zero the weights."""
        masks, state = self._masks, self._pending_state
        assert masks is not None and state is not None
        self._pending_state = None
        if "masks" in state:
            masks.load_state_dict(state)
        self._last_update_step = int(state.get("last_update_step", -1))
        self._load_extra_state(state)
        masks.apply_to_weights()

    def _detach(self) -> None:
        """Remove the masks' optimizer hooks (the masks and the zeros they made stay)."""
        if self._masks is not None:
            self._masks.detach()
