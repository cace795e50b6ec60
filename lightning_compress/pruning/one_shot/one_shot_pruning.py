"""One-shot pruning (magnitude, Wanda, SparseGPT) at the start of ``fit``, as a Lightning callback whose masks then
hold through the fine-tune.

Example:
    >>> import lightning as L
    >>> trainer = L.Trainer(max_epochs=1, callbacks=[OneShotPruning(method="sparsegpt", sparsity=0.5)])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_compress.core.batches import call_on_batch, stage_dataloader
from lightning_compress.core.distributed import broadcast_masks, broadcast_tensors_
from lightning_compress.core.mask_callback import MaskingCallback
from lightning_compress.core.masks import ParameterMasks
from lightning_compress.core.metric_logging import log_metrics
from lightning_compress.core.selection import FilterFn
from lightning_compress.core.target import compression_target
from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.pruning.one_shot.ignored_layers import IgnoreSpec, check_ignore
from lightning_compress.pruning.one_shot.prune import ForwardFn, check_method_arguments, one_shot_prune
from lightning_compress.sparsity.pattern import pattern_name

__all__ = ["OneShotPruning"]


class OneShotPruning(MaskingCallback):
    r"""Prune the model in one shot when ``fit`` starts, then keep the pruned weights at exactly zero.

    In ``on_fit_start`` (the model is on its device, before any step and before the sanity check) the weights selected
    by ``filter_fn`` are pruned with :func:`~lightning_compress.pruning.one_shot.prune.one_shot_prune`, calibrated on
    the first ``calibration_batches`` batches of ``dataloader`` (default: the trainer's train dataloader, as ``fit`` was
    given it). The masks go to the shared masking core (:class:`~lightning_compress.core.masks.ParameterMasks`):
    gradients of pruned weights are zeroed before every optimizer step and the weights kept at zero after it, so a
    fine-tune afterwards keeps them. The masks are saved in checkpoints (1 bit per weight); a resumed run restores them
    and does not prune again, and neither does a second ``fit`` with the same callback.

    With several processes, rank 0's pruned weights and masks are broadcast to the others.

    Args:
        method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
        sparsity: Unstructured target per layer, in [0, 1); or give ``n`` and ``m``.
        n: N:M, weights kept per group of ``m`` consecutive inputs.
        m: N:M group size.
        calibration_batches: Batches of calibration data, >= 1.
        dataloader: Calibration data (any iterable of batches); default: the train dataloader.
        filter_fn: ``filter_fn(module, fqn) -> bool`` choosing the layers to prune; default: ``nn.Linear`` and
            ``nn.Conv1d/2d/3d``. Names are relative to ``pl_module.compression_target`` if the module has one, else to
            the LightningModule.
        skip_first_conv: Do not prune the first convolution.
        skip_classifier: Do not prune the last ``nn.Linear``.
        blocks: Blocks to process one after another: ``"auto"``, a qualified name, or None (see
            :func:`~lightning_compress.pruning.one_shot.prune.one_shot_prune`).
        forward_fn: ``forward_fn(model, batch)``; default: for a LightningModule ``model(inputs)``, for other modules
            :func:`~lightning_compress.core.batches.call_on_batch`; ``inputs`` is the batch without its labels
            (a dict without ``labels``, or the first item of a tuple).
        blocksize: SparseGPT's lazy-update block, >= 1 (a multiple of ``m`` for N:M).
        percdamp: SparseGPT's dampening, a fraction of the mean Hessian diagonal, >= 0.
        ignore: Selected layers left dense: ``"auto"`` (the output head and weights tied to an embedding) or module
            names / ``fnmatch`` patterns (see :func:`~lightning_compress.pruning.one_shot.prune.one_shot_prune`).
        verbose: 0 silent, 1 one rank-zero line (``One-shot sparsegpt 50%: sparsity 0.00% -> 50.00% ...``), 2 also one
            line per layer.
        allow_config_change: Resume from a checkpoint written with other arguments (its masks carried over, the
            change logged); False: such a resume is an error that lists the changes.

    The masks are final (:attr:`is_final`) as soon as they exist: from step 0.

    Raises:
        ValueError: In ``__init__``, for any invalid argument (all of them listed at once). In ``on_fit_start``, if
            the calibration data is empty, or no selected layer can be pruned. When ``fit`` resumes from a checkpoint
            written with other arguments (unless ``allow_config_change``).

    Example:
        >>> import lightning as L
        >>> pruning = OneShotPruning(method="wanda", n=2, m=4, calibration_batches=8, skip_classifier=True)
        >>> trainer = L.Trainer(max_epochs=1, callbacks=[pruning])
    """

    _CONFIG = ("method", "sparsity", "n", "m", "filter_fn", "skip_first_conv", "skip_classifier")
    _COMPARED = ("calibration_batches", "blocks", "blocksize", "percdamp")

    def __init__(
        self,
        method: str = "sparsegpt",
        sparsity: Optional[float] = None,
        n: Optional[int] = None,
        m: Optional[int] = None,
        calibration_batches: int = 16,
        dataloader: Optional[Iterable[Any]] = None,
        filter_fn: Optional[FilterFn] = None,
        skip_first_conv: bool = False,
        skip_classifier: bool = False,
        blocks: Optional[str] = "auto",
        forward_fn: Optional[ForwardFn] = None,
        blocksize: int = 128,
        percdamp: float = 0.01,
        verbose: int = 1,
        allow_config_change: bool = False,
        ignore: IgnoreSpec = "auto",
    ) -> None:
        errors = ArgumentErrors()
        check_method_arguments(
            errors, method, sparsity, n, m, calibration_batches, filter_fn, skip_first_conv, skip_classifier,
            forward_fn, blocksize, percdamp,
        )  # fmt: skip
        errors.require(blocks is None or isinstance(blocks, str), "blocks", "'auto', None or a module name", blocks)
        errors.verbose(verbose)
        errors.bool("allow_config_change", allow_config_change)
        check_ignore(errors, ignore)
        errors.raise_if_any()
        self.method = method
        self.sparsity = None if sparsity is None else float(sparsity)
        self.n = n
        self.m = m
        self.calibration_batches = calibration_batches
        self.dataloader = dataloader
        self.filter_fn = filter_fn
        self.skip_first_conv = skip_first_conv
        self.skip_classifier = skip_classifier
        self.blocks = blocks
        self.forward_fn = forward_fn
        self.blocksize = blocksize
        self.percdamp = percdamp
        self.verbose = verbose
        self.ignore = ignore if isinstance(ignore, str) else tuple(ignore)
        self.allow_config_change = allow_config_change

        self._skipped: dict[str, str] = {}
        self._seconds = 0.0

    @property
    @override
    def is_final(self) -> bool:
        """Whether the model is pruned (one shot: final as soon as it is)."""
        return self._masks is not None

    @property
    @override
    def final_step(self) -> Optional[int]:
        return 0

    @override
    def describe_state(self) -> str:
        pruned = f"sparsity {self._masks.sparsity():.2%}" if self._masks is not None else "not pruned yet"
        pattern = pattern_name(self.sparsity, self.n, self.m)
        return f"OneShotPruning {self.method} {pattern}: {pruned}, {self._final_text()}"

    # ------------------------------------------------------------------------------------------------------ hooks
    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        target = compression_target(pl_module)
        state = self._pending_state
        if state is not None and "masks" in state:  # a resumed run: the saved masks, no pruning again
            self._use({name: target.get_parameter(name) for name in state["masks"]})
            self._load_pending()
        elif self._masks is None or not self._holds(self._current_params(target)):
            self._prune(trainer, target)
        assert self._masks is not None
        self._masks.apply_to_weights()
        self._attach(trainer)

    # ------------------------------------------------------------------------------------------------- state dict
    @override
    def _extra_state(self) -> dict[str, Any]:
        return {"skipped": dict(self._skipped), "seconds": self._seconds}

    @override
    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self._skipped = dict(state.get("skipped", {}))
        self._seconds = float(state.get("seconds", 0.0))

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The masks' names come with the state: they are built from it in `on_fit_start`.
        self._pending_state = dict(state_dict)

    # ---------------------------------------------------------------------------------------------------- helpers
    def _current_params(self, target: nn.Module) -> dict[str, nn.Parameter]:
        assert self._masks is not None
        try:
            return {name: target.get_parameter(name) for name in self._masks.names}
        except AttributeError:
            return {}

    def _prune(self, trainer: pl.Trainer, target: nn.Module) -> None:
        loader = self.dataloader
        if loader is None and self.method != "magnitude":
            loader = _train_dataloader(trainer)
        forward = self.forward_fn
        if forward is None and isinstance(target, pl.LightningModule):
            forward = _lightning_forward
        result = one_shot_prune(
            target, loader, method=self.method, sparsity=self.sparsity, n=self.n, m=self.m,
            calibration_batches=self.calibration_batches, filter_fn=self.filter_fn,
            skip_first_conv=self.skip_first_conv, skip_classifier=self.skip_classifier, blocks=self.blocks,
            forward_fn=forward, blocksize=self.blocksize, percdamp=self.percdamp, ignore=self.ignore,
        )  # fmt: skip
        params = {name: target.get_parameter(name) for name in result.masks}
        masks = broadcast_masks(list(result.masks.values()))
        broadcast_tensors_(list(params.values()))  # SparseGPT changes the kept weights too
        self._masks = ParameterMasks(params, dict(zip(result.masks, masks)))
        self._skipped, self._seconds = dict(result.skipped), result.seconds

        sparsity, layers = self._masks.sparsity(), self._masks.layer_sparsity()
        log_metrics(trainer, {"compress/sparsity": sparsity})
        if self.skipped:
            listed = ", ".join(f"{name}: {why}" for name, why in self._skipped.items())
            rank_zero_warn(f"OneShotPruning left {len(self._skipped)} selected layer(s) dense: {listed}")
        if self.verbose >= 1:
            rank_zero_info(
                f"One-shot {self.method} {pattern_name(self.sparsity, self.n, self.m)}: sparsity 0.00% ->"
                f" {sparsity:.2%} over {len(layers)} weights, {result.calibration_batches} calibration batches,"
                f" {result.seconds:.1f} s"
            )
        if self.verbose >= 2:
            for name, value in layers.items():
                rank_zero_info(f"  {name}: 0.00% -> {value:.2%}")


def _lightning_forward(module: nn.Module, batch: Any) -> Any:
    """A LightningModule's ``forward(inputs)``: the batch without its labels, as one argument."""
    return call_on_batch(module, batch, whole_inputs=True)


def _train_dataloader(trainer: pl.Trainer) -> Iterable[Any]:
    """The train dataloader ``fit`` was given, before the fit loop has set it up."""
    try:
        loader = stage_dataloader(trainer, "fit")
    except ValueError as err:
        raise ValueError(
            "OneShotPruning needs calibration data: pass `dataloader=` or give `fit` a train dataloader"
        ) from err
    if hasattr(loader, "__len__") and len(loader) == 0:
        raise ValueError("`dataloader` is empty: the train dataloader gives no calibration batch")
    return loader
