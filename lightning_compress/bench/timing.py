"""Timing calls so that a busy machine cannot silently distort the numbers: the median wall time over repeats after
a warm-up, the peak memory of one call, and :class:`PathTimer`, which times inference paths into
:class:`~lightning_compress.bench.results.BenchResult` rows against the first one (the baseline).

Every timing is checked (:class:`TimingChecks`): the load other processes put on the machine just before and while the
repeats run (:mod:`~lightning_compress.bench.machine_load`), and the spread of the repeats (interquartile range over
the median). A disturbed or noisy timing is measured again (``retries`` times, after ``settle_s``); if it stays so, it
comes back with its ``problems``, the figures that show why, and the rows and the advice say so. Comparisons interleave
their repeats: :func:`time_interleaved` times its calls round-robin (a, b, a, b, ...), and :class:`PathTimer` times
every path that way against the baseline, so that a speed-up compares calls made at the same moments.

Example:
    >>> seconds, per_s, peak = measure(lambda: torch.ones(8) * 2, batch_size=8, warmup=1, repeats=3, checks=None)
    >>> seconds > 0 and per_s > 0
    True
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch

from lightning_compress.bench.machine_load import LoadMonitor, LoadReport, idle_load
from lightning_compress.bench.results import BenchResult, row_line, unavailable_reason
from lightning_compress.core.validation import ArgumentErrors

__all__ = [
    "BusyMachineWarning",
    "PathTimer",
    "Timing",
    "TimingChecks",
    "measure",
    "measure_peak_memory",
    "spread",
    "time_calls",
    "time_interleaved",
]


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


class BusyMachineWarning(UserWarning):
    """A timing taken while other processes loaded the machine, or whose repeats spread too widely."""


@dataclass(frozen=True)
class TimingChecks:
    """What makes a timing trustworthy, and what to do when one is not.

    Attributes:
        max_spread: Most interquartile range / median of the repeats (range / median below 4 repeats).
        retries: Re-measurements of a disturbed or noisy timing before giving up (its ``problems`` say why).
        idle_s: Seconds of looking at the machine before the repeats (what other processes do; 0: not at all).
        settle_s: Seconds to wait before a re-measurement.

    Example:
        >>> TimingChecks(max_spread=0.1).retries
        2
    """

    max_spread: float = 0.25
    retries: int = 2
    idle_s: float = 0.2
    settle_s: float = 1.0

    def __post_init__(self) -> None:
        errors = ArgumentErrors("TimingChecks: ")
        errors.number("max_spread", self.max_spread, above=0)
        errors.int("retries", self.retries, minimum=0)
        errors.number("idle_s", self.idle_s, minimum=0)
        errors.number("settle_s", self.settle_s, minimum=0)
        errors.raise_if_any()


@dataclass
class Timing:
    """The repeats of one call and whether they can be trusted.

    Attributes:
        times: Seconds per timed call, in order.
        median: Their median, s.
        spread: Interquartile range / median (range / median below 4 repeats).
        before: The load just before the repeats (None when not looked at).
        during: The load while they ran (None when not checked).
        attempts: Measurements made (1 + re-measurements).
        problems: Why the timing cannot be trusted, with the figures; empty when it can.
    """

    times: list[float]
    median: float
    spread: float
    before: Optional[LoadReport] = None
    during: Optional[LoadReport] = None
    attempts: int = 1
    problems: list[str] = field(default_factory=list)

    @property
    def trusted(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        """The figures, for a result row's ``extra``."""
        return {
            "attempts": self.attempts,
            "spread": self.spread,
            "min_ms": min(self.times) * 1e3,
            "max_ms": max(self.times) * 1e3,
            "load_before": self.before.as_dict() if self.before else None,
            "load_during": self.during.as_dict() if self.during else None,
        }


def spread(times: list[float]) -> float:
    """Interquartile range / median of ``times`` (4 or more), else range / median; 0 for one time.

    Example:
        >>> spread([1.0, 2.0, 3.0, 4.0, 5.0]), spread([1.0, 1.5]), spread([1.0, 1.0, 1.0, 1.0, 9.0])
        (0.6666666666666666, 0.4, 0.0)
    """
    if len(times) < 2:
        return 0.0
    median = statistics.median(times)
    if len(times) < 4:
        return (max(times) - min(times)) / median
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return (q3 - q1) / median


