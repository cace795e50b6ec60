"""The calibrated graph of post-training quantization: a float model exported (evaluation mode), observed by the x86
Inductor quantizer's PTQ observers on calibration batches and converted, from which INT8 models with any of its layers
back in float are made without calibrating again (:class:`CalibratedGraph`).

:func:`~lightning_compress.quantization.ptq.quantize`, the sensitivity analysis, the accuracy budget and the
``PostTrainingQuantization`` callback all start here.

Example:
    >>> calibrated = calibrate(model, train_loader, calibration_batches=16)  # doctest: +SKIP
    >>> int8 = calibrated.int8()  # doctest: +SKIP
    >>> mixed = calibrated.int8(float_layers=["classifier"])  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from lightning_compress.core.batches import ExampleInputs, call_model
from lightning_compress.core.selection import FilterFn
from lightning_compress.core.validation import ArgumentErrors, check_finite, check_materialized
from lightning_compress.quantization.calibration import METRICS, calibration_inputs
from lightning_compress.quantization.export_inputs import (
    as_args_kwargs,
    dynamic_shapes,
    export_error_summary,
    shrink_inputs,
)
from lightning_compress.quantization.float_layers import LayerSite, layer_sites, with_float_layers
from lightning_compress.quantization.observers import OBSERVERS, SCHEMES, quantization_config
from lightning_compress.quantization.pt2e import finish_int8, prepare_exported, quantized_layer_names
from lightning_compress.quantization.smoothquant import SmoothQuantReport, input_absmax, smooth_graph_
from lightning_compress.quantization.torchao_workarounds import base_layer_classes, conv_bn_pattern_cache, x86_quantizer

__all__ = ["CalibratedGraph", "calibrate", "network_of", "prepare_ptq", "validate_ptq_arguments"]


@dataclass
class CalibratedGraph:
    """A calibrated and converted (reference) INT8 graph, from which INT8 models with any set of its layers back in
    float are made without calibrating again (:meth:`int8`)."""

    converted: torch.fx.GraphModule
    sites: dict[str, LayerSite]
    kept_float: list[str]
    example: ExampleInputs
    scheme: str
    observer: str
    batches: int
    seconds: float
    smoothquant: Optional[SmoothQuantReport] = None
    prepared: Optional[torch.fx.GraphModule] = None
    first_batch: Optional[ExampleInputs] = None

    @property
    def quantized(self) -> list[str]:
        """The quantized layers, in graph order."""
        return list(self.sites)

    def int8(self, float_layers: Sequence[str] = (), compile: bool = True) -> nn.Module:
        """The INT8 model with ``float_layers`` computing in float (a :class:`FrozenInt8` with ``compile``, else the
        reference graph: the same numbers, quantize steps in float)."""
        graph = with_float_layers(self.converted, self.sites, list(float_layers))
        return finish_int8(graph, compile)


def _export(model: nn.Module, example: ExampleInputs) -> torch.fx.GraphModule:
    args, kwargs = as_args_kwargs(shrink_inputs(example))
    try:
        return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes(args, kwargs)).module()
    except Exception as err:  # torch.export raises many types; all mean "this model cannot be captured"
        raise RuntimeError(
            f"post-training quantization needs a model that `torch.export.export` can capture, and"
            f" {type(model).__name__} failed: {export_error_summary(err)}\n"
            "Hint: data-dependent Python control flow (`if x.sum() > 0`), `.item()`/`.tolist()` on tensors and"
            " unsupported custom ops cannot be exported; rewrite that part with torch.where / torch.cond, or keep it"
            " out of the quantized module. The full torch.export error is chained above."
        ) from err


def prepare_ptq(
    model: nn.Module,
    example_inputs: ExampleInputs,
    observer: str = "histogram",
    scheme: str = "static",
    percentile: float = 99.99,
    filter_fn: Optional[FilterFn] = None,
    skip_first_conv: bool = False,
    skip_classifier: bool = False,
    smoothquant_alpha: Optional[float] = None,
    smoothquant_batches: Sequence[Any] = (),
) -> tuple[torch.fx.GraphModule, list[str], Optional[SmoothQuantReport]]:
    """Export ``model`` (evaluation mode) and insert PTQ observers: ready to calibrate.

    Args:
        model: A float model ``torch.export`` can capture; not modified (its mode is restored).
        example_inputs: One batch of inputs (tensor, tuple or dict), as for :func:`prepare_qat`.
        observer, scheme, percentile: See :func:`~lightning_compress.quantization.observers.quantization_config`.
        filter_fn, skip_first_conv, skip_classifier: Layers kept in float, as for :func:`prepare_qat`. With
            ``scheme="dynamic"`` only Linear layers are quantized (convs stay float).
        smoothquant_alpha: Apply SmoothQuant with this alpha to the quantized Linear layers before the observers
            are inserted (statistics from ``smoothquant_batches``); None: no SmoothQuant.
        smoothquant_batches: Model inputs for SmoothQuant's activation statistics.

    Returns:
        ``(prepared graph in evaluation mode, layers kept in float, SmoothQuant report or None)``.

    Raises:
        RuntimeError: If the model cannot be exported (the message names the op) or the quantizer cannot quantize
            a layer (the message names it), as for :func:`prepare_qat`.
    """
    keep_float, to_quantize = quantized_layer_names(model, filter_fn, skip_first_conv, skip_classifier)
    if scheme == "dynamic":  # the x86 quantizer's dynamic recipe covers Linear layers only
        keep_float += [f for f in to_quantize if not isinstance(model.get_submodule(f), nn.Linear)]
        to_quantize = [f for f in to_quantize if isinstance(model.get_submodule(f), nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        graph_module = _export(model, example_inputs)
        base_layer_classes(graph_module, model)  # timm's Conv2dSame and other subclasses of Conv / Linear
        report = None
        if smoothquant_alpha is not None:
            linears = [f for f in to_quantize if isinstance(model.get_submodule(f), nn.Linear)]
            stats = input_absmax(model, smoothquant_batches or [example_inputs], linears)
            report = smooth_graph_(graph_module, stats, smoothquant_alpha, linears)
    finally:
        model.train(was_training)
    config = quantization_config(observer, scheme, percentile)
    prepared = prepare_exported(graph_module, model, x86_quantizer(keep_float, config), to_quantize, is_qat=False)
    return prepared, keep_float, report


def calibrate(
    model: nn.Module,
    calibration_data: Any,
    calibration_batches: Optional[int] = 32,
    observer: str = "histogram",
    scheme: str = "static",
    percentile: float = 99.99,
    smoothquant_alpha: Optional[float] = None,
    filter_fn: Optional[FilterFn] = None,
    skip_first_conv: bool = False,
    skip_classifier: bool = False,
    batch_size: int = 32,
    keep_prepared: bool = False,
) -> CalibratedGraph:
    """Export, prepare, calibrate on the first ``calibration_batches`` batches and convert (see :func:`quantize`).

    Returns:
        A :class:`CalibratedGraph`; ``.int8()`` gives the INT8 model. With ``keep_prepared``, its ``prepared`` holds
        the calibrated fake-quant graph (observers in place) as well.

    Raises:
        ValueError: If the data yields no batch, or the weights hold NaN / Inf.
        RuntimeError: As :func:`prepare_ptq`.
    """
    start = time.perf_counter()
    check_materialized(model)
    batches = calibration_inputs(calibration_data, calibration_batches, batch_size)
    _, to_quantize = quantized_layer_names(model, filter_fn, skip_first_conv, skip_classifier)
    check_finite({f"{f}.weight": model.get_submodule(f).weight for f in to_quantize}, "post-training quantization")
    prepared, keep_float, report = prepare_ptq(
        model, batches[0], observer, scheme, percentile, filter_fn, skip_first_conv, skip_classifier,
        smoothquant_alpha, batches,
    )  # fmt: skip
    with torch.no_grad():
        for inputs in batches:
            call_model(prepared, inputs)
    sites = layer_sites(prepared, to_quantize)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    with conv_bn_pattern_cache():
        converted = convert_pt2e(copy.deepcopy(prepared) if keep_prepared else prepared)
    nn.Module.train(converted, False)
    return CalibratedGraph(
        converted=converted, sites=sites, kept_float=keep_float, example=shrink_inputs(batches[0]), scheme=scheme,
        observer=observer, batches=len(batches), seconds=time.perf_counter() - start, smoothquant=report,
        prepared=prepared if keep_prepared else None, first_batch=batches[0],
    )  # fmt: skip


def validate_ptq_arguments(errors: ArgumentErrors, **values: Any) -> None:
    """Record the problems with PTQ's shared arguments (those of :func:`quantize` that are passed)."""
    checks = {
        "calibration_batches": lambda v: errors.int("calibration_batches", v, optional=True),
        "observer": lambda v: errors.one_of("observer", v, OBSERVERS),
        "scheme": lambda v: errors.one_of("scheme", v, SCHEMES),
        "percentile": lambda v: errors.interval("percentile", v, 50, 100, "(]"),
        "smoothquant_alpha": lambda v: errors.interval("smoothquant_alpha", v, 0, 1, "[]", optional=True),
        "filter_fn": lambda v: errors.callable("filter_fn", v, "(module, fqn) -> bool"),
        "accuracy_budget": lambda v: errors.number("accuracy_budget", v, minimum=0, optional=True),
        "max_float_layers": lambda v: errors.int("max_float_layers", v, optional=True),
        "batch_size": lambda v: errors.int("batch_size", v),
        "verbose": lambda v: errors.verbose(v, levels=(0, 1)),
    }
    for name, value in values.items():
        if name in checks:
            checks[name](value)
        elif name == "metric":
            if not (callable(value) or (isinstance(value, str) and value in METRICS)):
                errors.add(
                    f"`metric` can be {' or '.join(METRICS)} or a callable(logits, labels) -> float, got {value!r}"
                )
        else:
            errors.bool(name, value)


def network_of(model: nn.Module) -> nn.Module:
    import lightning.pytorch as pl

    if isinstance(model, pl.LightningModule):
        from lightning_compress.core.target import find_network

        return find_network(model)[0]
    return model
