"""The budget: its checks, and the shortfalls it reports with the numbers."""

from __future__ import annotations

import pytest

from lightning_compress.planner.budget import Budget, Measurement

BASE = Measurement(metric=0.98, latency_ms=2.0, speedup=1.0, size_bytes=1000)


def test_bad_budgets_are_refused_with_every_argument_named() -> None:
    with pytest.raises(ValueError) as err:
        Budget(max_drop=-1, latency_ratio=1.5, size_mb=0, batch_size=0)
    text = str(err.value)
    for name in ("`max_drop`", "`latency_ratio`", "`size_mb`", "`batch_size`"):
        assert name in text, text
    assert "-1" in text and "1.5" in text


def test_a_budget_needs_a_target_on_this_machine() -> None:
    with pytest.raises(ValueError, match="a budget needs a target on this machine besides `max_drop`"):
        Budget(max_drop=0.5)


def test_shortfalls_name_each_missed_target_with_its_numbers() -> None:
    budget = Budget(max_drop=0.5, latency_ratio=0.3, size_ratio=0.5)
    ok = Measurement(metric=0.976, latency_ms=0.5, speedup=4.0, size_bytes=260)
    assert budget.shortfalls(ok, BASE) == []
    bad = Measurement(metric=0.97, latency_ms=1.0, speedup=2.0, size_bytes=600)
    assert budget.shortfalls(bad, BASE) == [
        "accuracy drop 1.00 points > 0.5",
        "latency 0.500x fp32 > 0.3x",
        "file 0.600x fp32 > 0.5x",
    ]


def test_an_untrusted_timing_never_meets_a_latency_target() -> None:
    budget = Budget(max_drop=1.0, latency_ratio=0.5)
    busy = Measurement(metric=0.98, latency_ms=0.1, speedup=20.0, size_bytes=100, untrusted="machine busy while timing")
    [why] = budget.shortfalls(busy, BASE)
    assert why.startswith("latency not trustworthy (refused): machine busy")
    assert Budget(max_drop=1.0, size_ratio=0.5).shortfalls(busy, BASE) == []  # a size target does not time anything
