"""Per-layer sensitivity to INT8 post-training quantization: for each quantizable layer, the metric drop when that
layer alone is quantized, and the recovery when it alone stays in float, from one export and one calibration.

Every variant is the same calibrated graph with some layers put back in float
(:func:`~lightning_compress.quantization.float_layers.with_float_layers`): a layer "alone quantized" has its weight and
its input in INT8 and every other layer in float; a layer "alone in float" is the INT8 model with that one layer in
float. Evaluations run the reference graph (quantize steps in float, the numbers of the compiled model).

Example:
    >>> table = quantization_sensitivity(model, train_loader, val_loader, metric="accuracy")  # doctest: +SKIP
    >>> print(table.to_markdown(by="recovery"))  # doctest: +SKIP
    >>> table.plot("sensitivity.png")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from torch import nn

from lightning_compress.core.files import atomic_path, atomic_write_text
from lightning_compress.core.selection import FilterFn
from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.quantization.calibration import Metric, eval_batches, evaluate

if TYPE_CHECKING:
    from lightning_compress.quantization.ptq_graph import CalibratedGraph

__all__ = ["LayerSensitivity", "SensitivityTable", "layer_sensitivity", "quantization_sensitivity"]

SORT_KEYS = ("drop", "recovery", "layer", "parameters")


@dataclass
class LayerSensitivity:
    """One layer's row: ``drop = float_metric - metric_quantized_alone`` and ``recovery = metric_float_alone -
    int8_metric`` (None where that variant was not measured)."""

    layer: str
    kind: str
    parameters: int
    metric_quantized_alone: Optional[float] = None
    drop: Optional[float] = None
    metric_float_alone: Optional[float] = None
    recovery: Optional[float] = None


@dataclass
class SensitivityTable:
    """The rows of every quantized layer (graph order), the float and all-INT8 metrics, sortable and plottable."""

    rows: list[LayerSensitivity]
    metric: str
    float_metric: float
    int8_metric: float
    notes: list[str] = field(default_factory=list)

    def sorted(self, by: str = "drop", descending: bool = True) -> list[LayerSensitivity]:
        """The rows ordered by ``drop``, ``recovery``, ``layer`` or ``parameters`` (unmeasured values last).

        Raises:
            ValueError: On another key.
        """
        if by not in SORT_KEYS:
            raise ValueError(f"`by` can be {', '.join(SORT_KEYS)}, got {by!r}")
        measured = [r for r in self.rows if getattr(r, by) is not None]
        rest = [r for r in self.rows if getattr(r, by) is None]
        return sorted(measured, key=lambda r: getattr(r, by), reverse=descending) + rest

    def ranking(self) -> list[str]:
        """Layers most worth keeping in float first: by recovery, then drop (both descending)."""
        order = sorted(self.rows, key=lambda r: (-(r.recovery or 0.0), -(r.drop or 0.0)))
        return [r.layer for r in order]

    def to_markdown(self, by: str = "drop") -> str:
        """A Markdown table sorted by ``by`` (see :meth:`sorted`)."""

        def fmt(v: Optional[float], signed: bool = False) -> str:
            return "-" if v is None else f"{v:+.4f}" if signed else f"{v:.4f}"

        lines = [
            f"{self.metric}: float {self.float_metric:.4f}, every layer INT8 {self.int8_metric:.4f}",
            "",
            "| layer | kind | parameters | metric, alone INT8 | drop | metric, alone float | recovery |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.sorted(by):
            lines.append(
                f"| {r.layer} | {r.kind} | {r.parameters:,} | {fmt(r.metric_quantized_alone)} | {fmt(r.drop, True)} |"
                f" {fmt(r.metric_float_alone)} | {fmt(r.recovery, True)} |"
            )
        return "\n".join(lines + [f"\n{n}" for n in self.notes])

    def write_csv(self, path: Union[str, os.PathLike]) -> Path:
        """Write the rows (graph order) to ``path`` atomically; returns the path."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(asdict(self.rows[0])) if self.rows else ["layer"])
        writer.writeheader()
        for row in self.rows:
            writer.writerow(asdict(row))
        atomic_write_text(path, buffer.getvalue())
        return Path(path)

    def plot(self, path: Union[str, os.PathLike], by: str = "drop", top: int = 40) -> Path:
        """A bar chart of the ``top`` layers by ``by``: drop when alone INT8 and recovery when alone float,
        written atomically as PNG (matplotlib, Agg backend); returns the path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.sorted(by)[:top][::-1]
        fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(rows) + 1)))
        y = range(len(rows))
        ax.barh([i + 0.2 for i in y], [r.drop or 0.0 for r in rows], height=0.4, label="drop, layer alone INT8")
        ax.barh(
            [i - 0.2 for i in y], [r.recovery or 0.0 for r in rows], height=0.4, label="recovery, layer alone float"
        )
        ax.set_yticks(list(y), [r.layer for r in rows], fontsize=7)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_xlabel(f"{self.metric} (float {self.float_metric:.4f}, all INT8 {self.int8_metric:.4f})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        return Path(path)


def layer_sensitivity(
    network: nn.Module,
    calibrated: CalibratedGraph,
    batches: Sequence[Any],
    metric: Metric = "accuracy",
    quantized_alone: bool = True,
    float_alone: bool = True,
    reference: Optional[list[torch.Tensor]] = None,
    layers: Optional[Sequence[str]] = None,
) -> SensitivityTable:
    """The sensitivity rows of ``layers`` (default: every quantized layer) of a calibrated graph.

    Args:
        network: The float model (for the kinds and sizes of layers, and its metric).
        calibrated: From :func:`~lightning_compress.quantization.ptq_graph.calibrate`.
        batches: Evaluation batches (a list).
        metric: As for :func:`~lightning_compress.quantization.calibration.evaluate`.
        quantized_alone: Measure each layer alone INT8 (``drop``).
        float_alone: Measure each layer alone float (``recovery``).
        reference: The float model's logits per batch, for ``metric="agreement"``.
        layers: The layers to measure.

    Returns:
        A :class:`SensitivityTable`; its ``float_metric`` is measured here.
    """
    from lightning_compress.quantization.calibration import logits_of, split_labels

    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            if metric == "agreement" and reference is None:
                reference = [logits_of(network(**i) if isinstance(i, dict) else network(i)).float()
                             for i in (split_labels(b)[0] for b in batches)]  # fmt: skip
            float_metric = evaluate(network, batches, metric, reference)
    finally:
        network.train(was_training)
    every = calibrated.quantized
    int8_metric = evaluate(calibrated.int8(compile=False), batches, metric, reference)
    rows = []
    for fqn in layers if layers is not None else every:
        layer = network.get_submodule(fqn)
        row = LayerSensitivity(fqn, type(layer).__name__, int(layer.weight.numel()))
        if quantized_alone:
            alone = calibrated.int8([f for f in every if f != fqn], compile=False)
            row.metric_quantized_alone = evaluate(alone, batches, metric, reference)
            row.drop = float_metric - row.metric_quantized_alone
        if float_alone:
            row.metric_float_alone = evaluate(calibrated.int8([fqn], compile=False), batches, metric, reference)
            row.recovery = row.metric_float_alone - int8_metric
        rows.append(row)
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    return SensitivityTable(rows, name, float_metric, int8_metric)


def quantization_sensitivity(
    model: nn.Module,
    calibration_data: Any,
    eval_data: Any,
    metric: Metric = "accuracy",
    *,
    calibration_batches: Optional[int] = 32,
    observer: str = "histogram",
    scheme: str = "static",
    percentile: float = 99.99,
    smoothquant_alpha: Optional[float] = None,
    filter_fn: Optional[FilterFn] = None,
    skip_first_conv: bool = False,
    skip_classifier: bool = False,
    batch_size: int = 32,
    plot: Optional[Union[str, os.PathLike]] = None,
) -> SensitivityTable:
    """Per-layer sensitivity of ``model`` to INT8 PTQ: the drop when each layer alone is quantized and the recovery
    when it alone stays in float (2 evaluations of ``eval_data`` per layer, after one calibration).

    Args:
        model: The float model (not modified).
        calibration_data: As for :func:`~lightning_compress.quantization.ptq.quantize`.
        eval_data: Labelled batches to measure ``metric`` on (held out from the calibration data).
        metric: ``"accuracy"``, ``"agreement"`` or ``metric(logits, labels) -> float`` (higher is better).
        calibration_batches, observer, scheme, percentile, smoothquant_alpha, filter_fn, skip_first_conv,
            skip_classifier, batch_size: As for :func:`~lightning_compress.quantization.ptq.quantize`.
        plot: Write the bar chart there (PNG, atomically).

    Returns:
        A :class:`SensitivityTable` (``.sorted(by=...)``, ``.to_markdown()``, ``.write_csv()``, ``.plot()``).

    Raises:
        ValueError: On a bad argument, or no calibration / evaluation batch.

    Example:
        >>> table = quantization_sensitivity(net, train_loader, val_loader)  # doctest: +SKIP
        >>> [row.layer for row in table.sorted("drop")][:3]  # doctest: +SKIP
    """
    from lightning_compress.quantization.ptq_graph import calibrate, network_of, validate_ptq_arguments

    errors = ArgumentErrors("quantization_sensitivity: ")
    validate_ptq_arguments(
        errors, calibration_batches=calibration_batches, observer=observer, scheme=scheme, percentile=percentile,
        smoothquant_alpha=smoothquant_alpha, filter_fn=filter_fn, skip_first_conv=skip_first_conv,
        skip_classifier=skip_classifier, metric=metric, batch_size=batch_size,
    )  # fmt: skip
    errors.raise_if_any()
    if eval_data is calibration_data:
        warnings.warn(
            "quantization_sensitivity: `eval_data` is the calibration data; the drops measured on the batches the"
            " observers saw are optimistic: pass a held-out split",
            stacklevel=2,
        )
    network = network_of(model)
    batches = eval_batches(eval_data)
    calibrated = calibrate(
        network, calibration_data, calibration_batches, observer, scheme, percentile, smoothquant_alpha, filter_fn,
        skip_first_conv, skip_classifier, batch_size,
    )  # fmt: skip
    table = layer_sensitivity(network, calibrated, batches, metric)
    if plot is not None:
        table.plot(plot)
    return table
