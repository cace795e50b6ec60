"""Post-training INT8 quantization as a Lightning callback: calibrate at the end of ``fit`` (or before ``validate`` /
``test`` when nothing was trained), log the INT8 model's metrics beside the float ones, hand back the INT8 model.

Example:
    >>> import lightning.pytorch as pl
    >>> ptq = PostTrainingQuantization(calibration_batches=16)
    >>> trainer = pl.Trainer(max_epochs=3, callbacks=[ptq])  # fit, then ptq.quantized_model
    >>> pl.Trainer(callbacks=[PostTrainingQuantization()]).test  # doctest: +ELLIPSIS
    <bound method ...>
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn
from typing_extensions import override

from lightning_compress.core.batches import call_model, move_data_to_device, stage_dataloader
from lightning_compress.core.metric_logging import log_metrics
from lightning_compress.core.selection import FilterFn
from lightning_compress.core.sharding import check_sharding
from lightning_compress.core.target import find_network
from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.quantization.calibration import logits_of
from lightning_compress.quantization.ptq_graph import CalibratedGraph, calibrate, validate_ptq_arguments
from lightning_compress.quantization.qat import _metrics_host
from lightning_compress.quantization.serialization import save_quantized

__all__ = ["PostTrainingQuantization"]


class PostTrainingQuantization(Callback):
    """Static (or dynamic) INT8 post-training quantization of the LightningModule's network, no training needed.

    When it calibrates:
        * at the end of ``fit``, on the first ``calibration_batches`` batches of the training loader (or of
          ``calibration_data``), then the INT8 model's validation metrics are logged as ``val_int8/<metric>``;
        * before ``validate`` / ``test`` (when no INT8 model exists yet, or the weights changed since, e.g. a checkpoint
          was loaded), on ``calibration_data`` if given, else the training loader of the datamodule (or of the
          LightningModule, or of this Trainer's earlier ``fit``); with none of them it refuses with a clear error.
          It never calibrates on the data it evaluates.
          Its metrics are logged as ``val_int8/<metric>`` / ``test_int8/<metric>`` beside ``val/`` / ``test/``.

    The network is found as by :class:`~lightning_compress.QuantizationAwareTraining` (a distillation module's
    student; a ``ClassificationModule``'s ``model``). It is not modified: the INT8 model is a new graph,
    :attr:`quantized_model` (compiled with inductor freezing when ``compile_int8``); metrics are computed with the
    reference graph (the same numbers, no compilation for each new input shape). Pruned weights stay exactly zero
    (symmetric weight quantization maps 0 to 0; BatchNorm folding scales rows).

    Args:
        calibration_batches: Batches to calibrate on.
        observer: ``"histogram"``, ``"minmax"``, ``"moving_average"`` or ``"percentile"``.
        scheme: ``"static"`` or ``"dynamic"`` (Linear layers only, activation scales per batch).
        percentile: For ``observer="percentile"``.
        smoothquant_alpha: SmoothQuant's alpha for the Linear layers, or None (off).
        filter_fn: ``filter_fn(layer, fqn) -> bool``: False keeps a layer in float.
        skip_first_conv: Keep the first convolution in float.
        skip_classifier: Keep the last ``nn.Linear`` in float.
        calibration_data: Batches to calibrate on instead of the training loader (any form
            :func:`~lightning_compress.quantize` takes).
        attribute: The submodule of the LightningModule to quantize; None: found as above.
        evaluate_quantized: Log the INT8 model's metrics (needs a module with ``split_batch`` and
            ``val_metrics`` / ``test_metrics``, as a ``ClassificationModule``).
        compile_int8: Compile :attr:`quantized_model` (the fast path; its first call compiles).
        verbose: 0 silent, 1 a line per calibration and the INT8 metrics.

    Raises:
        ValueError: On any bad argument (all reported at once).

    Example:
        >>> ptq = PostTrainingQuantization(observer="percentile", skip_first_conv=True)
    """

    def __init__(
        self,
        calibration_batches: int = 32,
        observer: str = "histogram",
        scheme: str = "static",
        percentile: float = 99.99,
        smoothquant_alpha: Optional[float] = None,
        filter_fn: Optional[FilterFn] = None,
        skip_first_conv: bool = False,
        skip_classifier: bool = False,
        calibration_data: Any = None,
        attribute: Optional[str] = None,
        evaluate_quantized: bool = True,
        compile_int8: bool = True,
        verbose: int = 1,
    ) -> None:
        errors = ArgumentErrors("PostTrainingQuantization: ")
        validate_ptq_arguments(
            errors, calibration_batches=calibration_batches, observer=observer, scheme=scheme, percentile=percentile,
            smoothquant_alpha=smoothquant_alpha, filter_fn=filter_fn, skip_first_conv=skip_first_conv,
            skip_classifier=skip_classifier, evaluate_quantized=evaluate_quantized, compile_int8=compile_int8,
            verbose=verbose,
        )  # fmt: skip
        errors.require(calibration_batches is not None, "calibration_batches", "an int >= 1", calibration_batches)
        errors.require(attribute is None or (isinstance(attribute, str) and bool(attribute)), "attribute",
                       "a submodule name or None", attribute)  # fmt: skip
        if calibration_data is not None and not isinstance(calibration_data, (Tensor, Mapping, Iterable)):
            errors.add(
                "`calibration_data` must be a DataLoader, an iterable of batches, a dict batch, a tensor or None,"
                f" got {type(calibration_data).__name__}"
            )
        errors.raise_if_any()
        self.calibration_batches = calibration_batches
        self.observer, self.scheme, self.percentile = observer, scheme, percentile
        self.smoothquant_alpha = smoothquant_alpha
        self.filter_fn, self.skip_first_conv, self.skip_classifier = filter_fn, skip_first_conv, skip_classifier
        self.calibration_data = calibration_data
        self.attribute = attribute
        self.evaluate_quantized, self.compile_int8, self.verbose = evaluate_quantized, compile_int8, verbose

        self.quantized_model: Optional[nn.Module] = None
        self.quantized_metrics: dict[str, float] = {}
        self.calibrated: Optional[CalibratedGraph] = None
        self.calibrated_on: Optional[str] = None  # "calibration_data" or the loader's source, for the record
        self._reference: Optional[nn.Module] = None
        self._fingerprint: Optional[tuple] = None
        self._metrics: Optional[Any] = None
        self._fit_loader: Optional[Any] = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(scheme=self.scheme, attribute=self.attribute)

    def save_quantized(self, path: Union[str, os.PathLike]) -> None:
        """Save :attr:`quantized_model` with :func:`~lightning_compress.save_quantized`.

        Raises:
            RuntimeError: Before anything was calibrated.
        """
        if self.quantized_model is None or self.calibrated is None:
            raise RuntimeError("there is no INT8 model yet: it is calibrated at the end of `fit` or before `test`")
        save_quantized(self.quantized_model, path, self.calibrated.example)

    # ------------------------------------------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_sharding(trainer, self)  # refuses sharded strategies: core.sharding.SHARDED_SUPPORT

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._quantize(trainer, pl_module, "fit")
        host = _metrics_host(pl_module, "val_metrics")
        loaders = trainer.val_dataloaders
        if not (self.evaluate_quantized and host is not None and loaders is not None and self._reference is not None):
            return
        metrics = host.val_metrics.clone(prefix="val_int8/").to(pl_module.device)
        metrics.reset()
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            for batch in loader:
                self._update(host, batch, metrics)
        values = {k: float(v) for k, v in metrics.compute().items()}
        self.quantized_metrics.update(values)
        log_metrics(trainer, values)
        if self.verbose:
            rank_zero_info("PTQ: INT8 model " + ", ".join(f"{k} = {v:.4f}" for k, v in values.items()))

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._metrics = None
        if trainer.sanity_checking or trainer.state.fn == "fit":
            return  # during fit the float model is being trained; the INT8 model is made at its end
        self._start_eval(trainer, pl_module, "validate", "val")

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._metrics = None
        self._start_eval(trainer, pl_module, "test", "test")

    @override
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._batch_end(pl_module, batch, "val_metrics")

    @override
    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._batch_end(pl_module, batch, "test_metrics")

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(pl_module)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(pl_module)

    # ---------------------------------------------------------------------------------------------------- helpers
    def _start_eval(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, prefix: str) -> None:
        self._quantize(trainer, pl_module, stage)
        host = _metrics_host(pl_module, f"{prefix}_metrics")
        if self.evaluate_quantized and host is not None and getattr(host, f"{prefix}_metrics") is not None:
            self._metrics = getattr(host, f"{prefix}_metrics").clone(prefix=f"{prefix}_int8/").to(pl_module.device)
            self._metrics.reset()

    def _batch_end(self, pl_module: pl.LightningModule, batch: Any, name: str) -> None:
        host = _metrics_host(pl_module, name)
        if self._metrics is not None and host is not None:
            self._update(host, batch, self._metrics)

    def _epoch_end(self, pl_module: pl.LightningModule) -> None:
        if self._metrics is None:
            return
        values = {k: float(v) for k, v in self._metrics.compute().items()}
        self.quantized_metrics.update(values)
        pl_module.log_dict(values)
        self._metrics = None

    def _network(self, pl_module: pl.LightningModule) -> nn.Module:
        network, path = find_network(pl_module, self.attribute)
        if isinstance(network, pl.LightningModule):
            raise ValueError(
                f"PostTrainingQuantization exports a network, and found the LightningModule {type(network).__name__}"
                ' itself: pass `attribute="<name of its network>"`'
            )
        return network

    def _quantize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Calibrate unless the INT8 model is of the weights as they are now."""
        network = self._network(pl_module)
        fingerprint = tuple((id(t), t._version) for t in (*network.parameters(), *network.buffers()))
        if self.quantized_model is not None and fingerprint == self._fingerprint:
            return
        data, source = self._calibration_data(trainer, pl_module, stage)
        on_cpu = all(t.device.type == "cpu" for t in network.parameters())
        float_net = network if on_cpu else copy.deepcopy(network).cpu()
        self.calibrated = calibrate(
            float_net, data, self.calibration_batches, self.observer, self.scheme, self.percentile,
            self.smoothquant_alpha, self.filter_fn, self.skip_first_conv, self.skip_classifier,
        )  # fmt: skip
        self._reference = self.calibrated.int8(compile=False)
        self.quantized_model = self.calibrated.int8(compile=True) if self.compile_int8 else self._reference
        self._fingerprint, self.calibrated_on = fingerprint, source
        if self.verbose:
            rank_zero_info(
                f"PTQ: {type(network).__name__} -> {self.scheme} INT8 ({len(self.calibrated.quantized)} layers,"
                f" {self.calibrated.batches} batches of {source}, {self.observer} observer,"
                f" {self.calibrated.seconds:.1f} s)"
            )

    def _calibration_data(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> tuple[Any, str]:
        evaluated = _evaluated_loaders(trainer, stage)
        if self.calibration_data is not None:
            if any(self.calibration_data is loader for loader in evaluated):
                raise ValueError(
                    f"PostTrainingQuantization: `calibration_data` is the {stage} dataloader; it never calibrates on"
                    " the data it evaluates: pass training (or other held-out) batches"
                )
            return self.calibration_data, "calibration_data"
        if stage == "fit":
            self._fit_loader = stage_dataloader(trainer, "fit")
            return self._fit_loader, "the training loader"
        datamodule = trainer.datamodule
        if datamodule is not None and is_overridden("train_dataloader", datamodule):
            try:
                return datamodule.train_dataloader(), "the datamodule's training loader"
            except Exception:  # noqa: BLE001 -- a datamodule set up for `test` only: set up its training split
                datamodule.setup("fit")
                return datamodule.train_dataloader(), "the datamodule's training loader"
        if is_overridden("train_dataloader", pl_module):
            return pl_module.train_dataloader(), "the LightningModule's training loader"
        if self._fit_loader is not None:  # the training loader of an earlier `fit`
            return self._fit_loader, "the training loader"
        raise RuntimeError(
            f"PostTrainingQuantization calibrates before `{stage}` when nothing was trained, and has no calibration"
            " data: pass `calibration_data=` (training batches) to the callback, or give the Trainer a datamodule"
            " with a `train_dataloader`. It never calibrates on the data it evaluates."
        )

    @torch.no_grad()
    def _update(self, host: Any, batch: Any, metrics: Any) -> None:
        assert self._reference is not None
        inputs, labels = host.split_batch(batch)
        inputs = move_data_to_device(inputs, torch.device("cpu"))
        logits = logits_of(call_model(self._reference, inputs if isinstance(inputs, (Mapping, Tensor)) else (inputs,)))
        logits = logits.to(labels.device)
        preds = host._predictions(logits) if hasattr(host, "_predictions") else logits
        metrics.update(preds, labels.float() if getattr(host, "is_regression", False) else labels)


def _evaluated_loaders(trainer: pl.Trainer, stage: str) -> list[Any]:
    """The loaders ``stage`` evaluates (never calibrated on): validation loaders for ``fit`` and ``validate``."""
    loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
