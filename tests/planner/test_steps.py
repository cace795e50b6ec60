"""The real steps' skip rules, from the numbers earlier steps recorded (no step runs here)."""

from __future__ import annotations

from pathlib import Path

from planner_fakes import cpu_facts, tiny_data, tiny_model

from lightning_compress.planner.budget import Budget, Measurement
from lightning_compress.planner.pruning_steps import PruneDistill, structured_kind
from lightning_compress.planner.quantization_steps import Int4WeightOnly, PTQInt8, PTQSensitivity, QATInt8
from lightning_compress.planner.steps import CandidateRecord, PlannerSettings, StepRecord, WalkContext

BASE = Measurement(metric=0.98, latency_ms=2.0, speedup=1.0, size_bytes=1000)


def _ctx(ptq: tuple[float, float] | None, budget=Budget(max_drop=0.5, latency_ratio=0.3), network=None, facts=None):  # noqa: B008
    records = {}
    if ptq is not None:
        m = Measurement(metric=ptq[0], latency_ms=2.0 / ptq[1], speedup=ptq[1], size_bytes=300)
        c = CandidateRecord("ptq_int8", "ptq_int8", "int8", "", m, budget.shortfalls(m, BASE), "x")
        records["ptq_int8"] = StepRecord("ptq_int8", "done", candidates=[c])
    train, val = tiny_data()
    return WalkContext(network or tiny_model(), train, val, train[0][0], budget, PlannerSettings(),
                       facts or cpu_facts(), BASE, records, 2, "accuracy", Path("."))  # fmt: skip


def test_recovering_accuracy_is_skipped_when_ptq_lost_little() -> None:
    ctx = _ctx((0.978, 4.0))
    for step in (PTQSensitivity(), QATInt8()):
        assert step.skip_reason(ctx).startswith("PTQ INT8 lost only 0.20 points (budget 0.5)")


def test_recovering_accuracy_is_skipped_when_the_int8_graph_is_too_slow_anyway() -> None:
    reason = QATInt8().skip_reason(_ctx((0.95, 2.0)))
    assert reason == ("a QAT fine-tune gives the same INT8 kernels as PTQ INT8, which already misses: latency 0.500x"
                      " fp32 > 0.3x")  # fmt: skip
    assert PTQSensitivity().skip_reason(_ctx((0.95, 4.0))) is None  # lost too much, fast enough: worth trying
    assert QATInt8().skip_reason(_ctx((0.95, 4.0))) is None


def test_no_int8_lowering_skips_the_int8_steps() -> None:
    from lightning_compress.planner.hardware import MachineFacts

    facts = MachineFacts("cuda", "the PT2E INT8 path lowers to oneDNN kernels on x86 CPUs only", None)
    assert PTQInt8().skip_reason(_ctx(None, facts=facts)).startswith("the PT2E INT8 path lowers to oneDNN")
    assert "there is none" in PTQSensitivity().skip_reason(_ctx(None))


def test_int4_is_for_language_models_with_a_memory_target() -> None:
    assert "LLM-style models" in Int4WeightOnly().skip_reason(_ctx(None, budget=Budget(max_drop=1, size_ratio=0.35)))


def test_structured_pruning_needs_prunable_structure_and_a_latency_still_over_budget() -> None:
    from lightning_compress.models import SmallCNN

    assert "has neither" in PruneDistill().skip_reason(_ctx(None))  # a plain MLP
    cnn = SmallCNN(num_classes=2, channels=(4, 8), hidden=8, image_size=8)
    assert structured_kind(cnn) == "channels"
    assert PruneDistill().skip_reason(_ctx((0.95, 2.0), network=cnn)) is None
    reason = PruneDistill().skip_reason(_ctx((0.95, 4.0), network=cnn))
    assert reason.startswith("ptq_int8 already meets the latency / size target (it misses only accuracy)")
