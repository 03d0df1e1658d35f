"""Progress of long steps: a rich bar in a terminal, periodic plain lines elsewhere, nothing when off.

Everything goes to stderr; stdout carries the commands' results (JSON, summaries) untouched. Commands
made of steps (the local pipeline) also print one ``step_line`` as each step starts and ends.

- **bar** (stderr is a terminal): one rich bar per step with done/total, items/s and ETA. Steps that
  run inside another (a FID probe inside training) join the live display and leave it when done, so
  the terminal holds one display at a time.
- **plain** (pipelines, CI logs, pipes): a line every ``interval`` seconds (10 by default,
  ``GANFORGE_PROGRESS_INTERVAL``) and one when the step ends,
  ``<label>: <done>/<total> <unit> (<pct>%), <rate> <unit>/s, eta H:MM:SS`` (``done in H:MM:SS`` last);
  steps shorter than ``quiet`` seconds (2) print nothing. Never a line per batch.
- **off**: ``GANFORGE_PROGRESS=0``, and on every process but rank 0 (torchrun's ``RANK``).

``GANFORGE_PROGRESS=bar`` or ``plain`` forces a mode; the ``tty`` argument forces it in tests, and
``clock`` (or the interval) makes the plain cadence independent of timing. The module imports only
the standard library at the top (rich when a bar is drawn), so any layer may use it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

ENV = "GANFORGE_PROGRESS"
INTERVAL_ENV = "GANFORGE_PROGRESS_INTERVAL"
INTERVAL = 10.0  # plain mode: seconds between lines
QUIET = 2.0  # plain mode: steps shorter than this print nothing
Mode = Literal["bar", "plain", "off"]


def fmt_duration(seconds: float) -> str:
    """``H:MM:SS`` of a duration in seconds."""
    m, s = divmod(int(max(seconds, 0)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


STEP_WIDTH = 11  # step names of the pipeline ("finish-run") line up in step lines


def step_line(name: str, status: str, *, seconds: float | None = None, figure: str = "", at: float | None = None,
              width: int = 120) -> str:
    """One line of a multi-step command (``ganforge pipeline run --local``) as a step starts or ends:
    ``HH:MM:SS <name> <status> [H:MM:SS] [figure]``, cut to ``width`` characters (one screen row).

    Args:
        name: the step.
        status: "start", "ok", "FAILED", "skipped", "retry" ...
        seconds: how long the step took (ends only).
        figure: the step's key result, e.g. "FID 38.81, KID 0.4108".
        at: the wall-clock time of the event (seconds since the epoch); None: now.
        width: the longest line; a longer figure is cut and ends in "...".
    """
    when = time.strftime("%H:%M:%S", time.localtime(time.time() if at is None else at))
    took = fmt_duration(seconds) if seconds is not None else ""
    line = f"{when} {name:<{STEP_WIDTH}} {status:<7} {took:>7}  {figure}".rstrip()
    return line if len(line) <= width else line[: width - 3] + "..."


def is_main_rank() -> bool:
    """False on torchrun's ranks other than 0, which stay quiet."""
    try:
        return int(os.environ.get("RANK") or 0) == 0
    except ValueError:
        return True


def plain_interval() -> float:
    """Seconds between plain lines: ``GANFORGE_PROGRESS_INTERVAL``, else ``INTERVAL``."""
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV) or INTERVAL))
    except ValueError:
        return INTERVAL


def default_console():
    """The rich console bars draw on: stderr (stdout carries results)."""
    from rich.console import Console

    return Console(stderr=True)


def progress_mode(tty: bool | None = None, enabled: bool = True) -> Mode:
    """How progress is shown in this process.

    Args:
        tty: force a bar (True) or plain lines (False); None: ``GANFORGE_PROGRESS``, else a bar when
            stderr is a terminal.
        enabled: False turns progress off (e.g. a caller's own rank check).

    Returns:
        "bar", "plain" or "off".
    """
    env = os.environ.get(ENV, "").strip().lower()
    if not enabled or env in ("0", "off", "false", "no") or not is_main_rank():
        return "off"
    if tty is not None:
        return "bar" if tty else "plain"
    if env in ("bar", "plain"):
        return env  # type: ignore[return-value]
    return "bar" if sys.stderr.isatty() else "plain"


class _Display:
    """The one live rich display of the terminal; bars of nested steps are tasks in it."""

    def __init__(self):
        self.progress = None
        self.users = 0

    def acquire(self, console):
        if self.progress is None:
            self.progress = _rich_progress(console or default_console())
            self.progress.start()
        self.users += 1
        return self.progress, self.users > 1

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.progress is not None:
            self.progress.stop()  # leaves the finished bars on screen
            self.progress = None


_DISPLAY = _Display()  # one terminal, one live display: rich refuses two at once


def _rich_progress(console):
    """``label ━━━━━╸     done/total 1,234 img/s, eta 0:01:02 info``, one line per step.

    Each line is laid out on its own (a long label or info does not widen the others); on a narrow
    terminal the bar shrinks first and the info is cut, never the counts, rate or ETA.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
    from rich.table import Column
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second in the task's own unit (``img/s``), then the ETA, or the time taken."""

        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            rate = f"{speed:,.0f} {task.fields['unit']}/s" if speed else f"- {task.fields['unit']}/s"
            if task.finished:
                tail = f"done in {fmt_duration(task.finished_time or 0)}"
            else:
                left = task.time_remaining
                tail = f"eta {fmt_duration(left)}" if left is not None else "eta -"
            return Text(f"{rate}, {tail}", style="progress.data.speed")

    class InfoColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(task.fields["info"], no_wrap=True, overflow="ellipsis")

    class LineProgress(Progress):
        def get_renderables(self):
            for task in self.tasks:
                yield self.make_tasks_table([task])

    def fixed():
        return Column(no_wrap=True)

    return LineProgress(
        TextColumn("{task.description}", markup=False, table_column=fixed()),
        BarColumn(bar_width=None, table_column=Column(max_width=40)),
        MofNCompleteColumn(table_column=fixed()), RateColumn(table_column=fixed()), InfoColumn(),
        console=console, refresh_per_second=4,
    )  # fmt: skip


