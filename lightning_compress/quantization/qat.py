"""Quantization-aware training (QAT) as a Lightning callback that ends in a real quantized model: INT8 through PT2E
(:mod:`~lightning_compress.quantization.pt2e`) or INT4 weight-only (:mod:`~lightning_compress.quantization.int4`).

Example:
    >>> import lightning.pytorch as pl
    >>> trainer = pl.Trainer(max_epochs=3, callbacks=[QuantizationAwareTraining(scheme="int8", freeze_bn_epoch=2)])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from typing_extensions import override

from lightning_compress.core.batches import call_model, first_batch, model_inputs
from lightning_compress.core.compression_callback import CompressionCallback
from lightning_compress.core.metric_logging import log_metrics
from lightning_compress.core.selection import FilterFn
from lightning_compress.core.sharding import check_sharding
from lightning_compress.core.target import find_network, steps_per_epoch
from lightning_compress.core.validation import ArgumentErrors, check_finite
from lightning_compress.quantization.export_inputs import ExampleInputs, shrink_inputs
from lightning_compress.quantization.int4 import (
    GROUP_SIZES,
    convert_to_int4,
    int4_fake_quantizers,
    is_int4_prepared,
    prepare_int4_qat,
)
from lightning_compress.quantization.pt2e import convert_to_int8, prepare_qat
from lightning_compress.quantization.qat_modes import fake_quantizers, is_prepared, set_qat_mode, sync_qat_mode
from lightning_compress.quantization.serialization import save_quantized

__all__ = ["SCHEMES", "QuantizationAwareTraining"]

SCHEMES = ("int8", "int4_weight_only")


class QuantizationAwareTraining(CompressionCallback):
    """Trains with fake quantization and hands back the real quantized model (fast INT8 by default) after ``fit``.

    Schemes:
        ``"int8"`` (default): weights of Linear and Conv layers int8 symmetric per output channel, activations uint8
        affine per tensor, Conv + BatchNorm folded, through PT2E (:func:`prepare_qat`). In ``setup`` (before Lightning
        restores a checkpoint and before ``configure_optimizers``) the model is exported with the first batch of the
        stage's dataloader (or ``example_inputs``), batch dimension dynamic, and replaced by the prepared graph. The
        result (:func:`convert_to_int8`) runs on oneDNN INT8 kernels.

        ``"int4_weight_only"``: the weights of the ``nn.Linear`` layers only, int4 in groups of ``group_size`` with a
        symmetric scale per group, activations in float (torchao's QAT, :func:`prepare_int4_qat`, for LLM-style
        models); the layers are swapped in place, nothing is exported. Result: :func:`convert_to_int4`.

    The module quantized is the LightningModule's network (:func:`~lightning_compress.core.target.find_network`): the
    ``attribute`` when given, else the network of its ``compression_target`` (a distillation student), else its single
    child with parameters (a :class:`~lightning_compress.ClassificationModule`'s ``model``). Its state (weights, BN
    statistics, observer ranges, scales and zero points) is part of the module's ``state_dict`` under unchanged
    parameter names, so checkpoints hold it and resuming or ``trainer.test(ckpt_path=...)`` re-prepares the same
    model and loads it. Callbacks that select parameters in ``on_fit_start`` (``GradualMagnitudePruning``,
    ``NMSparsity``) therefore see the prepared model, whatever the callback order; pruned weights stay exactly zero
    through fake quantization and conversion (symmetric weight quantization maps 0 to 0).

    Schedules are in epochs, fractional values allowed, counted in optimizer steps (``trainer.global_step``):
    fake quantization is off before ``start_epoch`` (INT8 observers already record ranges), observers are frozen
    from ``freeze_observers_epoch`` and BatchNorm statistics from ``freeze_bn_epoch`` (both INT8 only).

    After ``fit``, :attr:`quantized_model` holds the converted model (INT8: compiled with inductor freezing when
    ``compile_int8``); with ``evaluate_quantized`` its validation metrics are logged as ``val_int8/<metric>`` (or
    ``val_int4/``) at the end of ``fit``, and its test metrics as ``test_int8/<metric>`` next to ``test/<metric>``
    (for a module with ``split_batch`` and ``val_metrics``/``test_metrics``, as a ``ClassificationModule``, or a
    ``DistillationModule`` whose student is one).

    Args:
        scheme: ``"int8"`` or ``"int4_weight_only"`` (see above).
        start_epoch: Epoch (fractional allowed) from which fake quantization is applied.
        freeze_observers_epoch: Epoch from which scales and zero points stop changing; None: never. INT8 only.
        freeze_bn_epoch: Epoch from which BatchNorm uses and keeps its running statistics; None: never. INT8 only.
        filter_fn: ``filter_fn(layer, fqn) -> bool`` for each layer with a ``weight``; False keeps it in float.
        skip_first_conv: Keep the first convolution in float (INT8).
        skip_classifier: Keep the last ``nn.Linear`` (the classifier) in float.
        group_size: Input features per int4 scale (``"int4_weight_only"``): 16, 32, 64, 128 or 256.
        attribute: Name of the submodule of the LightningModule to quantize; None: see above.
        example_inputs: Inputs to export with (INT8); None: the first batch of the stage's dataloader.
        evaluate_quantized: Log the quantized model's metrics (see above).
        compile_int8: Compile the INT8 model with inductor freezing (the fast path; the first call compiles).
        verbose: 0 silent, 1 one line per phase change.
        allow_config_change: Resume from a checkpoint written with another schedule or layer choice (the change
            logged); False: such a resume is an error that lists the changes.

    The quantization is final (:attr:`is_final`) once the last phase change of the schedule has happened (fake
    quantization on, and observers / BatchNorm frozen where a freeze epoch is set): from :attr:`final_step` on.

    Raises:
        ValueError: On any bad argument (all reported at once). In ``setup`` and before converting, if a weight or
            BatchNorm statistic holds NaN or Inf. When ``fit`` resumes from a checkpoint written with other
            arguments (unless ``allow_config_change``).

    Example:
        >>> qat = QuantizationAwareTraining(freeze_bn_epoch=2)
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[qat])
        >>> # trainer.fit(ClassificationModule(SmallCNN(), 10), datamodule); qat.quantized_model(x)
    """

    _CONFIG = ("scheme", "attribute")
    _COMPARED = (
        "start_epoch",
        "freeze_observers_epoch",
        "freeze_bn_epoch",
        "filter_fn",
        "skip_first_conv",
        "skip_classifier",
        "group_size",
    )

    def __init__(
        self,
        scheme: str = "int8",
        start_epoch: float = 0.0,
        freeze_observers_epoch: Optional[float] = None,
        freeze_bn_epoch: Optional[float] = None,
        filter_fn: Optional[FilterFn] = None,
        skip_first_conv: bool = False,
        skip_classifier: bool = False,
        group_size: int = 32,
        attribute: Optional[str] = None,
        example_inputs: Optional[ExampleInputs] = None,
        evaluate_quantized: bool = True,
        compile_int8: bool = True,
        verbose: int = 1,
        allow_config_change: bool = False,
    ) -> None:
        _validate(
            scheme, start_epoch, freeze_observers_epoch, freeze_bn_epoch, filter_fn, skip_first_conv,
            skip_classifier, group_size, attribute, example_inputs, evaluate_quantized, compile_int8, verbose,
            allow_config_change,
        )  # fmt: skip
        self.scheme = scheme
        self.start_epoch = float(start_epoch)
        self.freeze_observers_epoch = freeze_observers_epoch
        self.freeze_bn_epoch = freeze_bn_epoch
        self.filter_fn = filter_fn
        self.skip_first_conv = skip_first_conv
        self.skip_classifier = skip_classifier
        self.group_size = group_size
        self.attribute = attribute
        self.example_inputs = example_inputs
        self.evaluate_quantized = evaluate_quantized
        self.compile_int8 = compile_int8
        self.verbose = verbose
        self.allow_config_change = allow_config_change

        self.quantized_model: Optional[nn.Module] = None
        self.quantized_metrics: dict[str, float] = {}
        self._prepared: Optional[nn.Module] = None
        self._steps: dict[str, Optional[int]] = {"start": 0, "observers": None, "bn": None}
        self._phase: tuple[bool, bool, bool] = (True, False, False)  # fake quant on, observers frozen, BN frozen
        self._test_metrics: Optional[Any] = None
        self._example: Optional[ExampleInputs] = example_inputs
        self._schedule_known = False  # set in on_train_start

    @property
    @override
    def is_final(self) -> bool:
        """Whether the last phase change of the schedule has happened (see the class docstring)."""
        return self._prepared is not None and self._schedule_known and self._phase == self._final_phase()

    @property
    @override
    def final_step(self) -> Optional[int]:
        """The optimizer step of the last phase change (known from ``on_train_start``)."""
        if not self._schedule_known:
            return None
        return max(step for step in self._steps.values() if step is not None)

    @override
    def describe_state(self) -> str:
        fake_quant, frozen_obs, frozen_bn = self._phase
        phase = (
            f"fake quant {'on' if fake_quant else 'off'}"
            + (f", observers {'frozen' if frozen_obs else 'live'}" if self.scheme == "int8" else "")
            + (f", BN statistics {'frozen' if frozen_bn else 'live'}" if self.scheme == "int8" else "")
        )
        return f"QuantizationAwareTraining {self.scheme}: {phase}, {self._final_text()}"

    def _final_phase(self) -> tuple[bool, bool, bool]:
        return True, self._steps["observers"] is not None, self._steps["bn"] is not None

    @property
    def prepared_model(self) -> Optional[nn.Module]:
        """The fake-quantized model being trained (INT8: a ``GraphModule``; None before ``setup``)."""
        return self._prepared

    @property
    def _prefix(self) -> str:
        return "int8" if self.scheme == "int8" else "int4"

    def convert(self) -> nn.Module:
        """The real quantized model of the prepared model as it is now (see :func:`convert_to_int8`).

        Raises:
            RuntimeError: Before ``setup`` (nothing is prepared yet).
        """
        if self._prepared is None:
            raise RuntimeError("nothing is prepared yet: the model is prepared in `setup` of `fit`/`test`")
        check_finite(_finite_checked(self._prepared), f"{self.scheme} conversion (QuantizationAwareTraining)")
        if self.scheme == "int8":
            return convert_to_int8(self._prepared, compile=self.compile_int8)  # type: ignore[arg-type]
        return convert_to_int4(self._prepared)

    def save_quantized(self, path: Union[str, os.PathLike]) -> None:
        """Save :attr:`quantized_model` with :func:`save_quantized` (with the inputs the model was exported with).

        Raises:
            RuntimeError: If there is no quantized model yet (before the end of ``fit`` or ``test``), or no example
                inputs are known (``int4_weight_only`` without ``example_inputs`` and no batch seen).
        """
        if self.quantized_model is None or self._example is None:
            raise RuntimeError(
                "there is no quantized model (or no example inputs) yet: it is built at the end of `fit` (or at the"
                " start of `test`)"
            )
        save_quantized(self.quantized_model, path, self._example)

    # ------------------------------------------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_sharding(trainer, self)  # refuses sharded strategies: core.sharding.SHARDED_SUPPORT
        parent, name, module = self._locate(pl_module)
        _check_composition(pl_module)
        if is_prepared(module) or (self.scheme != "int8" and is_int4_prepared(module)):
            self._prepared = module
            return
        if self.scheme == "int8" and isinstance(module, pl.LightningModule):
            raise ValueError(
                f"QuantizationAwareTraining exports a network, and `{name}` is a LightningModule"
                f' ({type(module).__name__}): pass `attribute="<its network>"`'
            )
        check_finite(_finite_checked(module), f"{self.scheme} QAT preparation (QuantizationAwareTraining)")
        inputs = self.example_inputs if self.example_inputs is not None else _first_inputs(trainer, pl_module, stage)
        self._example = shrink_inputs(inputs)
        if self.scheme == "int8":
            prepared: nn.Module = prepare_qat(
                module, inputs, self.filter_fn, self.skip_first_conv, self.skip_classifier
            )
            set_qat_mode(prepared, module.training)  # type: ignore[arg-type]
            setattr(parent, name, prepared)
            count = len(fake_quantizers(prepared))
        else:
            prepared = prepare_int4_qat(module, self.group_size, self.filter_fn, self.skip_classifier)
            count = len(int4_fake_quantizers(prepared))
        self._prepared = prepared
        if self.verbose:
            rank_zero_info(f"QAT: {type(module).__name__} -> {self.scheme} fake quantization on {count} tensors")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        schedule = (
            ("start", self.start_epoch),
            ("observers", self.freeze_observers_epoch),
            ("bn", self.freeze_bn_epoch),
        )
        names = {"start": "start_epoch", "observers": "freeze_observers_epoch", "bn": "freeze_bn_epoch"}
        steps = steps_per_epoch(trainer, pl_module, tuple(names[k] for k, epoch in schedule if epoch))
        for key, epoch in schedule:
            self._steps[key] = None if epoch is None else round(epoch * steps)
        self._schedule_known = True
        self._apply_phase(trainer.global_step, force=True)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._apply_phase(trainer.global_step)
        self._sync(observe=not self._phase[1])

    @override
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._sync(observe=False)

    @override
    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._sync(observe=False)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test_metrics = None
        host = _metrics_host(pl_module, "test_metrics")
        if self.evaluate_quantized and self._prepared is not None and host is not None:
            self.quantized_model = self.convert()
            self._test_metrics = host.test_metrics.clone(prefix=f"test_{self._prefix}/").to(pl_module.device)
            self._test_metrics.reset()

    @override
    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._sync(observe=False)

    @override
    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        host = _metrics_host(pl_module, "test_metrics")
        if self._test_metrics is not None and self.quantized_model is not None and host is not None:
            _update_metrics(host, self.quantized_model, batch, self._test_metrics)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._test_metrics is not None:
            values = {k: float(v) for k, v in self._test_metrics.compute().items()}
            self.quantized_metrics.update(values)
            pl_module.log_dict(values)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._prepared is None:
            return
        self.quantized_model = self.convert()
        loaders = trainer.val_dataloaders
        host = _metrics_host(pl_module, "val_metrics")
        if not (self.evaluate_quantized and loaders is not None and host is not None):
            return
        metrics = host.val_metrics.clone(prefix=f"val_{self._prefix}/").to(pl_module.device)
        metrics.reset()
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            for batch in loader:
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                _update_metrics(host, self.quantized_model, batch, metrics)
        values = {k: float(v) for k, v in metrics.compute().items()}
        self.quantized_metrics.update(values)
        log_metrics(trainer, values)
        if self.verbose:
            rank_zero_info(f"QAT: {self.scheme} model " + ", ".join(f"{k} = {v:.4f}" for k, v in values.items()))

    # ------------------------------------------------------------------------------------------------- state dict
    @override
    def state_dict(self) -> dict[str, Any]:
        # Scales, zero points, observer ranges and their enabled flags are buffers of the prepared graph: they are in
        # the module's state_dict. Only the phase flags live here (they are re-derived from the step on resume too).
        return {"phase": list(self._phase), "config": self.resume_config()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        phase = state_dict.get("phase", list(self._phase))
        self._phase = (bool(phase[0]), bool(phase[1]), bool(phase[2]))

    # ---------------------------------------------------------------------------------------------------- helpers
    def _locate(self, pl_module: pl.LightningModule) -> tuple[nn.Module, str, nn.Module]:
        """``(parent, attribute name, module)`` of the network to quantize."""
        module, path = find_network(pl_module, self.attribute)
        if not path:
            raise ValueError(
                f"QuantizationAwareTraining replaces the network inside the LightningModule, and found"
                f' {type(pl_module).__name__} itself: pass `attribute="<name of the submodule>"`'
            )
        parent_name, _, name = path.rpartition(".")
        return pl_module.get_submodule(parent_name) if parent_name else pl_module, name, module

    def _apply_phase(self, step: int, force: bool = False) -> None:
        assert self._prepared is not None
        start, observers, bn = self._steps["start"], self._steps["observers"], self._steps["bn"]
        phase = (
            start is not None and step >= start,
            observers is not None and step >= observers,
            bn is not None and step >= bn,
        )
        if phase == self._phase and not force:
            return
        fake_quant, frozen_obs, frozen_bn = phase
        if self.scheme == "int8":
            for fq in fake_quantizers(self._prepared):
                fq.enable_fake_quant(fake_quant)
            set_qat_mode(
                self._prepared,  # type: ignore[arg-type]
                self._prepared.training,
                freeze_bn=frozen_bn,
                freeze_observers=frozen_obs,
            )
        else:
            for fq in int4_fake_quantizers(self._prepared):
                fq.enabled = fake_quant
        if self.verbose and phase != self._phase:
            rank_zero_info(
                f"QAT step {step}: fake quant {'on' if fake_quant else 'off'}, observers"
                f" {'frozen' if frozen_obs else 'live'}, BN statistics {'frozen' if frozen_bn else 'live'}"
            )
        self._phase = phase

    def _sync(self, observe: bool) -> None:
        """Follow the module's mode for BatchNorm and Dropout; observers record in training steps only.

        Lightning (>= 2.2) trains a submodule in the mode it was given, so a model passed in eval mode trains with
        frozen BatchNorm statistics and no dropout; its observers must record all the same.
        """
        if self._prepared is not None and is_prepared(self._prepared):
            sync_qat_mode(self._prepared)  # type: ignore[arg-type]
            for fq in fake_quantizers(self._prepared):
                fq.enable_observer(observe)


# ---------------------------------------------------------------------------------------------------------- module
def _finite_checked(module: nn.Module) -> dict[str, Tensor]:
    """The tensors that must be finite before quantizing: the parameters and the BatchNorm running statistics (not
    the observers' ranges, which start at +-inf)."""
    tensors = dict(module.named_parameters())
    tensors.update({n: b for n, b in module.named_buffers() if n.rsplit(".", 1)[-1] in ("running_mean", "running_var")})
    return tensors


def _metrics_host(pl_module: Any, name: str) -> Optional[Any]:
    """The module whose ``split_batch`` and ``<name>`` metrics evaluate the quantized model: ``pl_module`` itself, or
    the student of a distillation module."""
    for host in (pl_module, getattr(pl_module, "student", None)):
        if host is not None and hasattr(host, "split_batch") and hasattr(host, name):
            return host
    return None


def _check_composition(pl_module: Any) -> None:
    """Feature distillation reads submodule outputs through forward hooks, which an exported graph never calls."""
    if getattr(pl_module, "features", None) and hasattr(pl_module, "student") and hasattr(pl_module, "teacher"):
        raise ValueError(
            "QuantizationAwareTraining composes with DistillationModule on logits only: its `features` pairs read"
            " student submodules through forward hooks, which the exported QAT graph does not call; use"
            " `features=()`"
        )


def _first_inputs(trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> Any:
    try:
        batch = first_batch(trainer, stage)
    except Exception as err:
        raise RuntimeError(
            f"QuantizationAwareTraining exports the model with the first batch of the {stage} dataloader and could not"
            f" get one ({type(err).__name__}: {err}); pass `example_inputs=` to the callback"
        ) from err
    host = _metrics_host(pl_module, "split_batch")
    if host is not None:
        return host.split_batch(batch)[0]
    return model_inputs(batch)


@torch.no_grad()
def _update_metrics(host: Any, model: nn.Module, batch: Any, metrics: Any) -> None:
    inputs, labels = host.split_batch(batch)
    out = call_model(model, inputs if isinstance(inputs, (Mapping, Tensor)) else (inputs,))
    logits = out.logits if hasattr(out, "logits") else out
    preds = host._predictions(logits) if hasattr(host, "_predictions") else logits
    metrics.update(preds, labels.float() if getattr(host, "is_regression", False) else labels)


def _validate(
    scheme: Any,
    start_epoch: Any,
    freeze_observers_epoch: Any,
    freeze_bn_epoch: Any,
    filter_fn: Any,
    skip_first_conv: Any,
    skip_classifier: Any,
    group_size: Any,
    attribute: Any,
    example_inputs: Any,
    evaluate_quantized: Any,
    compile_int8: Any,
    verbose: Any,
    allow_config_change: Any,
) -> None:
    """Raise one ValueError naming every bad constructor argument, its value and what is allowed."""
    errors = ArgumentErrors("QuantizationAwareTraining: ")
    errors.one_of("scheme", scheme, SCHEMES)
    start_ok = errors.number("start_epoch", start_epoch, minimum=0)
    for name, value in (("freeze_observers_epoch", freeze_observers_epoch), ("freeze_bn_epoch", freeze_bn_epoch)):
        if value is None:
            continue
        if scheme == "int4_weight_only":
            errors.add(f'`{name}` applies to `scheme="int8"` only (int4 weights have no observers), got {value!r}')
        elif errors.number(name, value, minimum=0, optional=True) and start_ok:
            errors.require(value >= start_epoch, name, f">= `start_epoch` ({start_epoch}) or None", value)
    errors.callable("filter_fn", filter_fn, "(module, fqn) -> bool")
    errors.bools(skip_first_conv=skip_first_conv, skip_classifier=skip_classifier,
                 evaluate_quantized=evaluate_quantized, compile_int8=compile_int8,
                 allow_config_change=allow_config_change)  # fmt: skip
    errors.one_of("group_size", group_size, GROUP_SIZES)
    errors.require(attribute is None or (isinstance(attribute, str) and bool(attribute)), "attribute",
                   "a submodule name or None", attribute)  # fmt: skip
    if example_inputs is not None and not isinstance(example_inputs, (Tensor, tuple, list, Mapping)):
        errors.add(
            "`example_inputs` must be a tensor, a tuple of inputs, a dict of keyword inputs or None,"
            f" got {type(example_inputs).__name__}"
        )
    errors.verbose(verbose, levels=(0, 1))
    errors.raise_if_any()
