"""What a compressed model must reach: the largest drop of the run's metric allowed, in points, and a target on this
machine (latency at a batch size, as a ratio of the fp32 model's or in ms, and / or the file size).

A candidate meets the budget when every target holds; :meth:`Budget.shortfalls` says, with the numbers, which do
not. Latency targets are judged only on trustworthy timings (:mod:`~lightning_compress.bench.timing`): a timing taken
on a busy machine never meets a latency target, it is a shortfall that says so.

Example:
    >>> budget = Budget(max_drop=0.5, latency_ratio=0.3)
    >>> base = Measurement(metric=0.97, latency_ms=2.0, size_bytes=1_000_000)
    >>> budget.shortfalls(Measurement(metric=0.968, latency_ms=0.5, speedup=4.0, size_bytes=260_000), base)
    []
    >>> budget.shortfalls(Measurement(metric=0.95, latency_ms=1.0, speedup=2.0, size_bytes=260_000), base)
    ['accuracy drop 2.00 points > 0.5', 'latency 0.500x fp32 > 0.3x']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from lightning_compress.core.validation import ArgumentErrors

__all__ = ["Budget", "Measurement"]


@dataclass
class Measurement:
    """What one candidate measured.

    Attributes:
        metric: The validation metric (higher is better; accuracy as a fraction in [0, 1]).
        latency_ms: Median latency of one call at the budget's batch size, ms.
        speedup: The fp32 model's median over this one's, from calls interleaved with it (1.0 for the fp32 model).
        throughput: Items per second.
        peak_memory_mb: Peak memory of one call above what was in use before it, MiB (None: not measurable).
        size_bytes: Bytes of the candidate's file (or folder) as written.
        wall_s: Wall time spent making and measuring the candidate, s.
        untrusted: Why the timing cannot be trusted (busy machine, wide spread); empty if it can.
    """

    metric: float
    latency_ms: Optional[float] = None
    speedup: Optional[float] = None
    throughput: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    size_bytes: Optional[int] = None
    wall_s: float = 0.0
    untrusted: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Budget:
    """The accuracy budget and the targets a candidate must meet.

    Args:
        max_drop: Largest drop of the metric allowed, in points (0.5: half a point of accuracy, i.e. 0.005).
        latency_ratio: Latency at most this fraction of the fp32 model's (measured interleaved), in (0, 1].
        latency_ms: Latency at most this many ms per call at ``batch_size``.
        size_ratio: File size at most this fraction of the fp32 model's file, in (0, 1].
        size_mb: File size at most this many MiB.
        batch_size: Batch size of the latency measurement.

    Raises:
        ValueError: If a value is out of range (all listed at once), or no target besides ``max_drop`` is given.
    """

    max_drop: float
    latency_ratio: Optional[float] = None
    latency_ms: Optional[float] = None
    size_ratio: Optional[float] = None
    size_mb: Optional[float] = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        errors = ArgumentErrors("Budget: ")
        errors.number("max_drop", self.max_drop, minimum=0)
        errors.interval("latency_ratio", self.latency_ratio, 0, 1, "(]", optional=True)
        errors.number("latency_ms", self.latency_ms, above=0, optional=True)
        errors.interval("size_ratio", self.size_ratio, 0, 1, "(]", optional=True)
        errors.number("size_mb", self.size_mb, above=0, optional=True)
        errors.int("batch_size", self.batch_size)
        if all(v is None for v in (self.latency_ratio, self.latency_ms, self.size_ratio, self.size_mb)):
            errors.add(
                "a budget needs a target on this machine besides `max_drop`: `latency_ratio` (e.g. 0.3: at most 0.3x"
                " the fp32 latency), `latency_ms`, `size_ratio` or `size_mb`"
            )
        errors.raise_if_any()

    @property
    def targets_latency(self) -> bool:
        return self.latency_ratio is not None or self.latency_ms is not None

    @property
    def targets_size(self) -> bool:
        return self.size_ratio is not None or self.size_mb is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"at most {self.max_drop:g} points lost"]
        if self.latency_ratio is not None:
            parts.append(f"latency <= {self.latency_ratio:g}x fp32 at batch {self.batch_size}")
        if self.latency_ms is not None:
            parts.append(f"latency <= {self.latency_ms:g} ms at batch {self.batch_size}")
        if self.size_ratio is not None:
            parts.append(f"file <= {self.size_ratio:g}x fp32")
        if self.size_mb is not None:
            parts.append(f"file <= {self.size_mb:g} MiB")
        return ", ".join(parts)

    def drop_points(self, candidate: Measurement, baseline: Measurement) -> float:
        """The metric lost against the baseline, in points (100x the fraction)."""
        return 100.0 * (baseline.metric - candidate.metric)

    def accuracy_shortfall(self, candidate: Measurement, baseline: Measurement) -> Optional[str]:
        drop = self.drop_points(candidate, baseline)
        return f"accuracy drop {drop:.2f} points > {self.max_drop:g}" if drop > self.max_drop + 1e-9 else None

    def hardware_shortfalls(self, candidate: Measurement, baseline: Measurement) -> list[str]:
        """The latency and size targets ``candidate`` misses, with the numbers."""
        out = []
        if self.targets_latency:
            if candidate.untrusted:
                out.append(f"latency not trustworthy (refused): {candidate.untrusted}")
            elif candidate.latency_ms is None or candidate.speedup is None:
                out.append("latency not measured")
            else:
                ratio = 1.0 / candidate.speedup
                if self.latency_ratio is not None and ratio > self.latency_ratio + 1e-9:
                    out.append(f"latency {ratio:.3f}x fp32 > {self.latency_ratio:g}x")
                if self.latency_ms is not None and candidate.latency_ms > self.latency_ms:
                    out.append(f"latency {candidate.latency_ms:.3f} ms > {self.latency_ms:g} ms")
        if self.targets_size:
            if candidate.size_bytes is None or not baseline.size_bytes:
                out.append("file size not measured")
            else:
                ratio = candidate.size_bytes / baseline.size_bytes
                if self.size_ratio is not None and ratio > self.size_ratio + 1e-9:
                    out.append(f"file {ratio:.3f}x fp32 > {self.size_ratio:g}x")
                if self.size_mb is not None and candidate.size_bytes / 2**20 > self.size_mb:
                    out.append(f"file {candidate.size_bytes / 2**20:.2f} MiB > {self.size_mb:g} MiB")
        return out

    def shortfalls(self, candidate: Measurement, baseline: Measurement) -> list[str]:
        """Every target ``candidate`` misses (empty: it meets the budget)."""
        accuracy = self.accuracy_shortfall(candidate, baseline)
        return ([accuracy] if accuracy else []) + self.hardware_shortfalls(candidate, baseline)
