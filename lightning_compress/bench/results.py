"""What a benchmark measured: one :class:`BenchResult` row per inference path, and the table that prints them.

Example:
    >>> print(format_table([BenchResult("fp32 eager", "dense", latency_ms=2.0, throughput=500.0, speedup=1.0,
    ...                                 theoretical_speedup=1.0, spread=0.02)]))  # doctest: +NORMALIZE_WHITESPACE
    path        latency ms  spread  items/s  peak MiB  theory x  measured x  note
    fp32 eager       2.000    2.0%    500.0         -      1.00        1.00
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = [
    "SPARSITIES",
    "BenchResult",
    "Unavailable",
    "format_table",
    "row_line",
    "unavailable_reason",
    "untrusted_rows",
]

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.99)  # the unstructured sparsities benchmarks try by default


class Unavailable(Exception):
    """A path this machine or model cannot run; the message says why."""


@dataclass
class BenchResult:
    """One measured (or unavailable) inference path.

    Attributes:
        path: Display name, e.g. ``"CSR 90%"``.
        family: ``"dense"``, ``"dtype"``, ``"unstructured"``, ``"2:4"``, ``"int8"``, ``"2:4+int8"`` or ``"smaller"``.
        available: False when the path could not run; ``reason`` says why.
        reason: Why it is unavailable, or a note (layers left dense, ...).
        latency_ms: Median latency of one call, ms.
        throughput: Items (dimension 0 of the input) per second.
        peak_memory_mb: Peak memory of one call above what was in use before it, MiB.
        theoretical_speedup: Ideal speed-up over fp32 eager (see the module docstring).
        speedup: Measured speed-up over fp32 eager (its median latency / this one's).
        sparsity: Fraction of zeros in the pruned weights, for sparse paths.
        fmt: The storage format (``"csr"``, ``"dense"``, ``"bf16"``, ...).
        spread: Interquartile range / median of the timed repeats (see :func:`~lightning_compress.bench.timing.spread`).
        untrusted: Why the timing cannot be trusted (a busy machine, a wide spread), with the figures; empty if it can.
        extra: The timing's figures (attempts, min / max, the load before and during), and what else a path adds.
    """

    path: str
    family: str
    available: bool = True
    reason: str = ""
    latency_ms: Optional[float] = None
    throughput: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    theoretical_speedup: Optional[float] = None
    speedup: Optional[float] = None
    sparsity: Optional[float] = None
    fmt: Optional[str] = None
    spread: Optional[float] = None
    untrusted: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------- measuring
def _fmt_num(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def row_line(row: BenchResult) -> str:
    if not row.available:
        return f"{row.path}: unavailable ({row.reason})"
    line = (f"{row.path}: {row.latency_ms:.3f} ms, {row.speedup:.2f}x measured vs"
            f" {_fmt_num(row.theoretical_speedup, '.2f')}x theory")  # fmt: skip
    return line + (f" -- NOT TRUSTWORTHY: {row.untrusted}" if row.untrusted else "")


def untrusted_rows(rows: Sequence[BenchResult]) -> list[BenchResult]:
    """The measured rows whose timing cannot be trusted (``untrusted`` set)."""
    return [r for r in rows if r.available and r.untrusted]


def format_table(rows: Sequence[BenchResult], machine: Sequence[str] = ()) -> str:
    """An aligned text table: path, latency, spread of the repeats, throughput, peak memory, theoretical and measured
    speed-up; then the untrusted timings with the figures that show why, and the unavailable paths with their reasons.

    Args:
        rows: The rows.
        machine: Lines describing the machine, put above the table
            (:func:`~lightning_compress.bench.machine.describe_machine`).

    Example:
        >>> print(format_table([BenchResult("fp32 eager", "dense", latency_ms=2.0, throughput=500.0, speedup=1.0,
        ...                                 theoretical_speedup=1.0)]))  # doctest: +NORMALIZE_WHITESPACE
        path        latency ms  spread  items/s  peak MiB  theory x  measured x  note
        fp32 eager       2.000       -    500.0         -      1.00        1.00
    """
    header = ("path", "latency ms", "spread", "items/s", "peak MiB", "theory x", "measured x", "note")
    lines = [
        (r.path + (" (!)" if r.untrusted else ""), f"{r.latency_ms:.3f}", _fmt_num(r.spread, ".1%"),
         _fmt_num(r.throughput, ".1f"), _fmt_num(r.peak_memory_mb, ".1f"), _fmt_num(r.theoretical_speedup, ".2f"),
         _fmt_num(r.speedup, ".2f"), r.reason[:70])
        for r in rows if r.available
    ]  # fmt: skip
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    out = list(machine)
    if machine:
        out.append("")
    for line in [header, *lines]:
        cells = [c.ljust(w) if i in (0, 7) else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
    doubtful = untrusted_rows(rows)
    if doubtful:
        out.append("")
        out.append("(!) not trustworthy (re-run on a quiet machine):")
        out += [f"  {r.path}: {r.untrusted}" for r in doubtful]
    missing = [r for r in rows if not r.available]
    if missing:
        out.append("")
        out.append("unavailable here:")
        out += [f"  {r.path}: {r.reason}" for r in missing]
    return "\n".join(out)


#: x86 instruction sets that decide what INT8 and bf16 can gain on a CPU (``/proc/cpuinfo`` flag names): AMX tiles
#: (INT8 / bf16 matrix units), VNNI (4 int8 products per 32-bit lane), AVX-512 BF16 (2 bf16 products per lane).
def unavailable_reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(err).__name__}: {first[:300]}" if not isinstance(err, Unavailable) else first[:400]
