"""What a compressed model must reach: the largest drop of the run's metric allowed, in points (or, for a language
model, the largest relative perplexity increase), and a target on this machine (latency at a batch size, as a ratio
of the fp32 model's or in ms, the file size, and / or the weight bytes as a ratio of the model's bf16 weight bytes).

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
    >>> lm = Budget(max_ppl_increase=0.1, weight_bytes_ratio=0.35)
    >>> lm_base = Measurement(metric=20.0, weight_bytes=4_000_000, bf16_weight_bytes=2_000_000)
    >>> lm.shortfalls(Measurement(metric=23.0, weight_bytes=800_000), lm_base)
    ['perplexity +15.00 % > +10 %', 'weights 0.400x the bf16 weight bytes > 0.35x']
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
        metric: The validation metric: accuracy / agreement as a fraction in [0, 1] (higher is better), or
            perplexity (lower is better; a budget with ``max_ppl_increase``).
        latency_ms: Median latency of one call at the budget's batch size, ms.
        speedup: The fp32 model's median over this one's, from calls interleaved with it (1.0 for the fp32 model).
        throughput: Items per second.
        peak_memory_mb: Peak memory of one call above what was in use before it, MiB (None: not measurable).
        size_bytes: Bytes of the candidate's file (or folder) as written.
        wall_s: Wall time spent making and measuring the candidate, s.
        untrusted: Why the timing cannot be trusted (busy machine, wide spread); empty if it can.
        weight_bytes: Bytes of the candidate's tensors as it would ship (its state dict, each shared tensor once:
            INT4 codes, scales and zeros, the float rest in its dtype); measured when the budget has
            ``weight_bytes_ratio``.
        bf16_weight_bytes: The baseline only: bytes of the original model's tensors in bf16 (floating tensors at 2
            bytes an element), the reference of ``weight_bytes_ratio``.
    """

    metric: float
    latency_ms: Optional[float] = None
    speedup: Optional[float] = None
    throughput: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    size_bytes: Optional[int] = None
    wall_s: float = 0.0
    untrusted: str = ""
    weight_bytes: Optional[int] = None
    bf16_weight_bytes: Optional[int] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Budget:
    """The accuracy budget and the targets a candidate must meet.

    Exactly one of ``max_drop`` (accuracy-like metrics, higher is better) and ``max_ppl_increase`` (perplexity, lower
    is better) is given.

    Args:
        max_drop: Largest drop of the metric allowed, in points (0.5: half a point of accuracy, i.e. 0.005).
        latency_ratio: Latency at most this fraction of the fp32 model's (measured interleaved), in (0, 1].
        latency_ms: Latency at most this many ms per call at ``batch_size``.
        size_ratio: File size at most this fraction of the fp32 model's file, in (0, 1].
        size_mb: File size at most this many MiB.
        batch_size: Batch size of the latency measurement.
        max_ppl_increase: Largest relative perplexity increase allowed, a fraction > 0 (0.1: the candidate's
            perplexity at most 1.1x the fp32 model's).
        weight_bytes_ratio: The candidate's weight bytes as it would ship at most this fraction of the original
            model's bf16 weight bytes, in (0, 2] (0.35; the fp32 model itself is 2.0x).

    Raises:
        ValueError: If a value is out of range (all listed at once), neither or both of ``max_drop`` and
            ``max_ppl_increase`` are given, or no target besides them is given.
    """

    max_drop: Optional[float] = None
    latency_ratio: Optional[float] = None
    latency_ms: Optional[float] = None
    size_ratio: Optional[float] = None
    size_mb: Optional[float] = None
    batch_size: int = 32
    max_ppl_increase: Optional[float] = None
    weight_bytes_ratio: Optional[float] = None

    def __post_init__(self) -> None:
        errors = ArgumentErrors("Budget: ")
        errors.number("max_drop", self.max_drop, minimum=0, optional=True)
        errors.number("max_ppl_increase", self.max_ppl_increase, above=0, optional=True)
        errors.interval("weight_bytes_ratio", self.weight_bytes_ratio, 0, 2, "(]", optional=True)
        if (self.max_drop is None) == (self.max_ppl_increase is None):
            errors.add(
                "a budget needs exactly one of `max_drop` (points of accuracy / agreement lost) and `max_ppl_increase`"
                f" (relative perplexity increase, e.g. 0.1), got max_drop={self.max_drop!r},"
                f" max_ppl_increase={self.max_ppl_increase!r}"
            )
        errors.interval("latency_ratio", self.latency_ratio, 0, 1, "(]", optional=True)
        errors.number("latency_ms", self.latency_ms, above=0, optional=True)
        errors.interval("size_ratio", self.size_ratio, 0, 1, "(]", optional=True)
        errors.number("size_mb", self.size_mb, above=0, optional=True)
        errors.int("batch_size", self.batch_size)
        targets = (self.latency_ratio, self.latency_ms, self.size_ratio, self.size_mb, self.weight_bytes_ratio)
        if all(v is None for v in targets):
            errors.add(
                "a budget needs a target on this machine besides `max_drop`: `latency_ratio` (e.g. 0.3: at most 0.3x"
                " the fp32 latency), `latency_ms`, `size_ratio`, `size_mb` or `weight_bytes_ratio`"
            )
        errors.raise_if_any()

    @property
    def targets_latency(self) -> bool:
        return self.latency_ratio is not None or self.latency_ms is not None

    @property
    def targets_size(self) -> bool:
        """A file-size or weight-bytes (memory) target."""
        return self.size_ratio is not None or self.size_mb is not None or self.weight_bytes_ratio is not None

    @property
    def lower_is_better(self) -> bool:
        """A perplexity budget (``max_ppl_increase``): the metric is lower-is-better."""
        return self.max_ppl_increase is not None

    @property
    def allowed_drop(self) -> float:
        """The budget of :meth:`drop_points`: ``max_drop`` points, or ``100 x max_ppl_increase`` percent."""
        return 100.0 * self.max_ppl_increase if self.max_ppl_increase is not None else float(self.max_drop)

    def score(self, m: Measurement) -> float:
        """Higher is better: the metric, or minus the perplexity."""
        return -m.metric if self.lower_is_better else m.metric

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.max_ppl_increase is not None:
            parts = [f"perplexity at most +{100 * self.max_ppl_increase:g} % over fp32"]
        else:
            parts = [f"at most {self.max_drop:g} points lost"]
        if self.latency_ratio is not None:
            parts.append(f"latency <= {self.latency_ratio:g}x fp32 at batch {self.batch_size}")
        if self.latency_ms is not None:
            parts.append(f"latency <= {self.latency_ms:g} ms at batch {self.batch_size}")
        if self.size_ratio is not None:
            parts.append(f"file <= {self.size_ratio:g}x fp32")
        if self.size_mb is not None:
            parts.append(f"file <= {self.size_mb:g} MiB")
        if self.weight_bytes_ratio is not None:
            parts.append(f"weights <= {self.weight_bytes_ratio:g}x the bf16 weight bytes")
        return ", ".join(parts)

    def drop_points(self, candidate: Measurement, baseline: Measurement) -> float:
        """The metric lost against the baseline, in points (100x the fraction); for a perplexity budget the
        relative perplexity increase, in percent (``100 x (ppl / ppl_fp32 - 1)``)."""
        if self.lower_is_better:
            return 100.0 * (candidate.metric / baseline.metric - 1.0)
        return 100.0 * (baseline.metric - candidate.metric)

    def accuracy_shortfall(self, candidate: Measurement, baseline: Measurement) -> Optional[str]:
        drop = self.drop_points(candidate, baseline)
        if drop <= self.allowed_drop + 1e-9:
            return None
        if self.lower_is_better:
            return f"perplexity +{drop:.2f} % > +{self.allowed_drop:g} %"
        return f"accuracy drop {drop:.2f} points > {self.max_drop:g}"

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
        if self.size_ratio is not None or self.size_mb is not None:
            if candidate.size_bytes is None or not baseline.size_bytes:
                out.append("file size not measured")
            else:
                ratio = candidate.size_bytes / baseline.size_bytes
                if self.size_ratio is not None and ratio > self.size_ratio + 1e-9:
                    out.append(f"file {ratio:.3f}x fp32 > {self.size_ratio:g}x")
                if self.size_mb is not None and candidate.size_bytes / 2**20 > self.size_mb:
                    out.append(f"file {candidate.size_bytes / 2**20:.2f} MiB > {self.size_mb:g} MiB")
        if self.weight_bytes_ratio is not None:
            if candidate.weight_bytes is None or not baseline.bf16_weight_bytes:
                out.append("weight bytes not measured")
            else:
                ratio = candidate.weight_bytes / baseline.bf16_weight_bytes
                if ratio > self.weight_bytes_ratio + 1e-9:
                    out.append(f"weights {ratio:.3f}x the bf16 weight bytes > {self.weight_bytes_ratio:g}x")
        return out

    def shortfalls(self, candidate: Measurement, baseline: Measurement) -> list[str]:
        """Every target ``candidate`` misses (empty: it meets the budget)."""
        accuracy = self.accuracy_shortfall(candidate, baseline)
        return ([accuracy] if accuracy else []) + self.hardware_shortfalls(candidate, baseline)
