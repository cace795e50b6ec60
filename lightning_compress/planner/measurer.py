"""How the planner measures a candidate: the metric on the validation batches, and latency, throughput and peak memory
on this machine through the ``lc-bench`` machinery (:class:`~lightning_compress.bench.timing.PathTimer`): every
candidate is timed round-robin with the fp32 model (interleaved repeats), every timing is checked for a busy machine
and a wide spread, re-measured, and marked untrusted with the figures when it stays so (a latency target is then not
met: :meth:`~lightning_compress.planner.budget.Budget.hardware_shortfalls`).

With ``metric="perplexity"`` the validation batches are token windows ``(B, L)`` and the metric is the perplexity
over all of them (:func:`~lightning_compress.analysis.perplexity.perplexity`; lower is better). With ``time=False``
nothing is timed (a memory-only budget of a language model: latency, throughput and peak memory stay None).

Anything with a ``measure(model, size_bytes) -> Measurement`` method can stand in (tests fake the numbers).

Example:
    >>> measurer = BenchMeasurer(net, val_batches, example_batch)  # doctest: +SKIP
    >>> measurer.measure(int8_model, size_bytes=120_000).speedup  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Protocol, Union

import torch
from torch import nn

from lightning_compress.bench.results import BenchResult
from lightning_compress.bench.timing import PathTimer, TimingChecks
from lightning_compress.core.batches import ExampleInputs, batch_size_of, call_model, move_data_to_device
from lightning_compress.planner.budget import Measurement
from lightning_compress.quantization.calibration import Metric, evaluate

__all__ = ["BenchMeasurer", "Measurer"]


class Measurer(Protocol):
    """What the walk needs of a measurer."""

    def measure(self, model: nn.Module, size_bytes: Optional[int], name: str = "") -> Measurement: ...


class BenchMeasurer:
    """Measures candidates against ``baseline`` (the fp32 model) on ``example_inputs`` and ``val_batches``.

    Args:
        baseline: The fp32 model every timing is interleaved with (its first row is its own timing).
        val_batches: Labelled validation batches (a list), for the metric.
        example_inputs: One batch of model inputs at the budget's batch size.
        metric: ``"accuracy"``, ``"agreement"``, ``"perplexity"`` (token-window batches) or
            ``metric(logits, labels)`` (see :func:`~lightning_compress.quantization.calibration.evaluate`).
        device: Where the candidates run.
        warmup, repeats, min_warmup_s: As for :class:`~lightning_compress.bench.timing.PathTimer`.
        checks: The busy-machine and spread checks (None: none, for tests only).
        time: Time every candidate (False: the metric only).
    """

    def __init__(
        self,
        baseline: nn.Module,
        val_batches: Sequence[Any],
        example_inputs: ExampleInputs,
        metric: Metric = "accuracy",
        device: Union[str, torch.device] = "cpu",
        warmup: int = 3,
        repeats: int = 10,
        min_warmup_s: float = 0.25,
        checks: Optional[TimingChecks] = TimingChecks(),  # noqa: B008 -- frozen, shared safely
        time: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.baseline = baseline.to(self.device).eval()
        self.val_batches = list(val_batches)
        self.inputs = move_data_to_device(example_inputs, self.device)
        self.metric = metric
        self.timer = PathTimer(batch_size_of(self.inputs), self.device, warmup, repeats, min_warmup_s, checks=checks)
        self._reference: Optional[list[torch.Tensor]] = None
        self.time = time
        self.baseline_row = self._time(self.baseline, "fp32") if time else BenchResult("fp32", "planner")

    def _time(self, model: nn.Module, name: str) -> BenchResult:
        row = self.timer.run(BenchResult(name, "planner"), lambda: lambda: call_model(model, self.inputs))
        if not row.available:
            raise RuntimeError(f"the planner cannot time {name} on {self.device}: {row.reason}")
        return row

    def _metric(self, model: nn.Module) -> float:
        batches = [move_data_to_device(b, self.device) for b in self.val_batches]
        if self.metric == "perplexity":
            from lightning_compress.analysis.perplexity import perplexity

            return perplexity(model, torch.cat(batches)).perplexity
        if self.metric == "agreement" and self._reference is None:
            from lightning_compress.quantization.calibration import logits_of, split_labels

            with torch.no_grad():
                self._reference = [logits_of(call_model(self.baseline, split_labels(b)[0])) for b in batches]
        return evaluate(model, batches, self.metric, self._reference)

    @torch.no_grad()
    def measure(self, model: nn.Module, size_bytes: Optional[int], name: str = "") -> Measurement:
        """The metric and the interleaved timing of ``model`` (the baseline itself: its own row)."""
        if isinstance(model, nn.Module):
            model.eval()
        if model is self.baseline or not self.time:
            row = self.baseline_row
        else:
            row = self._time(model, name or type(model).__name__)
        return Measurement(
            metric=self._metric(model),
            latency_ms=row.latency_ms,
            speedup=row.speedup,
            throughput=row.throughput,
            peak_memory_mb=row.peak_memory_mb,
            size_bytes=size_bytes,
            untrusted=row.untrusted,
        )
