"""Gradual magnitude pruning (Zhu & Gupta, 2017) as a Lightning callback, with explicit masks and exact resume.

Example:
    >>> import lightning as L
    >>> trainer = L.Trainer(max_epochs=10, callbacks=[GradualMagnitudePruning(final_sparsity=0.9, end_epoch=8)])
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import Tensor
from typing_extensions import override

from lightning_compress.magnitude import global_magnitude_masks, magnitude_mask
from lightning_compress.masking import ParameterMasks, broadcast_masks, compression_target, schedule_step
from lightning_compress.masking_callback import MaskingCallback
from lightning_compress.prunable_weights import FilterFn, prunable_weights
from lightning_compress.sparsity_schedule import ScheduleLike, resolve_schedule, sparsity_at_step

__all__ = ["GradualMagnitudePruning"]

_SCOPES = ("global", "layer")


class GradualMagnitudePruning(MaskingCallback):
    r"""Prune the smallest-magnitude weights step by step until a target sparsity, and keep them at zero.

    At every ``update_every_n_steps``-th optimizer step between ``start_epoch`` and ``end_epoch`` the target sparsity
    follows ``schedule`` from ``initial_sparsity`` to ``final_sparsity``; the weights of smallest absolute value are
    masked (masks only grow) and zeroed in place. From ``end_epoch`` on exactly ``round(final_sparsity * n)`` of the
    ``n`` selected weights are zero (``scope="global"``; per layer with ``scope="layer"``) until training ends.
    Gradients of pruned weights are zeroed before every optimizer step (and before gradient clipping) and the weights
    kept at zero after it (see :class:`~lightning_compress.masking.ParameterMasks`), so no optimizer state revives
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

    Raises:
        ValueError: In ``__init__``, for any invalid argument (all of them listed at once). In ``on_fit_start``, if
            nothing is selected. In ``on_train_start``, if the schedule ends after training does.

    Example:
        >>> import lightning as L
        >>> pruning = GradualMagnitudePruning(final_sparsity=0.9, start_epoch=1, end_epoch=8, skip_first_conv=True)
        >>> trainer = L.Trainer(max_epochs=12, callbacks=[pruning])
    """

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
    ) -> None:
        errors = _validate(
            final_sparsity, initial_sparsity, start_epoch, end_epoch, schedule, scope, update_every_n_steps, filter_fn,
            skip_first_conv, skip_classifier, verbose,
        )  # fmt: skip
        if errors:
            raise ValueError("; ".join(errors))
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

        self._schedule_fn = resolve_schedule(schedule)
        self._masks: Optional[ParameterMasks] = None
        self._pending_state: Optional[dict[str, Any]] = None
        self._start_step = 0
        self._end_step = 0
        self._last_step = 0  # the last optimizer step of the run: the final target applies from min(end, last) on
        self._last_update_step = -1
        self._sparsity = 0.0  # the target sparsity of the current masks

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            final_sparsity=self.final_sparsity,
            initial_sparsity=self.initial_sparsity,
            start_epoch=self.start_epoch,
            end_epoch=self.end_epoch,
            scope=self.scope,
            filter_fn=getattr(self.filter_fn, "__qualname__", None),
            skip_first_conv=self.skip_first_conv,
            skip_classifier=self.skip_classifier,
        )

    @property
    def sparsity(self) -> float:
        """The current target sparsity (the fraction of selected weights the masks prune)."""
        return self._sparsity

    # ------------------------------------------------------------------------------------------------------ hooks
    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = prunable_weights(
            compression_target(pl_module), self.filter_fn, self.skip_first_conv, self.skip_classifier
        )
        if self._masks is None or [id(p) for p in self._masks.params] != [id(p) for p in params.values()]:
            self._masks = ParameterMasks(params)
            self._sparsity, self._last_update_step = 0.0, -1
        if self._pending_state is not None:
            self._load_pending()
        self._masks.attach(trainer.optimizers)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run:
            # a debug run of a few steps: prune to the final target at once so that it exercises the whole path
            self._start_step = self._end_step = self._last_step = 0
            return
        batches = trainer.num_training_batches
        accumulate = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        total = trainer.estimated_stepping_batches
        if math.isinf(batches) and (self.start_epoch or self.end_epoch is not None):
            raise ValueError(
                "`start_epoch` and `end_epoch` need a train dataloader with a length; this one has none"
                " (an iterable dataset?); give it a `__len__`"
            )
        if math.isinf(total) and self.end_epoch is None:
            raise ValueError(
                "`end_epoch=None` means the end of training, but training has no end (`max_epochs=-1` and"
                " `max_steps=-1`); set `end_epoch` or `max_epochs`"
            )
        steps_per_epoch = math.ceil(batches / accumulate) if not math.isinf(batches) else 0
        self._start_step = round(self.start_epoch * steps_per_epoch)
        self._end_step = int(total) if self.end_epoch is None else round(self.end_epoch * steps_per_epoch)
        self._end_step = max(self._end_step, self._start_step)
        if self._end_step > total:
            raise ValueError(
                f"the schedule ends at step {self._end_step} (`end_epoch={self.end_epoch}`, {steps_per_epoch} optimizer"
                f" steps per epoch) but training has only {int(total)} optimizer steps; lower `end_epoch` or train"
                " longer"
            )
        self._last_step = max(int(total) - 1, 0) if not math.isinf(total) else self._end_step
        if self._start_step > self._last_step:
            raise ValueError(
                f"the schedule starts at step {self._start_step} (`start_epoch={self.start_epoch}`, {steps_per_epoch}"
                f" optimizer steps per epoch) but training has only {int(total)} optimizer steps; lower `start_epoch`"
                " or train longer"
            )

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.sanity_checking or self._masks is None:
            return
        step = schedule_step(trainer, pl_module)
        if step == self._last_update_step or not self._due(step):
            return
        self._update(trainer, step)

    # ------------------------------------------------------------------------------------------------- state dict
    @override
    def state_dict(self) -> dict[str, Any]:
        if self._masks is None:
            return dict(self._pending_state or {})
        return {
            **self._masks.state_dict(),
            "last_update_step": self._last_update_step,
            "sparsity": self._sparsity,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks before `on_fit_start` builds the masks: keep the state until then.
        self._pending_state = dict(state_dict)
        if self._masks is not None:
            self._load_pending()

    # ---------------------------------------------------------------------------------------------------- helpers
    def _load_pending(self) -> None:
        assert self._masks is not None and self._pending_state is not None
        state, self._pending_state = self._pending_state, None
        if "masks" in state:
            self._masks.load_state_dict(state)
            self._masks.apply_to_weights()
        self._last_update_step = int(state.get("last_update_step", -1))
        self._sparsity = float(state.get("sparsity", self._masks.sparsity()))

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

    @torch.no_grad()
    def _update(self, trainer: pl.Trainer, step: int) -> None:
        masks = self._masks
        assert masks is not None
        self._last_update_step = step
        target = self._target(step)
        if target <= self._sparsity:
            return
        before_total, before_layers = masks.sparsity(), masks.layer_sparsity()
        if self.scope == "global":
            new = global_magnitude_masks(masks.params, target, masks.masks)
        else:
            new = [magnitude_mask(p, target, m) for p, m in zip(masks.params, masks.masks)]
        masks.set_masks(broadcast_masks(new))
        masks.apply_to_weights()
        self._sparsity = target

        after_layers = masks.layer_sparsity()
        after_total = masks.sparsity()
        metrics = {"compress/sparsity": after_total}
        metrics.update({f"compress/sparsity/{name}": value for name, value in after_layers.items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
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
) -> list[str]:
    """Every problem with the constructor arguments, as messages naming the argument, the value and what is allowed."""
    errors = []

    def is_number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    final_ok = is_number(final_sparsity) and 0.0 <= final_sparsity < 1.0
    if not final_ok:
        errors.append(f"`final_sparsity` must be in [0, 1), got {final_sparsity!r}")
    if not (is_number(initial_sparsity) and 0.0 <= initial_sparsity < 1.0):
        errors.append(f"`initial_sparsity` must be in [0, 1), got {initial_sparsity!r}")
    elif final_ok and initial_sparsity > final_sparsity:
        errors.append(
            f"`initial_sparsity` must be <= `final_sparsity` ({final_sparsity}), got {initial_sparsity!r}"
        )
    start_ok = is_number(start_epoch) and start_epoch >= 0
    if not start_ok:
        errors.append(f"`start_epoch` must be a number >= 0, got {start_epoch!r}")
    if end_epoch is not None:
        if not is_number(end_epoch):
            errors.append(f"`end_epoch` must be a number > `start_epoch` or None, got {end_epoch!r}")
        elif start_ok and end_epoch <= start_epoch:
            errors.append(f"`end_epoch` must be > `start_epoch` ({start_epoch}) or None, got {end_epoch!r}")
    if callable(schedule):
        for p in (0.0, 1.0):
            try:
                value = float(schedule(p))
            except Exception as err:  # a schedule that cannot be called at progress 0 or 1 is reported, not raised
                errors.append(
                    f"`schedule` must be callable as schedule(progress) -> [0, 1]; schedule({p}) raised {err!r}"
                )
                break
            if not 0.0 <= value <= 1.0:
                errors.append(f"`schedule` must return values in [0, 1], got schedule({p}) = {value}")
                break
    elif schedule not in ("cubic", "linear", "constant"):
        errors.append(f"`schedule` can be cubic, linear, constant or a callable(progress) -> [0, 1], got {schedule!r}")
    if scope not in _SCOPES:
        errors.append(f"`scope` can be global or layer, got {scope!r}")
    if not (isinstance(update_every_n_steps, int) and not isinstance(update_every_n_steps, bool)) or (
        update_every_n_steps < 1
    ):
        errors.append(f"`update_every_n_steps` must be an int >= 1, got {update_every_n_steps!r}")
    if filter_fn is not None and not callable(filter_fn):
        errors.append(f"`filter_fn` must be a callable(module, fqn) -> bool or None, got {filter_fn!r}")
    for name, value in (("skip_first_conv", skip_first_conv), ("skip_classifier", skip_classifier)):
        if not isinstance(value, bool):
            errors.append(f"`{name}` must be a bool, got {value!r}")
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        errors.append(f"`verbose` can be 0, 1 or 2, got {verbose!r}")
    return errors
