"""The walk's steps, in the order of the design document's decision tree, and what each one needs to know: the
:class:`WalkContext` (the fp32 model, the data, the budget, the machine, what earlier steps measured) and the
:class:`Step` protocol (a name, why this machine or this walk cannot benefit from it, and the candidates it makes).

Order (:data:`STEP_ORDER`): ``ptq_int8`` -> ``ptq_sensitivity`` -> ``qat_int8`` -> ``int4_weight_only`` ->
``nm24`` -> ``prune_distill`` -> ``unstructured``. The implementations are in
:mod:`~lightning_compress.planner.quantization_steps` and :mod:`~lightning_compress.planner.pruning_steps`.

Example:
    >>> STEP_ORDER[0], STEP_ORDER[-1]
    ('ptq_int8', 'unstructured')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

import torch
from torch import nn

from lightning_compress.bench.timing import TimingChecks
from lightning_compress.core.batches import ExampleInputs
from lightning_compress.core.validation import ArgumentErrors
from lightning_compress.planner.budget import Budget, Measurement
from lightning_compress.planner.candidates import Candidate
from lightning_compress.planner.hardware import MachineFacts
from lightning_compress.quantization.calibration import Metric

__all__ = ["STEP_ORDER", "CandidateRecord", "PlannerSettings", "Step", "StepRecord", "WalkContext"]

STEP_ORDER = ("ptq_int8", "ptq_sensitivity", "qat_int8", "int4_weight_only", "nm24", "prune_distill", "unstructured")


@dataclass(frozen=True)
class PlannerSettings:
    """How much work each step may do.

    Args:
        calibration_batches: Training batches PTQ calibrates on (and structured pruning scores units on).
        qat_epochs: Epochs of the QAT fine-tune.
        distill_max_epochs: Most epochs of the distillation fine-tune after structured pruning; it stops earlier when
            the validation accuracy plateaus (less than 0.1 point gained over two consecutive evaluations).
        distill_time_s: Most seconds of that fine-tune (Lightning's ``max_time``).
        prune_fraction: Share of channels (or heads and FFN neurons) structured pruning removes, in (0, 1).
        unstructured_sparsity: Sparsity of the unstructured candidate (and of the kernel check), in (0, 1).
        lr: Learning rate of the fine-tunes (AdamW).
        explore: Go on after the first candidate that meets the budget, and choose the best of all that do.
        limit_train_batches: Training batches per fine-tune epoch (None: all).
        int4_method: ``"gptq"`` or ``"awq"``: how the INT4 weight-only step rounds (``one_shot_quantize``).
        int4_group_size: Inputs per INT4 scale; None: the largest of 128, 64, 32 that divides the input width of
            every Linear layer quantized.

    Raises:
        ValueError: On a bad value (all listed at once).
    """

    calibration_batches: int = 16
    qat_epochs: int = 2
    distill_max_epochs: int = 8
    distill_time_s: float = 180.0
    prune_fraction: float = 0.5
    unstructured_sparsity: float = 0.9
    lr: float = 1e-3
    explore: bool = False
    limit_train_batches: Optional[int] = None
    int4_method: str = "gptq"
    int4_group_size: Optional[int] = None

    def __post_init__(self) -> None:
        errors = ArgumentErrors("PlannerSettings: ")
        errors.int("calibration_batches", self.calibration_batches)
        errors.int("qat_epochs", self.qat_epochs)
        errors.int("distill_max_epochs", self.distill_max_epochs)
        errors.number("distill_time_s", self.distill_time_s, above=0)
        errors.interval("prune_fraction", self.prune_fraction, 0, 1, "()")
        errors.interval("unstructured_sparsity", self.unstructured_sparsity, 0, 1, "()")
        errors.number("lr", self.lr, above=0)
        errors.bool("explore", self.explore)
        errors.int("limit_train_batches", self.limit_train_batches, optional=True)
        errors.one_of("int4_method", self.int4_method, ("gptq", "awq"))
        errors.int("int4_group_size", self.int4_group_size, optional=True)
        errors.raise_if_any()


@dataclass
class CandidateRecord:
    """A measured candidate, as the state file and the table keep it."""

    name: str
    step: str
    kind: str
    note: str
    measurement: Measurement
    shortfalls: list[str]
    artifact: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return not self.shortfalls

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "step": self.step, "kind": self.kind, "note": self.note,
                "measurement": self.measurement.as_dict(), "shortfalls": self.shortfalls, "artifact": self.artifact,
                "details": self.details}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateRecord:
        return cls(data["name"], data["step"], data["kind"], data.get("note", ""),
                   Measurement.from_dict(data["measurement"]), list(data.get("shortfalls", [])), data["artifact"],
                   dict(data.get("details") or {}))  # fmt: skip


@dataclass
class StepRecord:
    """What became of one step: ``"done"`` (with its candidates), ``"skipped"`` or ``"failed"`` (with the reason)."""

    step: str
    status: str
    reason: str = ""
    candidates: list[CandidateRecord] = field(default_factory=list)
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "status": self.status, "reason": self.reason, "wall_s": self.wall_s,
                "candidates": [c.as_dict() for c in self.candidates]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        candidates = [CandidateRecord.from_dict(c) for c in data.get("candidates", [])]
        return cls(data["step"], data["status"], data.get("reason", ""), candidates, float(data.get("wall_s", 0)))


@dataclass
class WalkContext:
    """Everything a step may read.

    Attributes:
        network: The fp32 model (eval mode; steps copy it, never modify it).
        train_data: Labelled training batches (calibration, fine-tunes).
        val_data: Labelled validation batches (fine-tune validation; the measurer evaluates on the same).
        example_inputs: One batch of model inputs at the budget's batch size.
        budget, settings, facts: The budget, the step settings, what the machine has.
        baseline: The fp32 model's measurement.
        records: The steps finished so far (this run and before a resume), by name.
        num_classes: Outputs of the classifier (None for a language model).
        metric: The metric (see :func:`~lightning_compress.quantization.calibration.evaluate`), or
            ``"perplexity"`` (a causal LM on token windows).
        run_dir: The planner's run folder.
        log: Prints one line.
        repeats, checks: The timing settings of the walk (for the timings a step's check takes itself).
    """

    network: nn.Module
    train_data: Any
    val_data: Any
    example_inputs: ExampleInputs
    budget: Budget
    settings: PlannerSettings
    facts: MachineFacts
    baseline: Measurement
    records: dict[str, StepRecord]
    num_classes: Optional[int]
    metric: Metric
    run_dir: Path
    log: Callable[[str], None] = print
    repeats: int = 10
    checks: Optional[TimingChecks] = TimingChecks()  # noqa: RUF009 -- frozen, shared safely

    @property
    def device(self) -> torch.device:
        return torch.device(self.facts.device)

    def candidates(self, step: Optional[str] = None) -> list[CandidateRecord]:
        """The measured candidates so far (of one step)."""
        return [c for name, r in self.records.items() if step in (None, name) for c in r.candidates]

    def drop(self, record: CandidateRecord) -> float:
        return self.budget.drop_points(record.measurement, self.baseline)


class Step(Protocol):
    """One technique of the walk."""

    name: str
    title: str

    def skip_reason(self, ctx: WalkContext) -> Optional[str]:
        """Why this step cannot help here (the machine lacks the kernels, earlier numbers rule it out), or None."""
        ...

    def run(self, ctx: WalkContext) -> Sequence[Candidate]:
        """Make the step's candidates (not yet measured)."""
        ...
