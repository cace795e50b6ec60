"""Quantization-aware training (QAT) that ends in a real INT8 model, through PyTorch 2 export (PT2E).

The float model is captured with ``torch.export`` (batch dimension dynamic), and torchao's ``prepare_qat_pt2e`` with the
``X86InductorQuantizer`` (``is_qat=True``) inserts fake quantization: weights symmetric per output channel, activations
affine per tensor, Conv + BatchNorm folded as in training (the BN statistics keep updating; the weight that is quantized
is ``conv.weight * bn.weight / sqrt(running_var + eps)``). After training, ``convert_pt2e`` turns the fake quantization
into quantize / dequantize ops around int8 weights, and ``torch.compile`` with inductor *freezing* fuses them into
oneDNN INT8 kernels (measured 10x-14x faster than fp32 eager on an AMX CPU; without freezing it is slower than fp32).

The prepared model is an ``fx.GraphModule`` whose parameters keep the float model's names (``features.0.weight``), so
checkpoints, optimizers and :class:`~lightning_compress.GradualMagnitudePruning` masks see the same names; the
Linear/Conv/BatchNorm submodules get their original classes back, so type-based selection (``prunable_weights``,
``skip_first_conv``) works on the prepared model too. An exported graph does not switch BatchNorm and Dropout on
``.train()``/``.eval()``: the graph is rewritten when its mode changes (:func:`set_qat_mode`), which the callback does at
the start of every train/val/test/predict batch, and ``.train()``/``.eval()`` on the prepared model do too.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
    ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    >>> prepared = prepare_qat(net, (torch.randn(4, 1, 8, 8),))  # doctest: +SKIP
    >>> int8 = convert_to_int8(prepared)  # doctest: +SKIP
    >>> int8(torch.randn(3, 1, 8, 8)).shape  # doctest: +SKIP
    torch.Size([3, 2])
"""

from __future__ import annotations

import copy
import math
import os
import re
import types
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from typing_extensions import override

from lightning_compress.masking import compression_target
from lightning_compress.prunable_weights import FilterFn

__all__ = [
    "FrozenInt8",
    "QuantizationAwareTraining",
    "SCHEMES",
    "convert_to_int8",
    "load_int8",
    "prepare_qat",
    "save_int8",
    "set_qat_mode",
]

SCHEMES = ("int8",)
ExampleInputs = Union[Tensor, tuple, Mapping[str, Any]]
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MARK = "lightning_compress_qat"  # key in a prepared GraphModule's `meta` (kept by deepcopy): its mode state


