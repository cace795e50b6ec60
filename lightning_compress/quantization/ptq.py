"""Post-training quantization (PTQ): a real INT8 model from a float model and a few calibration batches, no training.

The path is the QAT path's without the training (:mod:`~lightning_compress.quantization.pt2e`): ``torch.export`` of the
model in evaluation mode (batch dimension dynamic), torchao's ``prepare_pt2e`` with the x86 Inductor quantizer
(``is_qat=False``; Conv + BatchNorm folded), the observers run on the calibration batches, ``convert_pt2e``, and
``torch.compile`` with inductor freezing (:class:`~lightning_compress.quantization.pt2e.FrozenInt8`), so that
oneDNN's INT8 kernels run it. Weights are int8 symmetric per output channel, activations uint8 affine per tensor.

Options: the calibration observer (:mod:`~lightning_compress.quantization.observers`), the ``"dynamic"`` scheme
(activation scales computed per batch at run time, Linear layers only: ``experiments/ptq/`` measures when it is
faster than static INT8 on your CPU; choose it with ``scheme="dynamic"``), SmoothQuant
(:mod:`~lightning_compress.quantization.smoothquant`, ``smoothquant_alpha=0.5``), layers kept in float
(``filter_fn``, ``skip_first_conv``, ``skip_classifier``), and an accuracy budget: the most sensitive layers kept in
float until the measured drop is within it (:mod:`~lightning_compress.quantization.accuracy_budget`).

Example:
    >>> int8 = quantize(model, train_loader, calibration_batches=16)  # doctest: +SKIP
    >>> int8(x).argmax(-1)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch  # noqa: F401 - the doctests use it
from torch import nn

from lightning_compress.core.selection import FilterFn
from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.quantization.calibration import Metric
from lightning_compress.quantization.ptq_graph import calibrate, network_of, validate_ptq_arguments
from lightning_compress.quantization.smoothquant import SmoothQuantReport

__all__ = ["QuantizationReport", "quantize"]


@dataclass
class QuantizationReport:
    """What :func:`quantize` did, attached to the model it returns as ``model.quantization_report``.

    Attributes:
        scheme, observer: As passed.
        calibration_batches: Batches the observers saw.
        calibration_seconds: Export, SmoothQuant, calibration and conversion (wall time, compile excluded).
        quantized_layers: Layers whose weights (and inputs) are INT8 in the returned model.
        float_layers: Layers kept in float: by ``filter_fn`` / ``skip_*`` and by the budget.
        smoothquant: The SmoothQuant pass's report, or None.
        accuracy_budget, metric: As passed (budget search only).
        float_metric, int8_metric, final_metric: The metric of the float model, of the model with every layer
            quantized, and of the returned model (budget search only).
        kept_for_budget: The layers the budget search kept in float, most sensitive first.
        budget_met: Whether ``float_metric - final_metric <= accuracy_budget``.
        latency_ms: ``{"fp32": ..., "int8": ..., "mixed": ...}`` per call on one calibration batch (budget search
            with ``measure_latency``); a timing of the machine it ran on, not a benchmark.
    """

    scheme: str
    observer: str
    calibration_batches: int
    calibration_seconds: float
    quantized_layers: list[str]
    float_layers: list[str]
    smoothquant: Optional[SmoothQuantReport] = None
    accuracy_budget: Optional[float] = None
    metric: Optional[str] = None
    float_metric: Optional[float] = None
    int8_metric: Optional[float] = None
    final_metric: Optional[float] = None
    kept_for_budget: list[str] = field(default_factory=list)
    budget_met: Optional[bool] = None
    latency_ms: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """A few readable lines."""
        lines = [
            f"PTQ {self.scheme} INT8 ({self.observer} observer, {self.calibration_batches} calibration batches,"
            f" {self.calibration_seconds:.1f} s): {len(self.quantized_layers)} layers INT8,"
            f" {len(self.float_layers)} in float"
        ]
        if self.smoothquant is not None:
            lines.append(f"SmoothQuant alpha={self.smoothquant.alpha}: {len(self.smoothquant.layers)} Linear layers")
        if self.accuracy_budget is not None:
            lines.append(
                f"{self.metric}: fp32 {self.float_metric:.4f}, all INT8 {self.int8_metric:.4f}, returned"
                f" {self.final_metric:.4f} (budget {self.accuracy_budget:g}: {'met' if self.budget_met else 'NOT met'})"
                f"; kept in float for it: {', '.join(self.kept_for_budget) or 'none'}"
            )
        if self.latency_ms:
            lines.append("latency ms: " + ", ".join(f"{k} {v:.2f}" for k, v in self.latency_ms.items()))
        return "\n".join(lines)


def quantize(
    model: nn.Module,
    calibration_data: Any,
    *,
    calibration_batches: Optional[int] = 32,
    observer: str = "histogram",
    scheme: str = "static",
    percentile: float = 99.99,
    smoothquant_alpha: Optional[float] = None,
    filter_fn: Optional[FilterFn] = None,
    skip_first_conv: bool = False,
    skip_classifier: bool = False,
    accuracy_budget: Optional[float] = None,
    eval_data: Any = None,
    metric: Metric = "accuracy",
    max_float_layers: Optional[int] = None,
    measure_latency: bool = True,
    compile: bool = True,
    batch_size: int = 32,
    verbose: int = 0,
) -> nn.Module:
    """Post-training static (or dynamic) INT8 quantization of ``model``: the fast INT8 model, with no training.

    Args:
        model: A float model ``torch.export`` can capture (a LightningModule: its network,
            :func:`~lightning_compress.core.target.find_network`); not modified.
        calibration_data: A DataLoader, an iterable of batches (``(inputs, labels)``, dicts, bare inputs), a dict
            batch, or a tensor of inputs ``(N, ...)`` split into batches of ``batch_size``.
        calibration_batches: Batches to calibrate on (None: all).
        observer: Activation range observer: ``"histogram"`` (default, L2-optimal clipping), ``"minmax"``,
            ``"moving_average"`` or ``"percentile"`` (:mod:`~lightning_compress.quantization.observers`).
        scheme: ``"static"`` (calibrated activation scales) or ``"dynamic"`` (activation scales per batch at run
            time; Linear layers only).
        percentile: For ``observer="percentile"``: the upper quantile in percent, in ``(50, 100]``.
        smoothquant_alpha: Run SmoothQuant with this alpha in ``[0, 1]`` on the Linear layers first; None: off.
        filter_fn: ``filter_fn(layer, fqn) -> bool`` for every layer with a weight: False keeps it in float.
        skip_first_conv: Keep the first convolution in float.
        skip_classifier: Keep the last ``nn.Linear`` in float.
        accuracy_budget: The largest drop of ``metric`` (in its own units: 0.003 is 0.3 point of accuracy) to accept:
            layers are kept in float, most sensitive first (the recovery when each alone stays float, measured on
            ``eval_data``), greedily, until the drop is within it. A budget that no set of at most
            ``max_float_layers`` layers meets gives a warning and the best set found. None: quantize every layer.
        eval_data: Labelled batches for the budget (never the calibration batches: keep a held-out split).
        metric: ``"accuracy"``, ``"agreement"`` (top-1 agreement with the float model) or ``metric(logits, labels)``.
        max_float_layers: At most this many layers kept in float for the budget (default: a quarter, at least 1).
        measure_latency: With a budget, time fp32 eager, all-INT8 and the returned model on one calibration batch.
        compile: ``torch.compile`` with inductor freezing (the fast oneDNN path; the first call of each batch shape
            compiles). False: the reference graph (same numbers, slow).
        batch_size: Rows per calibration batch when ``calibration_data`` is a tensor.
        verbose: 1 prints the report.

    Returns:
        The INT8 model (a :class:`~lightning_compress.quantization.pt2e.FrozenInt8`, or the reference graph), with
        ``.quantization_report`` (:class:`QuantizationReport`); save it with ``save_quantized``.

    Raises:
        ValueError: On a bad argument (all reported at once), no calibration batch, NaN / Inf weights, or a budget
            without ``eval_data``.
        RuntimeError: If the model cannot be exported (the message names the failing op) or a layer cannot be
            quantized (the message names it and the ``filter_fn`` that keeps it in float).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                           torch.nn.Linear(4 * 6 * 6, 2))
        >>> int8 = quantize(net, torch.randn(64, 1, 8, 8), calibration_batches=2, compile=False)
        >>> int8(torch.randn(3, 1, 8, 8)).shape, int8.quantization_report.quantized_layers
        (torch.Size([3, 2]), ['0', '3'])
    """
    errors = ArgumentErrors("quantize: ")
    errors.require(isinstance(model, nn.Module), "model", "an nn.Module", type(model).__name__)
    validate_ptq_arguments(
        errors, calibration_batches=calibration_batches, observer=observer, scheme=scheme, percentile=percentile,
        smoothquant_alpha=smoothquant_alpha, filter_fn=filter_fn, skip_first_conv=skip_first_conv,
        skip_classifier=skip_classifier, accuracy_budget=accuracy_budget, metric=metric,
        max_float_layers=max_float_layers, measure_latency=measure_latency, compile=compile, batch_size=batch_size,
        verbose=verbose,
    )  # fmt: skip
    if accuracy_budget is not None and eval_data is None:
        errors.add(
            "`accuracy_budget` is measured on `eval_data`: pass labelled held-out batches (not the calibration ones)"
        )
    errors.raise_if_any()
    network = network_of(model)
    calibrated = calibrate(
        network, calibration_data, calibration_batches, observer, scheme, percentile, smoothquant_alpha, filter_fn,
        skip_first_conv, skip_classifier, batch_size,
    )  # fmt: skip
    report = QuantizationReport(
        scheme=scheme, observer=observer, calibration_batches=calibrated.batches,
        calibration_seconds=calibrated.seconds, quantized_layers=calibrated.quantized,
        float_layers=list(calibrated.kept_float), smoothquant=calibrated.smoothquant,
    )  # fmt: skip
    float_layers: list[str] = []
    if accuracy_budget is not None:
        from lightning_compress.quantization.accuracy_budget import measure_latency_ms, search_float_layers

        result = search_float_layers(network, calibrated, eval_data, metric, accuracy_budget, max_float_layers)
        float_layers = result.float_layers
        report.accuracy_budget, report.metric = accuracy_budget, metric if isinstance(metric, str) else "custom"
        report.float_metric, report.int8_metric, report.final_metric = (
            result.float_metric,
            result.int8_metric,
            result.metric,
        )
        report.kept_for_budget, report.budget_met = float_layers, result.met
        report.quantized_layers = [f for f in calibrated.quantized if f not in float_layers]
        report.float_layers += float_layers
        if measure_latency:
            report.latency_ms = measure_latency_ms(network, calibrated, float_layers, calibrated.first_batch)
    int8 = calibrated.int8(float_layers, compile=compile)
    int8.quantization_report = report
    if verbose:
        print(report.summary(), flush=True)
    return int8
