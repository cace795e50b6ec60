"""Is the machine busy? The CPU time other processes take while a benchmark runs, from ``/proc/stat``.

On a machine where another process computes, every timing is wrong: on two cores one busy neighbour can multiply a
latency tenfold and turn a speed-up ratio into noise. A :class:`LoadMonitor` around a timed loop (or an idle moment
before it, :func:`idle_load`) compares the CPU time the machine's CPUs spent busy (only the CPUs this process may run
on) with the CPU time this process got: the difference is what *other* processes used, in CPUs on average over the
window (``others_cpus``). The machine counts as busy when that exceeds what the benchmark leaves free
(:func:`allowed_others`): at least a quarter of a CPU of background noise, at most a tenth of the machine (memory
bandwidth and caches are shared too), and less where the benchmark's threads fill the CPUs.

The 1-minute load average (``os.getloadavg``) goes with every report, beside the threads of this process that are
running, but it is only the decision where ``/proc/stat`` is missing: it lags a minute and counts this process's own
recent work (the previous path of a benchmark) as load.

Example:
    >>> report = idle_load(0.05)
    >>> report.seconds > 0 and isinstance(report.busy, bool)
    True
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = ["CpuTimes", "LoadMonitor", "LoadReport", "allowed_others", "idle_load", "read_cpu_times", "usable_cpus"]

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (guest time is inside user)


@dataclass(frozen=True)
class CpuTimes:
    """One reading of the clocks the load is derived from.

    Attributes:
        wall: Monotonic wall time, s.
        busy: CPU time the counted CPUs spent busy, s (None without ``/proc/stat``).
        own: CPU time of this process (all its threads), s.
        cpus: The CPUs counted (those this process may run on).
    """

    wall: float
    busy: Optional[float]
    own: float
    cpus: int


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity), else all of them."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def read_cpu_times(stat: str = "/proc/stat", cpus: Optional[Iterable[int]] = None) -> CpuTimes:
    """Read the busy time of ``cpus`` (default: :func:`usable_cpus`) from ``stat`` and this process's CPU time.

    Example:
        >>> times = read_cpu_times()
        >>> times.own >= 0 and times.cpus >= 1
        True
    """
    wanted = set(usable_cpus() if cpus is None else cpus)
    wall, own = time.monotonic(), time.process_time()
    busy: Optional[float] = None
    try:
        lines = Path(stat).read_text().splitlines()
    except OSError:
        lines = []
    ticks = 0
    seen = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in wanted):
            continue
        values = [int(v) for v in rest.split()]
        ticks += sum(values[i] for i in _BUSY_FIELDS if i < len(values))
        seen += 1
    if seen:
        busy = ticks / os.sysconf("SC_CLK_TCK")
    return CpuTimes(wall, busy, own, seen or len(wanted))


def running_threads(task_dir: str = "/proc/self/task") -> Optional[int]:
    """Threads of this process that are running or runnable now (state ``R``); None without ``/proc``."""
    try:
        entries = list(Path(task_dir).iterdir())
    except OSError:
        return None
    count = 0
    for entry in entries:
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        count += state == "R"
    return count


def allowed_others(cpus: int, threads: int) -> float:
    """The CPUs other processes may keep busy before a benchmark using ``threads`` threads on ``cpus`` CPUs counts as
    disturbed: ``max(0.25, min(0.1 * cpus, cpus - threads + 0.25))``.

    Example:
        >>> allowed_others(2, 2), allowed_others(16, 4)
        (0.25, 1.6)
    """
    return max(0.25, min(0.1 * cpus, cpus - threads + 0.25))


@dataclass
class LoadReport:
    """The load over one window: what other processes took, what this process got, and the verdict.

    Attributes:
        seconds: Wall time of the window.
        cpus: CPUs counted.
        threads: Threads the benchmark uses (``torch.get_num_threads()``).
        others_cpus: CPUs other processes kept busy, on average (None without ``/proc/stat``).
        own_cpus: CPU seconds this process got per second of wall time.
        load_average: The 1-minute load average at the end (None where the OS has none).
        own_running: Threads of this process running at the end (None without ``/proc``).
        allowed: :func:`allowed_others` for this machine and thread count.
        busy: Whether other processes took more than ``allowed``.
    """

    seconds: float
    cpus: int
    threads: int
    others_cpus: Optional[float]
    own_cpus: float
    load_average: Optional[float]
    own_running: Optional[int]
    allowed: float
    busy: bool

    def text(self) -> str:
        """The figures, in words: ``other processes used 0.93 of 2 CPUs (at most 0.25 allowed); ...``."""
        parts = []
        if self.others_cpus is not None:
            parts.append(f"other processes used {self.others_cpus:.2f} of {self.cpus} CPUs (at most"
                         f" {self.allowed:.2f} allowed)")  # fmt: skip
        if self.load_average is not None:
            own = f", {self.own_running} running thread(s) of this process" if self.own_running is not None else ""
            parts.append(f"load average {self.load_average:.2f}{own}")
        parts.append(f"this process got {self.own_cpus:.2f} CPU-s per s over {self.seconds:.2f} s")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


class LoadMonitor:
    """Measures the load while its ``with`` block runs: ``with LoadMonitor(threads) as m: ...; m.report``.

    Args:
        threads: Threads the measured code uses (for :func:`allowed_others`); default ``torch.get_num_threads()``.
        sample: Reads the clocks (default :func:`read_cpu_times`); tests and simulations pass their own.
        load_average: Reads the 1-minute load average (default ``os.getloadavg()[0]``).
    """

    def __init__(
        self,
        threads: Optional[int] = None,
        sample: Optional[Callable[[], CpuTimes]] = None,
        load_average: Optional[Callable[[], Optional[float]]] = None,
    ) -> None:
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        self.threads = threads
        self.sample = sample or read_cpu_times
        self.load_average = load_average or _load_average
        self._start: Optional[CpuTimes] = None
        self.report: Optional[LoadReport] = None

    def __enter__(self) -> LoadMonitor:
        self._start = self.sample()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._start is not None
        self.report = load_between(self._start, self.sample(), self.threads, self.load_average(), running_threads())


def load_between(
    start: CpuTimes,
    end: CpuTimes,
    threads: int,
    load_average: Optional[float] = None,
    own_running: Optional[int] = None,
) -> LoadReport:
    """The :class:`LoadReport` of the window between two readings.

    Example:
        >>> a, b = CpuTimes(0.0, 10.0, 1.0, 2), CpuTimes(1.0, 11.5, 1.5, 2)
        >>> load_between(a, b, threads=1).others_cpus  # 1.5 CPU-s busy, 0.5 of them this process's
        1.0
    """
    seconds = max(end.wall - start.wall, 1e-9)
    own = max(end.own - start.own, 0.0) / seconds
    allowed = allowed_others(end.cpus, threads)
    others: Optional[float] = None
    if start.busy is not None and end.busy is not None:
        others = max(end.busy - start.busy - (end.own - start.own), 0.0) / seconds
        busy = others > allowed
    else:  # no /proc/stat: the load average, less this process's running threads, is all there is
        busy = load_average is not None and load_average - (own_running or 0) > allowed + max(end.cpus - threads, 0)
    return LoadReport(seconds, end.cpus, threads, others, own, load_average, own_running, allowed, busy)


def idle_load(seconds: float = 0.2, threads: Optional[int] = None, monitor: Optional[LoadMonitor] = None) -> LoadReport:
    """The load while this process sleeps for ``seconds``: what other processes do before a measurement starts.

    Example:
        >>> idle_load(0.05, threads=1).threads
        1
    """
    monitor = monitor or LoadMonitor(threads)
    with monitor:
        time.sleep(seconds)
    assert monitor.report is not None
    return monitor.report