def _check_repeats(warmup: Any, repeats: Any) -> None:
    errors = ArgumentErrors()
    errors.int("repeats", repeats, minimum=1)
    errors.int("warmup", warmup, minimum=0)
    errors.raise_if_any()


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    device: Union[str, torch.device] = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    min_warmup_s: float = 0.25,
    checks: Optional[TimingChecks] = TimingChecks(),  # noqa: B008 -- frozen, shared safely
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Time several calls round-robin (a, b, a, b, ...) under one load check, re-measuring while disturbed.

    Args:
        fns: Calls without arguments, by name.
        device: Where they run (CUDA is synchronised around each call).
        warmup: Untimed calls of each first; more, up to 50, until ``min_warmup_s`` have passed (first attempt).
        repeats: Timed calls of each.
        min_warmup_s: Least warm-up time per call.
        checks: The trust checks (None: none; then ``problems`` stay empty).
        clock: The wall clock (tests pass a fake one).

    Returns:
        A :class:`Timing` per name; the load and the attempts are shared, the spread is each call's own.

    Raises:
        ValueError: If ``repeats < 1`` or ``warmup < 0``.

    Example:
        >>> out = time_interleaved({"a": lambda: None, "b": lambda: None}, warmup=0, repeats=2, checks=None)
        >>> sorted(out), len(out["a"].times)
        (['a', 'b'], 2)
    """
    _check_repeats(warmup, repeats)
    device = torch.device(device)
    threads = torch.get_num_threads()
    attempts = 1 + (checks.retries if checks is not None else 0)
    out: dict[str, Timing] = {}
    for attempt in range(1, attempts + 1):
        before = idle_load(checks.idle_s, threads) if checks is not None and checks.idle_s > 0 else None
        for fn in fns.values():
            _warm_up(fn, device, warmup, min_warmup_s if attempt == 1 else 0.0)
        times: dict[str, list[float]] = {name: [] for name in fns}
        monitor = LoadMonitor(threads) if checks is not None else None
        if monitor is not None:
            monitor.__enter__()
        for _ in range(repeats):
            for name, fn in fns.items():
                _sync(device)
                start = clock()
                fn()
                _sync(device)
                times[name].append(clock() - start)
        if monitor is not None:
            monitor.__exit__(None, None, None)
        during = monitor.report if monitor is not None else None
        out = {
            name: _judged(values, before, during, attempt, checks, many=len(fns) > 1) for name, values in times.items()
        }
        if all(t.trusted for t in out.values()) or attempt == attempts:
            return out
        time.sleep(checks.settle_s if checks is not None else 0.0)
    return out


def time_calls(
    fn: Callable[[], Any],
    device: Union[str, torch.device] = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    min_warmup_s: float = 0.25,
    checks: Optional[TimingChecks] = TimingChecks(),  # noqa: B008 -- frozen, shared safely
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time one call (see :func:`time_interleaved`, whose arguments it takes).

    Example:
        >>> timing = time_calls(lambda: torch.ones(8) * 2, warmup=1, repeats=3, checks=None)
        >>> timing.median > 0 and timing.trusted
        True
    """
    return time_interleaved({"call": fn}, device, warmup, repeats, min_warmup_s, checks, clock)["call"]


def _warm_up(fn: Callable[[], Any], device: torch.device, warmup: int, min_warmup_s: float) -> None:
    start = time.perf_counter()
    calls = 0
    while calls < warmup or (calls < 50 and time.perf_counter() - start < min_warmup_s):
        fn()
        calls += 1
    _sync(device)


def _judged(
    times: list[float],
    before: Optional[LoadReport],
    during: Optional[LoadReport],
    attempt: int,
    checks: Optional[TimingChecks],
    many: bool,
) -> Timing:
    median = statistics.median(times)
    timing = Timing(times, median, spread(times), before, during, attempt)
    if checks is None:
        return timing
    after = f" (after {attempt} measurements)" if attempt > 1 else ""
    if before is not None and before.busy:
        timing.problems.append(f"machine busy before timing{after}: {before.text()}")
    if during is not None and during.busy:
        timing.problems.append(f"machine busy while timing{after}: {during.text()}")
    if timing.spread > checks.max_spread:
        kind = "interquartile range" if len(times) >= 4 else "range"
        timing.problems.append(
            f"repeats spread too widely{after}: {kind} / median {timing.spread:.2f} (at most {checks.max_spread:.2f});"
            f" median {median * 1e3:.3f} ms, min {min(times) * 1e3:.3f}, max {max(times) * 1e3:.3f} over"
            f" {len(times)} repeats" + (" interleaved" if many else "")
        )
    return timing