# --------------------------------------------------------------------------------------------------------- inputs
def _as_args_kwargs(example_inputs: ExampleInputs) -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` for ``torch.export``: a tensor -> ``((x,), {})``, a dict -> ``((), d)``, a tuple -> itself."""
    if isinstance(example_inputs, Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise TypeError(
        "`example_inputs` must be a tensor, a tuple of positional inputs or a dict of keyword inputs,"
        f" got {type(example_inputs).__name__}"
    )


def _batch_dim_spec(value: Any) -> Any:
    return {0: torch.export.Dim.AUTO} if isinstance(value, Tensor) and value.dim() >= 1 else None


def _dynamic_shapes(args: tuple, kwargs: dict[str, Any]) -> Any:
    if kwargs and not args:
        return {k: _batch_dim_spec(v) for k, v in kwargs.items()}
    if args and not kwargs:
        return tuple(_batch_dim_spec(a) for a in args)
    return None  # mixed positional and keyword inputs: static shapes


def _shrink(value: Any, n: int = 2) -> Any:
    """The first ``n`` examples of every tensor (repeated when the batch is smaller: a batch of 1 would specialise)."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return value
        value = value[:n]
        return value.repeat(math.ceil(n / value.shape[0]), *([1] * (value.dim() - 1)))[:n].clone()
    if isinstance(value, Mapping):
        return {k: _shrink(v, n) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_shrink(v, n) for v in value)
    return value


def _export(model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(model, args, kwargs, dynamic_shapes=_dynamic_shapes(args, kwargs))
    except Exception as err:  # torch.export raises many types; all mean "this model cannot be captured"
        raise RuntimeError(
            f"QuantizationAwareTraining needs a model that `torch.export.export` can capture, and"
            f" {type(model).__name__} failed: {_export_error_summary(err)}\n"
            "Hint: data-dependent Python control flow (`if x.sum() > 0`), `.item()`/`.tolist()` on tensors and"
            " unsupported custom ops cannot be exported; rewrite that part with torch.where / torch.cond, or keep it"
            " out of the quantized module. The full torch.export error is chained above."
        ) from err


def _export_error_summary(err: BaseException) -> str:
    """``"<type>: <first message line> (op aten.item at File "m.py", line 7, in forward)"``: what failed, and where."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = next((line for line in lines if not line.startswith(("def ", "#", "sum_")) and ":" not in line[:3]), "")
    message = next((line for line in lines if "Could not" in line or "Unsupported" in line), first or type(err).__name__)
    ops = re.findall(r"torch\.ops\.(\w+\.\w+)", str(err))
    files = re.findall(r"# File: (.+)", str(err))
    where = files[-1] if files else None
    where = where or next((lines[i + 1] for i, line in enumerate(lines[:-1]) if "following call raised" in line), None)
    details = ", ".join(x for x in (f"op {ops[-1]}" if ops else "", f"at {where}" if where else "") if x)
    return f"{type(err).__name__}: {message}" + (f" ({details})" if details else "")


# -------------------------------------------------------------------------------------------------------- prepare
def _quantizer(model: nn.Module, filter_fn: Optional[FilterFn], skip_first_conv: bool, skip_classifier: bool) -> Any:
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=True))
    modules = list(model.named_modules())
    first_conv = next((m for _, m in modules if isinstance(m, _CONV)), None)
    classifier = next((m for _, m in reversed(modules) if isinstance(m, nn.Linear)), None)
    for fqn, sub in modules:
        if not fqn or not isinstance(sub._parameters.get("weight"), nn.Parameter):
            continue
        keep_float = (skip_first_conv and sub is first_conv) or (skip_classifier and sub is classifier)
        if keep_float or (filter_fn is not None and not filter_fn(sub, fqn)):
            quantizer.set_module_name_qconfig(fqn, None)
    return quantizer


def _restore_layer_types(prepared: torch.fx.GraphModule, original: nn.Module) -> None:
    """Give the parameter-holding submodules of ``prepared`` the class and attributes of the float model's layers.

    ``ExportedProgram.module()`` rebuilds the hierarchy from plain ``nn.Module``s; with the original classes, selection
    by type (``prunable_weights``, first conv / classifier) sees the same layers as on the float model. Their
    ``forward`` is never called: the graph reads their parameters with ``get_attr``.
    """
    targets = dict(prepared.named_modules())
    for fqn, layer in original.named_modules():
        sub = targets.get(fqn)
        if not fqn or sub is None or type(sub) is not nn.Module or layer._modules:
            continue
        if set(sub._parameters) != set(layer._parameters):
            continue
        for key, value in vars(layer).items():
            if not key.startswith("_") and key != "training" and not isinstance(value, Tensor):
                setattr(sub, key, copy.copy(value))
        sub.__class__ = type(layer)


def _fake_quantizers(prepared: nn.Module) -> list[nn.Module]:
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    return [m for m in prepared.modules() if isinstance(m, FakeQuantizeBase)]


def prepare_qat(
    model: nn.Module,
    example_inputs: ExampleInputs,
    filter_fn: Optional[FilterFn] = None,
    skip_first_conv: bool = False,
    skip_classifier: bool = False,
) -> torch.fx.GraphModule:
    """Export ``model`` and insert INT8 fake quantization for QAT (Conv+BN folded), ready to train.

    Args:
        model: A float model that ``torch.export`` can capture; it is not modified (its mode is restored).
        example_inputs: A batch of inputs (tensor ``(B, ...)``, tuple of positional inputs or dict of keyword inputs);
            dimension 0 of every tensor is exported as dynamic (only the first two examples are used).
        filter_fn: ``filter_fn(layer, fqn) -> bool`` for every submodule with a ``weight``: False keeps it in float.
        skip_first_conv: Keep the first convolution in float.
        skip_classifier: Keep the last ``nn.Linear`` in float.

    Returns:
        The prepared ``GraphModule``, in training mode; call ``.eval()`` / ``.train()`` (or :func:`set_qat_mode`) to
        switch BatchNorm and Dropout.

    Raises:
        RuntimeError: If ``torch.export`` cannot capture the model (the message names the failing op), or no layer was
            quantized.
    """
    args, kwargs = _as_args_kwargs(_shrink(example_inputs))
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    was_training = model.training
    model.train()  # QAT graphs are captured in training mode (BN batch statistics, live dropout)
    try:
        exported = _export(model, args, kwargs)
        quantizer = _quantizer(model, filter_fn, skip_first_conv, skip_classifier)
    finally:
        model.train(was_training)
    prepared = prepare_qat_pt2e(exported.module(), quantizer)
    if not _fake_quantizers(prepared):
        raise RuntimeError(
            f"no layer of {type(model).__name__} was quantized: the X86 quantizer found no Conv/Linear pattern it"
            " supports outside the layers kept in float (`filter_fn`, `skip_first_conv`, `skip_classifier`)"
        )
    _restore_layer_types(prepared, model)
    prepared.meta[_MARK] = {"train": True, "bn_train": True, "dropout_train": True, "bn_frozen": False,
                               "observers_frozen": False}
    prepared.train = types.MethodType(_train, prepared)  # type: ignore[method-assign]
    prepared.eval = types.MethodType(_eval, prepared)  # type: ignore[method-assign]
    return prepared


def is_prepared(module: nn.Module) -> bool:
    """Whether ``module`` is a graph prepared by :func:`prepare_qat`."""
    return isinstance(module, torch.fx.GraphModule) and _MARK in module.meta


# ------------------------------------------------------------------------------------------------------------ modes
def set_qat_mode(
    prepared: torch.fx.GraphModule, train: bool, freeze_bn: Optional[bool] = None, freeze_observers: Optional[bool] = None
) -> None:
    """Switch the BatchNorm and Dropout ops of a prepared graph between training and evaluation.

    Args:
        prepared: A graph from :func:`prepare_qat`.
        train: Training mode (batch statistics, live dropout) or evaluation mode.
        freeze_bn: When given, set whether BatchNorm stays in evaluation mode (running statistics, no updates) while
            training; left as it was when None.
        freeze_observers: When given, set whether the observers stop recording ranges (scales and zero points stay
            fixed) while training; left as it was when None. In evaluation mode the observers never record.

    The graph is rewritten only when a mode actually changes (each rewrite takes about half a second).
    """
    from torchao.quantization.pt2e.export_utils import _replace_batchnorm, _replace_dropout

    state = prepared.meta[_MARK]
    if freeze_bn is not None:
        state["bn_frozen"] = bool(freeze_bn)
    if freeze_observers is not None:
        state["observers_frozen"] = bool(freeze_observers)
    for fq in _fake_quantizers(prepared):  # observers record ranges in training only: evaluation never moves scales
        fq.enable_observer(train and not state["observers_frozen"])
    want_bn = train and not state["bn_frozen"]
    if state["dropout_train"] != train:
        _replace_dropout(prepared, train_to_eval=not train)
        state["dropout_train"] = train
    if state["bn_train"] != want_bn:
        _replace_batchnorm(prepared, train_to_eval=not want_bn)
        state["bn_train"] = want_bn
    state["train"] = train
    nn.Module.train(prepared, train)


def _train(self: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
    set_qat_mode(self, mode)
    return self


def _eval(self: torch.fx.GraphModule) -> torch.fx.GraphModule:
    set_qat_mode(self, False)
    return self


def _sync_mode(prepared: torch.fx.GraphModule) -> None:
    """Follow ``prepared.training`` (Lightning restores modes by assigning ``.training``, not by calling ``train``)."""
    if prepared.meta[_MARK]["train"] != prepared.training:
        set_qat_mode(prepared, prepared.training)


# --------------------------------------------------------------------------------------------------------- convert
def convert_to_int8(prepared: torch.fx.GraphModule, compile: bool = True) -> nn.Module:
    """The real INT8 model of a prepared (and trained) QAT graph; ``prepared`` is not modified.

    Args:
        prepared: A graph from :func:`prepare_qat` (or the ``model`` of a module trained with the callback).
        compile: ``torch.compile`` the converted graph with inductor freezing (see :class:`FrozenInt8`; a new batch
            size compiles again) so that it runs on oneDNN INT8 kernels. The first call
            compiles (seconds). With False, the reference graph (quantize/dequantize ops in float) is returned: the
            same numbers, slowly; it is what :func:`save_int8` exports.

    Returns:
        The INT8 model: a :class:`FrozenInt8` (the reference graph is its ``._orig_mod``), or the reference graph.

    Raises:
        TypeError: If ``prepared`` is not a graph from :func:`prepare_qat`.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    if not is_prepared(prepared):
        raise TypeError(
            f"`prepared` must be a graph from `prepare_qat` (the callback's prepared model), got {type(prepared).__name__}"
        )
    graph = copy.deepcopy(prepared)
    set_qat_mode(graph, False)
    converted = convert_pt2e(graph)
    nn.Module.train(converted, False)  # the converted graph has no train/eval ops left; its own .eval() raises
    if not compile:
        return converted
    return _compile(converted)


def _compile(converted: nn.Module) -> nn.Module:
    return FrozenInt8(converted)


class FrozenInt8(nn.Module):
    """A converted INT8 graph compiled with inductor freezing, for inference.

    ``torch.compile`` compiles lazily (at the first call, and again for each new batch size: ``dynamic=False``, as
    the dynamic-batch path of the frozen qconv lowering fails a stride assertion in torch 2.14), and freezing is read
    from the global inductor config at that moment (``torch.compile(options={"freezing": True})`` does not reach the
    constant folding of the oneDNN weight prepacking: measured). So every call runs under
    ``torch._inductor.config.patch(freezing=True)`` and ``torch.no_grad()``, and the global config is left as it was.

    Args:
        converted: The graph from ``convert_pt2e`` (kept as ``._orig_mod``).
    """

    def __init__(self, converted: nn.Module) -> None:
        super().__init__()
        self._orig_mod = converted
        self._compiled = torch.compile(converted, dynamic=False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True), torch.no_grad():
            return self._compiled(*args, **kwargs)


def save_int8(model: nn.Module, path: Union[str, os.PathLike], example_inputs: ExampleInputs) -> None:
    """Save an INT8 model from :func:`convert_to_int8` as a ``torch.export`` program (int8 weights, dynamic batch).

    Args:
        model: The converted model (compiled or not).
        path: File to write (``.pt2``).
        example_inputs: Inputs of the model's forward, as for :func:`prepare_qat`.
    """
    graph = getattr(model, "_orig_mod", model)
    args, kwargs = _as_args_kwargs(_shrink(example_inputs))
    with torch.no_grad():
        program = torch.export.export(graph, args, kwargs, dynamic_shapes=_dynamic_shapes(args, kwargs))
    torch.export.save(program, path)


def load_int8(path: Union[str, os.PathLike], compile: bool = True) -> nn.Module:
    """Load a model written by :func:`save_int8`; compiled with freezing (see :func:`convert_to_int8`) by default."""
    module = torch.export.load(path).module()
    return _compile(module) if compile else module


# -------------------------------------------------------------------------------------------------------- callback
class QuantizationAwareTraining(Callback):
    """Trains with INT8 fake quantization (PT2E) and hands back a real, fast INT8 model after ``fit``.

    In ``setup`` (before Lightning restores a checkpoint and before ``configure_optimizers``) the model is exported
    with the first batch of the stage's dataloader (or ``example_inputs``) and replaced by the prepared graph:
    ``compression_target(pl_module)`` when the module names one (a distillation student), else ``pl_module.model``
    (a :class:`~lightning_compress.ClassificationModule`), or ``pl_module.<attribute>``. The graph's state (weights,
    BN statistics, observer ranges, scales and zero points) is part of the module's ``state_dict``, so checkpoints
    hold it and resuming or ``trainer.test(ckpt_path=...)`` re-prepares the same graph and loads it. Callbacks that
    select parameters in ``on_fit_start`` (``GradualMagnitudePruning``) therefore see the prepared graph, whatever
    the callback order; pruned weights stay exactly zero through fake quantization and conversion (symmetric weights).

    Schedules are in epochs, fractional values allowed, counted in optimizer steps (``trainer.global_step``):
    fake quantization is off before ``start_epoch`` (the observers already record ranges), observers are frozen from
    ``freeze_observers_epoch`` and BatchNorm statistics from ``freeze_bn_epoch``.

    After ``fit``, :attr:`int8_model` holds the converted model (compiled with inductor freezing when
    ``compile_int8``); with ``evaluate_int8`` its validation metrics are logged as ``val_int8/<metric>`` at the end
    of ``fit`` and its test metrics as ``test_int8/<metric>`` next to ``test/<metric>`` (a module with
    ``split_batch`` and ``val_metrics``/``test_metrics``, as :class:`~lightning_compress.ClassificationModule`).

    Args:
        scheme: ``"int8"``: weights int8 symmetric per output channel, activations uint8 affine per tensor.
        start_epoch: Epoch (fractional allowed) from which fake quantization is applied.
        freeze_observers_epoch: Epoch from which scales and zero points stop changing; None: never.
        freeze_bn_epoch: Epoch from which BatchNorm uses and keeps its running statistics; None: never.
        filter_fn: ``filter_fn(layer, fqn) -> bool`` for each layer with a ``weight``; False keeps it in float.
        skip_first_conv: Keep the first convolution in float.
        skip_classifier: Keep the last ``nn.Linear`` (the classifier) in float.
        attribute: Name of the submodule of the LightningModule to quantize; None: see above.
        example_inputs: Inputs to export with; None: the first batch of the stage's dataloader.
        evaluate_int8: Log the INT8 model's metrics (see above).
        compile_int8: Compile :attr:`int8_model` with inductor freezing (the fast path).
        verbose: 0 silent, 1 one line per phase change.

    Raises:
        ValueError: On any bad argument (all reported at once).

    Example:
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[QuantizationAwareTraining(freeze_bn_epoch=2)])
        >>> # trainer.fit(ClassificationModule(SmallCNN(), 10), datamodule); qat.int8_model(x)
    """

    def __init__(
        self,
        scheme: str = "int8",
        start_epoch: float = 0.0,
        freeze_observers_epoch: Optional[float] = None,
        freeze_bn_epoch: Optional[float] = None,
        filter_fn: Optional[FilterFn] = None,
        skip_first_conv: bool = False,
        skip_classifier: bool = False,
        attribute: Optional[str] = None,
        example_inputs: Optional[ExampleInputs] = None,
        evaluate_int8: bool = True,
        compile_int8: bool = True,
        verbose: int = 1,
    ) -> None:
        errors = _validate(
            scheme, start_epoch, freeze_observers_epoch, freeze_bn_epoch, filter_fn, skip_first_conv,
            skip_classifier, attribute, example_inputs, evaluate_int8, compile_int8, verbose,
        )  # fmt: skip
        if errors:
            raise ValueError("QuantizationAwareTraining: " + "; ".join(errors))
        self.scheme = scheme
        self.start_epoch = float(start_epoch)
        self.freeze_observers_epoch = freeze_observers_epoch
        self.freeze_bn_epoch = freeze_bn_epoch
        self.filter_fn = filter_fn
        self.skip_first_conv = skip_first_conv
        self.skip_classifier = skip_classifier
        self.attribute = attribute
        self.example_inputs = example_inputs
        self.evaluate_int8 = evaluate_int8
        self.compile_int8 = compile_int8
        self.verbose = verbose

        self.int8_model: Optional[nn.Module] = None
        self.int8_metrics: dict[str, float] = {}
        self._prepared: Optional[torch.fx.GraphModule] = None
        self._steps: dict[str, Optional[int]] = {"start": 0, "observers": None, "bn": None}
        self._phase: tuple[bool, bool, bool] = (True, False, False)  # fake quant on, observers frozen, BN frozen
        self._test_metrics: Optional[Any] = None
        self._example: Optional[ExampleInputs] = example_inputs

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(scheme=self.scheme, attribute=self.attribute)

    @property
    def prepared_model(self) -> Optional[torch.fx.GraphModule]:
        """The fake-quantized graph being trained (None before ``setup``)."""
        return self._prepared

    def save_int8(self, path: Union[str, os.PathLike]) -> None:
        """Save :attr:`int8_model` with :func:`save_int8` (the example inputs are those the model was exported with).

        Raises:
            RuntimeError: If there is no INT8 model yet (before the end of ``fit`` or ``test``).
        """
        if self.int8_model is None or self._example is None:
            raise RuntimeError("there is no INT8 model yet: it is built at the end of `fit` (or at the start of `test`)")
        save_int8(self.int8_model, path, self._example)

    # ------------------------------------------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        parent, name, module = self._locate(pl_module)
        if is_prepared(module):
            self._prepared = module
            return
        inputs = self.example_inputs if self.example_inputs is not None else _first_inputs(trainer, pl_module, stage)
        prepared = prepare_qat(module, inputs, self.filter_fn, self.skip_first_conv, self.skip_classifier)
        set_qat_mode(prepared, module.training)
        setattr(parent, name, prepared)
        self._prepared = prepared
        self._example = _shrink(inputs)
        if self.verbose:
            rank_zero_info(
                f"QAT: {type(module).__name__} -> INT8 fake quantization on {len(_fake_quantizers(prepared))} tensors"
            )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batches = trainer.num_training_batches
        accumulate = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        steps_per_epoch = math.ceil(batches / accumulate) if not math.isinf(batches) else None
        for key, epoch in (("start", self.start_epoch), ("observers", self.freeze_observers_epoch),
                           ("bn", self.freeze_bn_epoch)):  # fmt: skip
            if epoch is None or epoch == 0:
                self._steps[key] = None if epoch is None else 0
            elif steps_per_epoch is None:
                raise ValueError(
                    "the QAT schedule (`start_epoch`, `freeze_*_epoch`) needs a train dataloader with a length"
                )
            else:
                self._steps[key] = round(epoch * steps_per_epoch)
        self._apply_phase(trainer.global_step, force=True)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._apply_phase(trainer.global_step)
        self._sync()

    @override
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._sync()

    @override
    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._sync()

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test_metrics = None
        if self.evaluate_int8 and self._prepared is not None and _has_metrics(pl_module, "test_metrics"):
            self.int8_model = convert_to_int8(self._prepared, compile=self.compile_int8)
            self._test_metrics = pl_module.test_metrics.clone(prefix="test_int8/").to(pl_module.device)
            self._test_metrics.reset()

    @override
    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._sync()

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
        if self._test_metrics is not None and self.int8_model is not None:
            _update_metrics(pl_module, self.int8_model, batch, self._test_metrics)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._test_metrics is not None:
            values = {k: float(v) for k, v in self._test_metrics.compute().items()}
            self.int8_metrics.update(values)
            pl_module.log_dict(values)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._prepared is None:
            return
        self.int8_model = convert_to_int8(self._prepared, compile=self.compile_int8)
        loaders = trainer.val_dataloaders
        if not (self.evaluate_int8 and loaders is not None and _has_metrics(pl_module, "val_metrics")):
            return
        metrics = pl_module.val_metrics.clone(prefix="val_int8/").to(pl_module.device)
        metrics.reset()
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            for batch in loader:
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                _update_metrics(pl_module, self.int8_model, batch, metrics)
        values = {k: float(v) for k, v in metrics.compute().items()}
        self.int8_metrics.update(values)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)
        if self.verbose:
            rank_zero_info("QAT: INT8 model " + ", ".join(f"{k} = {v:.4f}" for k, v in values.items()))

    # ------------------------------------------------------------------------------------------------- state dict
    @override
    def state_dict(self) -> dict[str, Any]:
        # Scales, zero points, observer ranges and their enabled flags are buffers of the prepared graph: they are in
        # the module's state_dict. Only the phase flags live here (they are re-derived from the step on resume too).
        return {"phase": list(self._phase)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        phase = state_dict.get("phase", list(self._phase))
        self._phase = (bool(phase[0]), bool(phase[1]), bool(phase[2]))

    # ---------------------------------------------------------------------------------------------------- helpers
    def _locate(self, pl_module: pl.LightningModule) -> tuple[nn.Module, str, nn.Module]:
        """``(parent, attribute name, module)`` of the module to quantize."""
        if self.attribute is not None:
            module = pl_module.get_submodule(self.attribute)
            path = self.attribute
        else:
            target = compression_target(pl_module)
            if target is not pl_module:
                path = next((n for n, m in pl_module.named_modules() if m is target), None)
                if path is None:
                    raise ValueError("`compression_target` of the LightningModule is not one of its submodules")
                module = target
            elif isinstance(getattr(pl_module, "model", None), nn.Module):
                module, path = pl_module.model, "model"
            else:
                raise ValueError(
                    f"QuantizationAwareTraining does not know which submodule of {type(pl_module).__name__} to"
                    " quantize: pass `attribute=\"<name of the submodule>\"` (a ClassificationModule's is `model`)"
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
        for fq in _fake_quantizers(self._prepared):
            fq.enable_fake_quant(fake_quant)
        set_qat_mode(self._prepared, self._prepared.training, freeze_bn=frozen_bn, freeze_observers=frozen_obs)
        if self.verbose and phase != self._phase:
            rank_zero_info(
                f"QAT step {step}: fake quant {'on' if fake_quant else 'off'}, observers"
                f" {'frozen' if frozen_obs else 'live'}, BN statistics {'frozen' if frozen_bn else 'live'}"
            )
        self._phase = phase

    def _sync(self) -> None:
        if self._prepared is not None:
            _sync_mode(self._prepared)


