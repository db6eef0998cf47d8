"""The one progress reporter of every command, fed by the library's
``progress(stage, done, total)`` callbacks (the library never prints).

On a terminal: rich progress bars on stderr, one per stage. Otherwise (a pipe, a log
file): plain timestamped lines on stderr, at most one every ``interval`` seconds, so a long
``mmfuse run ... 2>log`` shows where it is. ``--quiet``: neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

Callback = Callable[[str, int, int], None]

#: Seconds between two plain progress lines.
LINE_INTERVAL = 5.0


class Progress:
    """``with Progress(quiet, console) as progress:`` gives the callback to hand to the
    library (None when quiet), or a bar/line writer."""

    def __init__(self, quiet: bool, console: Console, *, interval: float = LINE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], float] = time.time):
        self.quiet = quiet
        self.console = console
        self.interval = interval
        self.clock = clock
        self.now = now
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._last_line: float | None = None
        self._start = 0.0

    def __enter__(self) -> Callback | None:
        if self.quiet:
            return None
        self._start = self.clock()
        if not self.console.is_terminal:
            return self.line
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bars,
                                   TextColumn, TimeElapsedColumn)

        self._bar = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), console=self.console, transient=True)
        self._bar.__enter__()
        return self.update

    def update(self, stage: str, done: int, total: int) -> None:
        """A rich bar per stage."""
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=total)
        self._bar.update(self._tasks[stage], completed=done, total=total)

    def line(self, stage: str, done: int, total: int) -> None:
        """A plain line: the first call, then at most one per ``interval`` seconds."""
        tick = self.clock()
        if self._last_line is not None and tick - self._last_line < self.interval:
            return
        self._last_line = tick
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.now()))
        share = f" ({done / total:.0%})" if total else ""
        elapsed = _duration(tick - self._start)
        self.console.print(f"{stamp} {stage}: {done}/{total}{share}, {elapsed} elapsed",
                           markup=False, highlight=False)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
