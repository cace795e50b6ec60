"""Fakes for the planner's walk: a measurer that returns given numbers, steps that make a copy of the model."""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from lightning_compress.planner.budget import Measurement
from lightning_compress.planner.candidates import Candidate
from lightning_compress.planner.hardware import MachineFacts
from lightning_compress.planner.steps import STEP_ORDER


class Crash(BaseException):
    """A simulated crash (not an Exception: the walk must not swallow it)."""


class FakeMeasurer:
    """Measurement numbers by candidate name (``(accuracy, speedup)``); records every call in order."""

    def __init__(self, numbers: dict[str, tuple[float, float]], crash_at: Optional[str] = None) -> None:
        self.numbers, self.crash_at, self.calls = numbers, crash_at, []

    def measure(self, model: nn.Module, size_bytes: Optional[int], name: str = "") -> Measurement:
        if name == self.crash_at:
            raise Crash(name)
        self.calls.append(name)
        accuracy, speedup = self.numbers[name]
        return Measurement(metric=accuracy, latency_ms=1.0 / speedup, speedup=speedup, size_bytes=size_bytes)


class FakeStep:
    """A step that makes one float candidate named after it (or is skipped with ``skip``); counts its runs."""

    def __init__(self, name: str, skip: Optional[str] = None) -> None:
        self.name, self.title, self.skip, self.runs = name, name, skip, 0

    def skip_reason(self, ctx) -> Optional[str]:  # noqa: ANN001
        return self.skip

    def run(self, ctx):  # noqa: ANN001, ANN201
        self.runs += 1
        return [Candidate(self.name, "float", copy.deepcopy(ctx.network), f"made by {self.name}")]


def tiny_data():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = (x[:, 0] > 0).long()
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    return batches[:2], batches[2:]


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


def cpu_facts():
    return MachineFacts("cpu", None, "2:4 needs sparse tensor cores; no CUDA GPU is present")


def fake_steps(**skips: str) -> dict[str, FakeStep]:
    return {name: FakeStep(name, skips.get(name)) for name in STEP_ORDER}