# ---------------------------------------------------------------------------------------------------------- module
def _first_inputs(trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> Any:
    loop = {
        "fit": trainer.fit_loop,
        "validate": trainer.validate_loop,
        "test": trainer.test_loop,
        "predict": trainer.predict_loop,
    }[stage]
    try:
        loader = loop._data_source.dataloader()
        while isinstance(loader, (list, tuple)) or isinstance(loader, Mapping):
            loader = loader[0] if isinstance(loader, (list, tuple)) else next(iter(loader.values()))
        batch = next(iter(loader))
    except Exception as err:
        raise RuntimeError(
            f"QuantizationAwareTraining exports the model with the first batch of the {stage} dataloader and could not"
            f" get one ({type(err).__name__}: {err}); pass `example_inputs=` to the callback"
        ) from err
    if hasattr(pl_module, "split_batch"):
        return pl_module.split_batch(batch)[0]
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def _has_metrics(pl_module: pl.LightningModule, name: str) -> bool:
    return hasattr(pl_module, "split_batch") and hasattr(pl_module, name)


@torch.no_grad()
def _update_metrics(pl_module: Any, model: nn.Module, batch: Any, metrics: Any) -> None:
    inputs, labels = pl_module.split_batch(batch)
    out = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
    logits = out.logits if hasattr(out, "logits") else out
    if hasattr(pl_module, "_predictions"):
        preds = pl_module._predictions(logits)
    else:
        preds = logits
    metrics.update(preds, labels.float() if getattr(pl_module, "is_regression", False) else labels)


def _validate(
    scheme: Any,
    start_epoch: Any,
    freeze_observers_epoch: Any,
    freeze_bn_epoch: Any,
    filter_fn: Any,
    skip_first_conv: Any,
    skip_classifier: Any,
    attribute: Any,
    example_inputs: Any,
    evaluate_int8: Any,
    compile_int8: Any,
    verbose: Any,
) -> list[str]:
    """Every problem with the constructor arguments, as messages naming the argument, the value and what is allowed."""
    errors = []

    def is_number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if scheme not in SCHEMES:
        errors.append(f"`scheme` can be {', '.join(SCHEMES)}, got {scheme!r}")
    if not (is_number(start_epoch) and start_epoch >= 0):
        errors.append(f"`start_epoch` must be a number >= 0, got {start_epoch!r}")
    for name, value in (("freeze_observers_epoch", freeze_observers_epoch), ("freeze_bn_epoch", freeze_bn_epoch)):
        if value is None:
            continue
        if not (is_number(value) and value >= 0):
            errors.append(f"`{name}` must be a number >= 0 or None, got {value!r}")
        elif is_number(start_epoch) and value < start_epoch:
            errors.append(f"`{name}` must be >= `start_epoch` ({start_epoch}) or None, got {value!r}")
    if filter_fn is not None and not callable(filter_fn):
        errors.append(f"`filter_fn` must be a callable(module, fqn) -> bool or None, got {filter_fn!r}")
    for name, value in (
        ("skip_first_conv", skip_first_conv),
        ("skip_classifier", skip_classifier),
        ("evaluate_int8", evaluate_int8),
        ("compile_int8", compile_int8),
    ):
        if not isinstance(value, bool):
            errors.append(f"`{name}` must be a bool, got {value!r}")
    if attribute is not None and not (isinstance(attribute, str) and attribute):
        errors.append(f"`attribute` must be a submodule name or None, got {attribute!r}")
    if example_inputs is not None and not isinstance(example_inputs, (Tensor, tuple, list, Mapping)):
        errors.append(
            "`example_inputs` must be a tensor, a tuple of inputs, a dict of keyword inputs or None,"
            f" got {type(example_inputs).__name__}"
        )
    if verbose not in (0, 1) or isinstance(verbose, bool):
        errors.append(f"`verbose` can be 0 or 1, got {verbose!r}")
    return errors