class Bar:
    """One step's progress; ``advance`` or ``update`` it per batch or chunk, never per item.

    Attributes:
        label: what is running, e.g. "extract inception-tf".
        total: items to do.
        unit: the items' name, e.g. "img".
        done: items done so far.
        mode: "bar", "plain" or "off".
    """

    def __init__(
        self,
        label: str,
        total: float,
        unit: str = "it",
        *,
        done: float = 0,
        tty: bool | None = None,
        enabled: bool = True,
        interval: float | None = None,
        quiet: float | None = None,
        clock: Callable[[], float] | None = None,
        console: Any = None,
        stream: Any = None,
    ):
        """Start showing progress (see ``progress_bar`` for the arguments)."""
        self.label, self.total, self.unit, self.done = label, total, unit, done
        self.mode = progress_mode(tty, enabled)
        self.interval = plain_interval() if interval is None else interval
        self.quiet = min(QUIET, self.interval) if quiet is None else quiet
        self.clock, self._stream = clock or time.monotonic, stream
        self.t0 = self._last = self.clock()
        self._start, self._shown, self._lines, self._rich, self._nested = done, done, 0, None, False
        if self.mode == "bar":
            self._rich, self._nested = _DISPLAY.acquire(console)
            self._task = self._rich.add_task(label, total=total, completed=done, unit=unit, info="")

    def advance(self, n: float = 1) -> None:
        """Count ``n`` more items done."""
        self.update(self.done + n)

    def update(self, done: float, info: str | None = None) -> None:
        """Set the items done (and, on a bar, an extra text shown after it)."""
        self.done = done
        if self.mode == "bar":
            assert self._rich is not None, "the bar was closed"
            fields = {} if info is None else {"info": info}
            self._rich.update(self._task, completed=done, **fields)
        elif self.mode == "plain" and self._shown < done < self.total:  # the last line is close()'s
            now = self.clock()
            if now - self._last >= self.interval and now - self.t0 >= self.quiet:
                self._line(now, final=False)

    def message(self, text: str) -> None:
        """Print a line without breaking the bar (nothing when off)."""
        if self.mode == "bar":
            assert self._rich is not None, "the bar was closed"
            self._rich.console.print(text)
        elif self.mode == "plain":
            print(text, file=self._stream or sys.stderr, flush=True)

    def close(self, completed: bool = True) -> None:
        """End the display: the bar stays on screen (nested ones vanish); plain mode prints a last
        line when the step took ``quiet`` seconds or more (``completed``: it did not fail)."""
        if self.mode == "bar" and self._rich is not None:
            if self._nested:
                self._rich.remove_task(self._task)
            _DISPLAY.release()
            self._rich = None
        elif self.mode == "plain" and completed:
            now = self.clock()
            if self._lines or now - self.t0 >= self.quiet:
                self._line(now, final=True)
        self.mode = "off"

    def _line(self, now: float, final: bool) -> None:
        elapsed = max(now - self.t0, 1e-9)
        rate = (self.done - self._start) / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        if final:
            tail = f"done in {fmt_duration(elapsed)}"
        else:
            tail = f"eta {fmt_duration((self.total - self.done) / rate)}" if rate > 0 else "eta -"
        text = (f"{self.label}: {self.done:.0f}/{self.total:.0f} {self.unit} ({pct:.0f}%), "
                f"{rate:,.1f} {self.unit}/s, {tail}")
        print(text, file=self._stream or sys.stderr, flush=True)
        self._last, self._lines, self._shown = now, self._lines + 1, self.done


@contextmanager
def progress_bar(
    label: str,
    total: float,
    unit: str = "it",
    *,
    tty: bool | None = None,
    enabled: bool = True,
    interval: float | None = None,
    quiet: float | None = None,
    clock: Callable[[], float] | None = None,
    console: Any = None,
    stream: Any = None,
) -> Iterator[Bar]:
    """Show the progress of one step: ``with progress_bar("extract", total=n, unit="img") as bar:``.

    Args:
        label: what is running, first on the bar or line.
        total: items to do.
        unit: the items' name ("img", "query").
        tty: force a bar (True) or plain lines (False); None: decide from ``GANFORGE_PROGRESS`` and stderr.
        enabled: False shows nothing (callers use it for steps too short to show).
        interval: plain mode: seconds between lines; None: ``plain_interval()``.
        quiet: plain mode: steps shorter than this print nothing at all; None: ``QUIET`` (or the
            interval when smaller).
        clock: plain mode: seconds, monotonic; None: ``time.monotonic`` (tests inject a fake one).
        console: bar mode: a ``rich.console.Console`` to draw on; None: ``default_console()``.
        stream: plain mode: where lines go (default: ``sys.stderr`` at the time of writing).

    Yields:
        The ``Bar``; the display ends with the block (no final plain line when it raises).
    """
    bar = Bar(label, total, unit, tty=tty, enabled=enabled, interval=interval, quiet=quiet, clock=clock,
              console=console, stream=stream)
    completed = False
    try:
        yield bar
        completed = True
    finally:
        bar.close(completed)
