"""Timing one call: median wall time over repeats after a warm-up, and the peak memory of one call; and
:class:`PathTimer`, which times inference paths into :class:`~lightning_compress.bench.results.BenchResult` rows
against the first one (the baseline).

Example:
    >>> seconds, per_s, peak = measure(lambda: torch.ones(8) * 2, batch_size=8, warmup=1, repeats=3)
    >>> seconds > 0 and per_s > 0
    True
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, Optional, Union

import torch

from lightning_compress.bench.results import BenchResult, row_line, unavailable_reason

__all__ = ["PathTimer", "measure", "measure_peak_memory"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_peak_memory(fn: Callable[[], Any], device: Union[str, torch.device] = "cpu") -> Optional[float]:
    """Peak memory of one call of ``fn`` above the memory in use before it, in bytes (``None`` if unmeasurable).

    Example:
        >>> measure_peak_memory(lambda: torch.ones(1_000_000)) is None or True
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return float(max(0, torch.cuda.max_memory_allocated(device) - before))
    _trim_heap()  # hand freed heap pages back to the OS, so that a call's allocations raise the resident set again
    before = _proc_status("VmRSS")
    if before is None or not _reset_peak_rss():
        return None
    fn()
    peak = _proc_status("VmHWM")
    return None if peak is None else float(max(0, peak - before))


def measure(
    fn: Callable[[], Any],
    batch_size: int = 1,
    device: Union[str, torch.device] = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    min_warmup_s: float = 0.25,
) -> tuple[float, float, Optional[float]]:
    """Median latency, throughput and peak memory of ``fn``.

    Args:
        fn: One inference call (no arguments).
        batch_size: Items per call, for the throughput.
        device: Where ``fn`` runs (CUDA is synchronised around each call).
        warmup: Untimed calls first (compilation, allocator and cache warm-up); more, up to 50, until
            ``min_warmup_s`` have passed (the first calls of a process pay one-time library set-up).
        repeats: Timed calls; the median is reported.
        min_warmup_s: Least warm-up time.

    Returns:
        ``(median seconds, items per second, peak bytes or None)``.

    Raises:
        ValueError: If ``repeats < 1`` or ``warmup < 0``.

    Example:
        >>> seconds, per_s, peak = measure(lambda: torch.ones(8) * 2, batch_size=8, warmup=1, repeats=3)
        >>> seconds > 0 and per_s > 0
        True
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"`repeats` must be >= 1 and `warmup` >= 0, got {repeats} and {warmup}")
    device = torch.device(device)
    start = time.perf_counter()
    calls = 0
    while calls < warmup or (calls < 50 and time.perf_counter() - start < min_warmup_s):
        fn()
        calls += 1
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    peak = measure_peak_memory(fn, device)
    return median, batch_size / median, peak


# ------------------------------------------------------------------------------------------------------ models


class PathTimer:
    """Times inference paths into rows: latency, throughput, peak memory and speed-up over the first row timed.

    A path that cannot run (its builder or its call raises) becomes a row with ``available=False`` and the reason;
    nothing raises.

    Args:
        items_per_call: What one call processes, for the throughput (a batch size, or a GEMM's FLOPs).
        device: Where the paths run.
        warmup: Untimed calls per path.
        repeats: Timed calls per path.
        min_warmup_s: Least warm-up time per path.
        log: Called with one line per row as it finishes.
    """

    def __init__(
        self,
        items_per_call: float,
        device: torch.device,
        warmup: int,
        repeats: int,
        min_warmup_s: float,
        log: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.items_per_call, self.device = items_per_call, device
        self.warmup, self.repeats, self.min_warmup_s, self.log = warmup, repeats, min_warmup_s, log
        self.rows: list[BenchResult] = []
        self._base: Optional[float] = None

    def run(self, row: BenchResult, build: Callable[[], Any]) -> BenchResult:
        """Build the path (``build()`` returns a call, or ``(call, note)``), time it into ``row`` and keep the row."""
        try:
            built = build()
            fn, note = built if isinstance(built, tuple) else (built, "")
            with torch.no_grad():
                seconds, _, peak = measure(fn, 1, self.device, self.warmup, self.repeats, self.min_warmup_s)
            row.latency_ms, row.throughput = seconds * 1e3, self.items_per_call / seconds
            row.peak_memory_mb = None if peak is None else peak / 2**20
            row.reason = note
            if self._base is None:
                self._base = row.latency_ms
            row.speedup = self._base / row.latency_ms
        except Exception as err:  # noqa: BLE001 -- every failure is a row, never a crash
            row.available, row.reason = False, unavailable_reason(err)
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.rows.append(row)
        if self.log is not None:
            self.log(row_line(row))
        return row
