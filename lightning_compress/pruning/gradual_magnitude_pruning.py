"""Gradual magnitude pruning (Zhu & Gupta, 2017) as a Lightning callback, with explicit masks and exact resume.

Example:
    >>> import lightning as L
    >>> trainer = L.Trainer(max_epochs=10, callbacks=[GradualMagnitudePruning(final_sparsity=0.9, end_epoch=8)])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn
from typing_extensions import override

from lightning_compress.core.distributed import broadcast_masks, is_distributed
from lightning_compress.core.mask_callback import MaskingCallback
from lightning_compress.core.metric_logging import log_metrics
from lightning_compress.core.selection import FilterFn, prunable_weights
from lightning_compress.core.target import compression_target, steps_per_epoch
from lightning_compress.core.validation import ArgumentErrors, is_number
from lightning_compress.pruning.magnitude import MagnitudeSelection, prune_by_magnitude_
from lightning_compress.pruning.schedule import ScheduleLike, resolve_schedule, schedule_problems, sparsity_at_step

__all__ = ["GradualMagnitudePruning"]

_SCOPES = ("global", "layer")


class GradualMagnitudePruning(MaskingCallback):
    r"""Prune the smallest-magnitude weights step by step until a target sparsity, and keep them at zero.

    At every ``update_every_n_steps``-th optimizer step between ``start_epoch`` and ``end_epoch`` the target sparsity
    follows ``schedule`` from ``initial_sparsity`` to ``final_sparsity``; the weights of smallest absolute value are
    masked (masks only grow) and zeroed in place. From ``end_epoch`` on exactly ``round(final_sparsity * n)`` of the
    ``n`` selected weights are zero (``scope="global"``; per layer with ``scope="layer"``) until training ends.
    Gradients of pruned weights are zeroed before every optimizer step (and before gradient clipping) and the weights
    kept at zero after it (see :class:`~lightning_compress.core.masks.ParameterMasks`), so no optimizer state revives
    them. The state dict keeps the standard parameter names.

    Epochs are counted in optimizer steps: ``steps_per_epoch = ceil(num_training_batches / accumulate_grad_batches)``
    (in manual optimisation, batches), with ``limit_train_batches`` applied; fractional epochs are allowed. Under
    ``Trainer(fast_dev_run=...)`` the final target applies from the first step, so a debug run exercises every path.

    Args:
        final_sparsity: Fraction of the selected weights pruned at the end, in [0, 1).
        initial_sparsity: Fraction pruned at ``start_epoch``, in [0, ``final_sparsity``].
        start_epoch: When pruning starts, in epochs (fractions allowed), >= 0.
        end_epoch: When ``final_sparsity`` is reached, in epochs, > ``start_epoch``; ``None`` = the end of training.
            When it falls on the end of training, the final masks apply from the last optimizer step on.
        schedule: ``"cubic"`` (Zhu & Gupta, the default), ``"linear"``, ``"constant"`` (all of it at ``start_epoch``)
            or a callable(progress in [0, 1]) -> fraction of the way from initial to final, in [0, 1].
        scope: ``"global"`` (one magnitude threshold over all selected weights) or ``"layer"`` (the same sparsity in
            every selected weight).
        update_every_n_steps: Optimizer steps between mask updates, >= 1.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing the modules whose ``weight`` is pruned; default:
            ``nn.Linear`` and ``nn.Conv1d/2d/3d``. Names are relative to ``pl_module.compression_target`` if the module
            has one, else to the LightningModule.
        skip_first_conv: Do not prune the first convolution.
        skip_classifier: Do not prune the last ``nn.Linear``.
        verbose: 0 silent, 1 one rank-zero line per update (``Sparsity: 40.00% -> 52.31%``), 2 also one line per layer.
        allow_config_change: Resume from a checkpoint written with other arguments (their masks and schedule
            state carried over, the change logged); False: such a resume is an error that lists the changes.

    The masks are final (:attr:`is_final`) once they prune ``final_sparsity``: from step
    ``min(end step, last step)`` on (:attr:`final_step`).

    Raises:
        ValueError: In ``__init__``, for any invalid argument (all of them listed at once). In ``on_fit_start``, if
            nothing is selected. In ``on_train_start``, if the schedule ends after training does. At a mask update,
            if a selected weight holds NaN or Inf. When ``fit`` resumes from a checkpoint written with other
            arguments (unless ``allow_config_change``).

    Example:
        >>> import lightning as L
        >>> pruning = GradualMagnitudePruning(final_sparsity=0.9, start_epoch=1, end_epoch=8, skip_first_conv=True)
        >>> trainer = L.Trainer(max_epochs=12, callbacks=[pruning])
    """

    _CONFIG = (
        "final_sparsity",
        "initial_sparsity",
        "start_epoch",
        "end_epoch",
        "scope",
        "filter_fn",
        "skip_first_conv",
        "skip_classifier",
    )
    _COMPARED = ("schedule", "update_every_n_steps")

    def __init__(
        self,
        final_sparsity: float,
        initial_sparsity: float = 0.0,
        start_epoch: float = 0,
        end_epoch: Optional[float] = None,
        schedule: ScheduleLike = "cubic",
        scope: Literal["global", "layer"] = "global",
        update_every_n_steps: int = 10,
        filter_fn: Optional[FilterFn] = None,
        skip_first_conv: bool = False,
        skip_classifier: bool = False,
        verbose: int = 1,
        allow_config_change: bool = False,
    ) -> None:
        _validate(
            final_sparsity, initial_sparsity, start_epoch, end_epoch, schedule, scope, update_every_n_steps, filter_fn,
            skip_first_conv, skip_classifier, verbose, allow_config_change,
        )  # fmt: skip
        self.final_sparsity = float(final_sparsity)
        self.initial_sparsity = float(initial_sparsity)
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.schedule = schedule
        self.scope = scope
        self.update_every_n_steps = update_every_n_steps
        self.filter_fn = filter_fn
        self.skip_first_conv = skip_first_conv
        self.skip_classifier = skip_classifier
        self.verbose = verbose
        self.allow_config_change = allow_config_change

        self._schedule_fn = resolve_schedule(schedule)
        self._start_step = 0
        self._end_step = 0
        self._last_step = 0  # the last optimizer step of the run: the final target applies from min(end, last) on
        self._sparsity = 0.0  # the target sparsity of the current masks
        self._schedule_known = False  # set in on_train_start
        self.last_selection: Optional[MagnitudeSelection] = None  # what the last mask update did

    @property
    def current_sparsity(self) -> float:
        """The target sparsity the masks are at now (the fraction of the selected weights they prune); it grows from
        ``initial_sparsity`` to ``final_sparsity`` along the schedule."""
        return self._sparsity

    @property
    @override
    def is_final(self) -> bool:
        """Whether the masks prune ``final_sparsity`` (the schedule's end)."""
        return self._masks is not None and self._sparsity >= self.final_sparsity

    @property
    @override
    def final_step(self) -> Optional[int]:
        """The optimizer step from which the masks prune ``final_sparsity`` (known from ``on_train_start``)."""
        return min(self._end_step, self._last_step) if self._schedule_known else None

    @override
    def describe_state(self) -> str:
        return (
            f"GradualMagnitudePruning: {self._sparsity:.2%} of the selected weights pruned (target"
            f" {self.final_sparsity:.2%}), {self._final_text()}"
        )

    @property
    def sparsity(self) -> float:
        """Deprecated name of :attr:`current_sparsity`."""
        warnings.warn(
            "`GradualMagnitudePruning.sparsity` is deprecated: it is `current_sparsity` (the arguments"
            " `initial_sparsity` / `final_sparsity` are the targets)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._sparsity

    # ------------------------------------------------------------------------------------------------------ hooks
    @override
    def _select(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, nn.Parameter]:
        return prunable_weights(
            compression_target(pl_module), self.filter_fn, self.skip_first_conv, self.skip_classifier
        )

    @override
    def _reset_schedule(self) -> None:
        self._sparsity = 0.0

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run:
            # a debug run of a few steps: prune to the final target at once so that it exercises the whole path
            self._start_step = self._end_step = self._last_step = 0
            self._schedule_known = True
            return
        total = trainer.estimated_stepping_batches
        needed = tuple(n for n, v in (("start_epoch", self.start_epoch), ("end_epoch", self.end_epoch)) if v)
        steps = steps_per_epoch(trainer, pl_module, needed)
        if math.isinf(total) and self.end_epoch is None:
            raise ValueError(
                "`end_epoch=None` means the end of training, but training has no end (`max_epochs=-1` and"
                " `max_steps=-1`); set `end_epoch` or `max_epochs`"
            )
        self._start_step = round(self.start_epoch * steps)
        self._end_step = int(total) if self.end_epoch is None else round(self.end_epoch * steps)
        self._end_step = max(self._end_step, self._start_step)
        if self._end_step > total:
            raise ValueError(
                f"the schedule ends at step {self._end_step} (`end_epoch={self.end_epoch}`, {steps} optimizer"
                f" steps per epoch) but training has only {int(total)} optimizer steps; lower `end_epoch` or train"
                " longer"
            )
        self._last_step = max(int(total) - 1, 0) if not math.isinf(total) else self._end_step
        if self._start_step > self._last_step:
            raise ValueError(
                f"the schedule starts at step {self._start_step} (`start_epoch={self.start_epoch}`, {steps}"
                f" optimizer steps per epoch) but training has only {int(total)} optimizer steps; lower `start_epoch`"
                " or train longer"
            )
        self._schedule_known = True

    # ------------------------------------------------------------------------------------------------- state dict
    @override
    def _extra_state(self) -> dict[str, Any]:
        return {"sparsity": self._sparsity}

    @override
    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        assert self._masks is not None
        self._sparsity = float(state.get("sparsity", self._masks.sparsity()))

    # ---------------------------------------------------------------------------------------------------- helpers
    @override
    def _due(self, step: int) -> bool:
        if step < self._start_step:
            return False
        if step >= min(self._end_step, self._last_step):
            return self._sparsity < self.final_sparsity
        return (step - self._start_step) % self.update_every_n_steps == 0

    def _target(self, step: int) -> float:
        if step >= min(self._end_step, self._last_step):
            return self.final_sparsity
        return sparsity_at_step(
            step, self._start_step, self._end_step, self.initial_sparsity, self.final_sparsity, self._schedule_fn
        )

    @override
    @torch.no_grad()
    def _update(self, trainer: pl.Trainer, step: int) -> None:
        masks = self._masks
        assert masks is not None
        target = self._target(step)
        if target <= self._sparsity:
            return
        before_total, before_layers = masks.sparsity(), masks.layer_sparsity()
        try:  # the selection finds NaN / Inf weights itself (no extra pass); the check below names them in detail
            self.last_selection = prune_by_magnitude_(masks, target, self.scope)
        except ValueError:
            self._check_finite(masks.local_params, f"mask update at step {step}")
            raise
        if masks.group is None and is_distributed():  # DDP: rank 0's masks on every replica
            masks.set_masks(broadcast_masks(masks.masks))
        masks.apply_to_weights()
        self._sparsity = target

        after_layers = masks.layer_sparsity()
        after_total = masks.sparsity()
        metrics = {"compress/sparsity": after_total}
        metrics.update({f"compress/sparsity/{name}": value for name, value in after_layers.items()})
        log_metrics(trainer, metrics)
        if self.verbose >= 1:
            rank_zero_info(f"Sparsity: {before_total:.2%} -> {after_total:.2%} (step {step})")
        if self.verbose >= 2:
            for name, value in after_layers.items():
                rank_zero_info(f"  {name}: {before_layers[name]:.2%} -> {value:.2%}")


def _validate(
    final_sparsity: Any,
    initial_sparsity: Any,
    start_epoch: Any,
    end_epoch: Any,
    schedule: Any,
    scope: Any,
    update_every_n_steps: Any,
    filter_fn: Any,
    skip_first_conv: Any,
    skip_classifier: Any,
    verbose: Any,
    allow_config_change: Any,
) -> None:
    """Raise one ValueError naming every bad constructor argument, its value and what is allowed."""
    errors = ArgumentErrors()
    final_ok = errors.interval("final_sparsity", final_sparsity, 0, 1)
    if errors.interval("initial_sparsity", initial_sparsity, 0, 1) and final_ok:
        must = f"<= `final_sparsity` ({final_sparsity})"
        errors.require(initial_sparsity <= final_sparsity, "initial_sparsity", must, initial_sparsity)
    start_ok = errors.number("start_epoch", start_epoch, minimum=0)
    if end_epoch is not None:
        bound = f" ({start_epoch})" if start_ok else ""
        errors.require(is_number(end_epoch) and (not start_ok or end_epoch > start_epoch), "end_epoch",
                       f"a number > `start_epoch`{bound} or None", end_epoch)  # fmt: skip
    errors.extend(schedule_problems(schedule))
    errors.one_of("scope", scope, _SCOPES)
    errors.int("update_every_n_steps", update_every_n_steps)
    errors.callable("filter_fn", filter_fn, "(module, fqn) -> bool")
    errors.bools(
        skip_first_conv=skip_first_conv, skip_classifier=skip_classifier, allow_config_change=allow_config_change
    )
    errors.verbose(verbose)
    errors.raise_if_any()
