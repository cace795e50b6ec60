"""The planner's progress display: a rich progress bar over the walk's steps with the step at work, and one line per
step as it ends (what it measured, or why it was skipped); plain lines where the output is no terminal.

Example:
    >>> with WalkProgress(total=2, enabled=False) as progress:
    ...     progress.start("PTQ INT8")
    ...     progress.done("ptq_int8: 97.10 %, 0.25x fp32")
    ptq_int8: 97.10 %, 0.25x fp32
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Optional

__all__ = ["WalkProgress"]


class WalkProgress:
    """A progress bar over ``total`` steps (``enabled=False``: only the lines, through ``print`` when ``echo``)."""

    def __init__(self, total: int, enabled: bool = True, echo: bool = True) -> None:
        self.total, self.enabled, self.echo = total, enabled, echo
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> WalkProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            # auto_refresh=False: no refresh thread taking the GIL and a CPU while candidates are timed; the bar
            # is redrawn when a step starts or ends
            self._progress = Progress(TextColumn("[bold]lc-compress[/bold] {task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), auto_refresh=False)  # fmt: skip
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=self.total)
        return self

    def __exit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(kind, value, tb)
            self._progress = None

    def start(self, title: str) -> None:
        """A step begins."""
        if self._progress is not None:
            self._progress.update(self._task, description=title, refresh=True)

    def log(self, line: str) -> None:
        """One line above the bar."""
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        elif self.echo:
            print(line, flush=True)

    def done(self, line: str) -> None:
        """A step ended with ``line``."""
        self.log(line)
        if self._progress is not None:
            self._progress.advance(self._task)
            self._progress.refresh()