def measure(
    fn: Callable[[], Any],
    batch_size: int = 1,
    device: Union[str, torch.device] = "cpu",
    warmup: int = 3,
    repeats: int = 10,
    min_warmup_s: float = 0.25,
    checks: Optional[TimingChecks] = TimingChecks(),  # noqa: B008 -- frozen, shared safely
) -> tuple[float, float, Optional[float]]:
    """Median latency, throughput and peak memory of ``fn``, checked for a busy machine and noisy repeats.

    Args:
        fn: One inference call (no arguments).
        batch_size: Items per call, for the throughput.
        device: Where ``fn`` runs (CUDA is synchronised around each call).
        warmup: Untimed calls first (compilation, allocator and cache warm-up); more, up to 50, until
            ``min_warmup_s`` have passed (the first calls of a process pay one-time library set-up).
        repeats: Timed calls; the median is reported.
        min_warmup_s: Least warm-up time.
        checks: See :class:`TimingChecks`; None: no checks. Use :func:`time_calls` for the figures.

    Returns:
        ``(median seconds, items per second, peak bytes or None)``; a :class:`BusyMachineWarning` with the figures
        when the timing stayed disturbed or noisy after the re-measurements.

    Raises:
        ValueError: If ``repeats < 1`` or ``warmup < 0``.

    Example:
        >>> seconds, per_s, peak = measure(lambda: torch.ones(8) * 2, batch_size=8, warmup=1, repeats=3, checks=None)
        >>> seconds > 0 and per_s > 0
        True
    """
    timing = time_calls(fn, device, warmup, repeats, min_warmup_s, checks)
    if not timing.trusted:
        warnings.warn(f"measure: not trustworthy: {'; '.join(timing.problems)}", BusyMachineWarning, stacklevel=2)
    peak = measure_peak_memory(fn, device)
    return timing.median, batch_size / timing.median, peak


# ------------------------------------------------------------------------------------------------------ models


class PathTimer:
    """Times inference paths into rows: latency, throughput, peak memory and speed-up over the first row timed.

    The first path that runs is the baseline; every later path is timed round-robin with it
    (:func:`time_interleaved`), and its speed-up is the baseline's median over its own from those same moments. A
    path that cannot run (its builder or its call raises) becomes a row with ``available=False`` and the reason;
    nothing raises. A timing that stays disturbed or noisy marks its row ``untrusted`` with the figures.

    Args:
        items_per_call: What one call processes, for the throughput (a batch size, or a GEMM's FLOPs).
        device: Where the paths run.
        warmup: Untimed calls per path.
        repeats: Timed calls per path.
        min_warmup_s: Least warm-up time per path.
        log: Called with one line per row as it finishes.
        checks: See :class:`TimingChecks`; None: no checks.
    """

    def __init__(
        self,
        items_per_call: float,
        device: torch.device,
        warmup: int,
        repeats: int,
        min_warmup_s: float,
        log: Optional[Callable[[str], None]] = None,
        checks: Optional[TimingChecks] = TimingChecks(),  # noqa: B008 -- frozen, shared safely
    ) -> None:
        _check_repeats(warmup, repeats)
        self.items_per_call, self.device = items_per_call, device
        self.warmup, self.repeats, self.min_warmup_s, self.log = warmup, repeats, min_warmup_s, log
        self.checks = checks
        self.rows: list[BenchResult] = []
        self._base: Optional[Callable[[], Any]] = None

    def run(self, row: BenchResult, build: Callable[[], Any]) -> BenchResult:
        """Build the path (``build()`` returns a call, or ``(call, note)``), time it into ``row`` and keep the row."""
        try:
            built = build()
            fn, note = built if isinstance(built, tuple) else (built, "")
            with torch.no_grad():
                if self._base is None:
                    timing = time_calls(fn, self.device, self.warmup, self.repeats, self.min_warmup_s, self.checks)
                    base = timing
                else:
                    pair = time_interleaved({"baseline": self._base, "path": fn}, self.device, self.warmup,
                                            self.repeats, self.min_warmup_s, self.checks)  # fmt: skip
                    base, timing = pair["baseline"], pair["path"]
                peak = measure_peak_memory(fn, self.device)
            row.latency_ms, row.throughput = timing.median * 1e3, self.items_per_call / timing.median
            row.peak_memory_mb = None if peak is None else peak / 2**20
            row.speedup = base.median / timing.median
            row.spread = timing.spread
            row.untrusted = "; ".join(dict.fromkeys([*base.problems, *timing.problems]))
            row.reason = note
            row.extra["timing"] = timing.summary()
            if base is not timing:
                row.extra["baseline_ms_interleaved"] = base.median * 1e3
            if self._base is None:
                self._base = fn
        except Exception as err:  # noqa: BLE001 -- every failure is a row, never a crash
            row.available, row.reason = False, unavailable_reason(err)
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.rows.append(row)
        if self.log is not None:
            self.log(row_line(row))
        return row
