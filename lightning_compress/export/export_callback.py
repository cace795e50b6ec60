"""Deployment in the loop: the model being trained exported every few epochs, reloaded in the runtime that will
serve it, and that runtime's validation metrics logged, so that a ``ModelCheckpoint`` can keep the best model *as
deployed*, and an export that breaks stops the run at its start instead of after it.

Example:
    >>> export = ExportCallback(formats=["onnx"], every_n_epochs=1)
    >>> best = ModelCheckpoint(monitor="val_onnx/acc", mode="max")  # doctest: +SKIP
    >>> trainer = pl.Trainer(callbacks=[QuantizationAwareTraining(), export, best])  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from typing_extensions import override

from lightning_compress.core.batches import call_model, first_batch, model_inputs, stage_dataloader
from lightning_compress.core.sharding import check_sharding
from lightning_compress.core.target import find_network
from lightning_compress.core.validation import ArgumentErrors, is_int
from lightning_compress.quantization.export_inputs import shrink_inputs

__all__ = ["CALLBACK_FORMATS", "ExportCallback"]

#: format -> the prefix of its runtime's metrics
CALLBACK_FORMATS = {"onnx": "val_onnx", "onnx-fp16": "val_onnx_fp16", "hf-compressed-tensors": "val_hf"}
_FILES = {"onnx": "model.onnx", "onnx-fp16": "model-fp16.onnx", "hf-compressed-tensors": "hf"}


class ExportCallback(Callback):
    """Exports the network being trained (a QAT-prepared graph as its INT8 conversion), reloads the artifact in its
    runtime (ONNX Runtime for ``onnx`` / ``onnx-fp16``, transformers for ``hf-compressed-tensors``) and logs that
    runtime's validation metrics as ``val_onnx/<metric>``, ``val_onnx_fp16/<metric>``, ``val_hf/<metric>``.

    Exports run at the end of every ``every_n_epochs``-th validation epoch (never in the sanity check), into
    ``dirpath/epoch=<N>/`` (``model.onnx``, ``model-fp16.onnx``, ``hf/``); the previous epoch's folder is removed
    unless ``keep_all``. The metrics are logged with ``LightningModule.log`` at the end of the validation epoch, so a
    ``ModelCheckpoint(monitor="val_onnx/acc")`` (with the same ``every_n_epochs``) selects on them. The module must
    evaluate like a :class:`~lightning_compress.ClassificationModule`: ``split_batch`` and ``val_metrics``.

    With ``check_on_fit_start`` every format is exported and reloaded once when ``fit`` starts (a QAT-prepared graph
    is calibrated on a copy with the example batch first): an op ONNX cannot express or a layer compressed-tensors
    cannot hold fails the run before the first epoch, with the exporter's reason. Any later export that fails stops
    the run too (``RuntimeError`` naming the format and the epoch).

    An INT8 model exported to ``onnx`` is calibrated for ONNX Runtime on the first ``calibration_batches`` batches
    of the Trainer's training dataloader (never the validation data; drawn without touching the global random state):
    the convolutions its graph reads in float (the projection before a residual add) get calibrated quantized outputs,
    so ONNX Runtime runs them as ``QLinearConv`` and the add as ``QLinearAdd`` (``export(calibration_data=)``). They
    are drawn only for an INT8 model, at each export; without a training dataloader (``trainer.validate``) or with
    ``calibration_batches=0`` those convolutions are written as ``ConvInteger`` (exact, slow) and ``export`` warns.

    For ``hf-compressed-tensors`` the network must be a transformers model; when a ``QuantizationAwareTraining``
    callback replaces it by an INT8 graph, put this callback *before* it in ``callbacks`` so that its ``setup``
    records the architecture first.

    Args:
        formats: Formats to export (see :data:`CALLBACK_FORMATS`).
        every_n_epochs: Export every this many epochs.
        dirpath: Folder of the exports; None: ``<trainer.log_dir or default_root_dir>/exports``.
        example_inputs: One batch of inputs to export with; None: the first batch of the validation dataloader.
        check_on_fit_start: Export and reload once at the start of ``fit``.
        calibration_batches: Training batches that calibrate an INT8 ``onnx`` export (0 to 32; 0: none).
        keep_all: Keep every epoch's export (default: only the latest).
        verbose: 1 prints one line per export.

    Raises:
        ValueError: On a bad argument (every one listed).

    Example:
        >>> ExportCallback(formats=["onnx", "hf-compressed-tensors"], every_n_epochs=2).formats
        ['onnx', 'hf-compressed-tensors']
    """

    def __init__(
        self,
        formats: Sequence[str] = ("onnx",),
        every_n_epochs: int = 1,
        dirpath: Optional[Union[str, os.PathLike]] = None,
        example_inputs: Any = None,
        check_on_fit_start: bool = True,
        calibration_batches: int = 8,
        keep_all: bool = False,
        verbose: int = 1,
    ) -> None:
        errors = ArgumentErrors("ExportCallback: ")
        listed = isinstance(formats, Sequence) and not isinstance(formats, (str, bytes)) and bool(formats)
        if errors.require(listed, "formats", f"a non-empty list of {', '.join(CALLBACK_FORMATS)}", formats):
            for fmt in formats:
                errors.one_of("formats[]", fmt, tuple(CALLBACK_FORMATS))
        errors.int("every_n_epochs", every_n_epochs)
        errors.require(dirpath is None or isinstance(dirpath, (str, os.PathLike)), "dirpath", "a folder or None",
                       dirpath)  # fmt: skip
        if example_inputs is not None and not isinstance(example_inputs, (Tensor, tuple, list, Mapping)):
            errors.add("`example_inputs` must be a tensor, a tuple of inputs, a dict of keyword inputs or None, got"
                       f" {type(example_inputs).__name__}")  # fmt: skip
        batches_ok = is_int(calibration_batches) and 0 <= calibration_batches <= 32
        errors.require(batches_ok, "calibration_batches", "an int in 0..32 (0: none)", calibration_batches)
        errors.bools(check_on_fit_start=check_on_fit_start, keep_all=keep_all)
        errors.verbose(verbose, levels=(0, 1))
        errors.raise_if_any()
        self.formats = list(dict.fromkeys(formats))
        self.every_n_epochs = every_n_epochs
        self.dirpath = None if dirpath is None else Path(dirpath)
        self.example_inputs = example_inputs
        self.check_on_fit_start = check_on_fit_start
        self.calibration_batches = calibration_batches
        self.keep_all = keep_all
        self.verbose = verbose
        self.metrics: dict[str, float] = {}
        self.last_export: Optional[Path] = None
        self._hf: Optional[tuple[type, Any]] = None

    @property
    @override
    def state_key(self) -> str:
        return f"ExportCallback{{formats={self.formats}}}"

    # ------------------------------------------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from lightning_compress.export.hf_compressed_tensors import is_hf_model

        check_sharding(trainer, self)  # refuses sharded strategies: core.sharding.SHARDED_SUPPORT
        network = find_network(pl_module)[0]
        if is_hf_model(network) and self._hf is None:
            self._hf = (type(network), copy.deepcopy(network.config))  # the architecture, no weights

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.check_on_fit_start or not trainer.is_global_zero:
            return
        inputs = self._inputs(trainer, pl_module)
        model = self._deployable(pl_module, inputs, calibrate=True)
        calibration = self._calibration(trainer, pl_module, model)
        with tempfile.TemporaryDirectory() as folder:
            for fmt in self.formats:
                try:
                    loaded = self._write_and_load(model, fmt, Path(folder) / _FILES[fmt], inputs, calibration)
                    with torch.no_grad():
                        _logits(loaded, inputs)
                except Exception as err:
                    raise RuntimeError(
                        f"ExportCallback: the model cannot be deployed as {fmt!r} (checked when fit starts, before"
                        f" training): {type(err).__name__}: {err}"
                    ) from err
        if self.verbose:
            rank_zero_info(f"ExportCallback: {', '.join(self.formats)} export and reload checked")

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        host = pl_module if hasattr(pl_module, "split_batch") and hasattr(pl_module, "val_metrics") else None
        if host is None or trainer.val_dataloaders is None:
            raise RuntimeError(
                "ExportCallback evaluates the exported model like a ClassificationModule: the LightningModule needs"
                f" `split_batch` and `val_metrics`, and the Trainer validation data ({type(pl_module).__name__} has"
                f" split_batch: {hasattr(pl_module, 'split_batch')}, val_metrics: {hasattr(pl_module, 'val_metrics')})"
            )
        epoch = trainer.current_epoch
        folder = self._root(trainer) / f"epoch={epoch:03d}"
        inputs = self._inputs(trainer, pl_module)
        values: dict[str, float] = {}
        if trainer.is_global_zero:
            model = self._deployable(pl_module, inputs, calibrate=False)
            calibration = self._calibration(trainer, pl_module, model)
            for fmt in self.formats:
                try:
                    loaded = self._write_and_load(model, fmt, folder / _FILES[fmt], inputs, calibration)
                    values.update(self._evaluate(loaded, host, trainer, pl_module, CALLBACK_FORMATS[fmt]))
                except Exception as err:
                    raise RuntimeError(f"ExportCallback: exporting to {fmt!r} at epoch {epoch} failed:"
                                       f" {type(err).__name__}: {err}") from err  # fmt: skip
            if not self.keep_all and self.last_export is not None and self.last_export != folder:
                shutil.rmtree(self.last_export, ignore_errors=True)
            self.last_export = folder
        values = trainer.strategy.broadcast(values, src=0)
        self.metrics = dict(values)
        for name, value in values.items():
            pl_module.log(name, value, logger=True, sync_dist=False)
        if self.verbose:
            shown = ", ".join(f"{k} = {v:.4f}" for k, v in values.items())
            rank_zero_info(f"ExportCallback epoch {epoch}: {shown} ({folder})")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"last_export": None if self.last_export is None else str(self.last_export), "metrics": self.metrics}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        last = state_dict.get("last_export")
        self.last_export = None if last is None else Path(last)
        self.metrics = dict(state_dict.get("metrics", {}))

    # ---------------------------------------------------------------------------------------------------- helpers
    def _root(self, trainer: pl.Trainer) -> Path:
        if self.dirpath is not None:
            return self.dirpath
        return Path(trainer.log_dir or trainer.default_root_dir) / "exports"

    def _inputs(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        if self.example_inputs is not None:
            return shrink_inputs(self.example_inputs)
        try:
            batch = first_batch(trainer, "validate")
        except Exception as err:
            raise RuntimeError(f"ExportCallback exports with the first validation batch and could not get one"
                               f" ({err}); pass `example_inputs=`") from err  # fmt: skip
        split = getattr(pl_module, "split_batch", None)
        inputs = split(batch)[0] if callable(split) else model_inputs(batch)
        inputs = pl_module.transfer_batch_to_device(inputs, torch.device("cpu"), 0)
        return shrink_inputs(inputs)

    def _calibration(self, trainer: pl.Trainer, pl_module: pl.LightningModule, model: nn.Module) -> Optional[list]:
        """The inputs (on the CPU) of the first ``calibration_batches`` training batches when ``model`` is an INT8
        graph exported to ``onnx``; else None (also without a training dataloader)."""
        from lightning_compress.export.int8_graph import is_int8_graph

        if not self.calibration_batches or "onnx" not in self.formats or not is_int8_graph(model):
            return None
        try:
            loader = stage_dataloader(trainer, "fit")
        except ValueError:  # trainer.validate: no training data, and never the data it evaluates
            return None
        split = getattr(pl_module, "split_batch", None)
        out: list = []
        with torch.random.fork_rng(devices=[]):  # a shuffled loader would otherwise advance the run's random state
            for batch in loader:
                if len(out) >= self.calibration_batches:
                    break
                inputs = split(batch)[0] if callable(split) else model_inputs(batch)
                out.append(pl_module.transfer_batch_to_device(inputs, torch.device("cpu"), 0))
        return out or None

    def _deployable(self, pl_module: pl.LightningModule, inputs: Any, calibrate: bool) -> nn.Module:
        """The network as it would be deployed: float as it is, a QAT-prepared graph converted to INT8 (on a copy
        calibrated with ``inputs`` when its observers have seen nothing yet, at fit start)."""
        from lightning_compress.export.export import exportable_model
        from lightning_compress.quantization.qat_modes import fake_quantizers, is_prepared

        network = find_network(pl_module)[0]
        if calibrate and is_prepared(network):
            network = copy.deepcopy(network).cpu()
            for fq in fake_quantizers(network):
                fq.enable_observer(True)
            network.train()
            with torch.no_grad():
                call_model(network, inputs)
        elif next(network.parameters(), torch.empty(0)).device.type != "cpu":
            network = copy.deepcopy(network).cpu()
        return exportable_model(network)

    def _write_and_load(
        self, model: nn.Module, fmt: str, path: Path, inputs: Any, calibration: Optional[list] = None
    ) -> Any:
        from lightning_compress.export.export import export

        hf_model = None
        if fmt == "hf-compressed-tensors" and self._hf is not None:
            cls, config = self._hf
            hf_model = cls._from_config(copy.deepcopy(config))  # names and shapes of the architecture
        calibration_data = calibration if fmt == "onnx" else None
        export(model, path, fmt, example_inputs=inputs, hf_model=hf_model, calibration_data=calibration_data,
               overwrite=True)  # fmt: skip
        if fmt in ("onnx", "onnx-fp16"):
            from lightning_compress.export.onnx_runtime import load_onnx

            return load_onnx(path)
        cls = type(hf_model if hf_model is not None else model)
        return cls.from_pretrained(str(path), dtype=torch.float32).eval()

    def _evaluate(self, loaded: Any, host: Any, trainer: pl.Trainer, pl_module: pl.LightningModule,
                  prefix: str) -> dict[str, float]:  # fmt: skip
        metrics = host.val_metrics.clone(prefix=f"{prefix}/").to("cpu")
        metrics.reset()
        loaders = trainer.val_dataloaders
        with torch.no_grad():
            for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
                for batch in loader:
                    inputs, labels = host.split_batch(batch)
                    logits = _logits(loaded, inputs)
                    preds = host._predictions(logits) if hasattr(host, "_predictions") else logits
                    metrics.update(preds, labels.float() if getattr(host, "is_regression", False) else labels)
        return {k: float(v) for k, v in metrics.compute().items()}


def _logits(loaded: Any, inputs: Any) -> Tensor:
    if isinstance(loaded, nn.Module):
        out = call_model(loaded, inputs)
        return (out.logits if hasattr(out, "logits") else out).float()
    return loaded(inputs)
