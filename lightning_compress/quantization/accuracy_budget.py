"""Mixed precision for an accuracy budget: keep the most sensitive layers of a PTQ model in float, greedily, until the
measured drop of a metric is within the budget; and what those float layers cost in latency.

The ranking is the recovery of each layer: the metric of the INT8 model with that layer alone in float, minus the
metric with every layer INT8 (:func:`~lightning_compress.quantization.sensitivity.layer_sensitivity`). Layers are then
put back in float in that order, one more at a time, each set measured for real (a converted graph with those layers
in float, :func:`~lightning_compress.quantization.float_layers.with_float_layers`), until ``float - mixed <= budget``.

Example:
    >>> result = search_float_layers(net, calibrated, val_batches, "accuracy", budget=0.003)  # doctest: +SKIP
    >>> result.float_layers, result.met  # doctest: +SKIP
    (['bert.encoder.layer.5.output.dense'], True)
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from lightning_compress.core.batches import ExampleInputs, call_model
from lightning_compress.quantization.calibration import Metric, eval_batches, evaluate, logits_of, split_labels

if TYPE_CHECKING:
    from lightning_compress.quantization.ptq_graph import CalibratedGraph

__all__ = ["BudgetResult", "measure_latency_ms", "search_float_layers"]


@dataclass
class BudgetResult:
    """The outcome of :func:`search_float_layers`.

    Attributes:
        float_layers: The layers to keep in float (most sensitive first); the best set found if the budget is not met.
        float_metric: The float model's metric on the evaluation batches.
        int8_metric: The metric with every layer INT8.
        metric: The metric with ``float_layers`` in float.
        met: Whether ``float_metric - metric <= budget``.
        budget: The budget.
        tried: ``(float layers, metric)`` of every set measured, in order.
    """

    float_layers: list[str]
    float_metric: float
    int8_metric: float
    metric: float
    met: bool
    budget: float
    tried: list[tuple[list[str], float]] = field(default_factory=list)


@torch.no_grad()
def _reference_logits(model: nn.Module, batches: Sequence[Any]) -> list[torch.Tensor]:
    return [logits_of(call_model(model, split_labels(b)[0])).float() for b in batches]


def search_float_layers(
    network: nn.Module,
    calibrated: CalibratedGraph,
    eval_data: Any,
    metric: Metric,
    budget: float,
    max_float_layers: Optional[int] = None,
    ranking: Optional[Sequence[str]] = None,
) -> BudgetResult:
    """The fewest most-sensitive layers to keep in float for ``float_metric - metric <= budget`` (greedy).

    Args:
        network: The float model (evaluated in evaluation mode; its mode is restored).
        calibrated: Its calibrated graph (:func:`~lightning_compress.quantization.ptq_graph.calibrate`).
        eval_data: Labelled batches, iterated several times (materialised as a list on the CPU).
        metric: As for :func:`~lightning_compress.quantization.calibration.evaluate` (higher is better).
        budget: The largest acceptable drop, in the metric's units.
        max_float_layers: At most this many layers in float (default: a quarter of the quantized layers, >= 1).
        ranking: The order to try layers in; default: by recovery (measured here, one evaluation per layer).

    Returns:
        A :class:`BudgetResult`. If no set meets the budget, a warning says so and the set with the best metric is
        returned (the fewest layers among equals).
    """
    from lightning_compress.quantization.sensitivity import layer_sensitivity

    batches = eval_batches(eval_data)
    was_training = network.training
    network.eval()
    try:
        reference = _reference_logits(network, batches) if metric == "agreement" else None
        float_metric = evaluate(network, batches, metric, reference)
    finally:
        network.train(was_training)
    int8_metric = evaluate(calibrated.int8(compile=False), batches, metric, reference)
    tried: list[tuple[list[str], float]] = [([], int8_metric)]
    if float_metric - int8_metric <= budget:
        return BudgetResult([], float_metric, int8_metric, int8_metric, True, budget, tried)
    layers = calibrated.quantized
    limit = max_float_layers if max_float_layers is not None else max(1, len(layers) // 4)
    limit = min(limit, len(layers))
    measured: dict[tuple[str, ...], float] = {}
    if ranking is None:
        table = layer_sensitivity(network, calibrated, batches, metric, quantized_alone=False, reference=reference)
        table.float_metric, table.int8_metric = float_metric, int8_metric
        ranking = table.ranking()
        measured = {(row.layer,): row.metric_float_alone for row in table.rows if row.metric_float_alone is not None}
    kept: list[str] = []
    best: tuple[list[str], float] = ([], int8_metric)
    for layer in list(ranking)[:limit]:
        kept = [*kept, layer]
        value = measured.get(tuple(kept))
        if value is None:
            value = evaluate(calibrated.int8(kept, compile=False), batches, metric, reference)
        tried.append((kept, value))
        if value > best[1]:
            best = (kept, value)
        if float_metric - value <= budget:
            return BudgetResult(kept, float_metric, int8_metric, value, True, budget, tried)
    warnings.warn(
        f"accuracy_budget={budget:g}: no set of at most {limit} layers kept in float meets it (float"
        f" {float_metric:.4f}, all INT8 {int8_metric:.4f}, best {best[1]:.4f} with {len(best[0])} float layers:"
        f" {', '.join(best[0]) or 'none'}). Returning the best set found; raise `max_float_layers`, try another"
        " observer or SmoothQuant, or quantization-aware training",
        stacklevel=3,
    )
    return BudgetResult(best[0], float_metric, int8_metric, best[1], False, budget, tried)


def _median_ms(fn: Any, min_seconds: float = 0.2, repeats: int = 7) -> float:
    fn()  # warm-up (and compilation)
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    calls = max(1, math.ceil(min_seconds / repeats / once))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return 1e3 * statistics.median(times)


@torch.no_grad()
def measure_latency_ms(
    network: nn.Module, calibrated: CalibratedGraph, float_layers: Sequence[str], batch: Optional[ExampleInputs]
) -> dict[str, float]:
    """Median ms per call of fp32 eager, every layer INT8 and the mixed model (compiled) on ``batch``, interleaved
    once each; a rough figure of the machine it runs on (``experiments/ptq/benchmark.py`` measures properly).

    Returns:
        ``{"fp32": ..., "int8": ..., "mixed": ...}``, or ``{}`` without a batch.
    """
    if batch is None:
        return {}
    was_training = network.training
    network.eval()
    try:
        int8, mixed = calibrated.int8(compile=True), calibrated.int8(float_layers, compile=True)
        return {
            "fp32": _median_ms(lambda: call_model(network, batch)),
            "int8": _median_ms(lambda: call_model(int8, batch)),
            "mixed": _median_ms(lambda: call_model(mixed, batch)),
        }
    finally:
        network.train(was_training)
