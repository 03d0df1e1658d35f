"""SIGTERM/SIGINT to ``ganforge pipeline run --local``: end the step processes, then say so.

kfp.local's SubprocessRunner starts each step as a child of this process (a shell running
``python -m kfp.dsl.executor_main``) in this process's group; a signal sent to this process alone
(``kill PID``, a job runner's stop) does not reach them, and they would train on after the command
exited. ``StopOnSignals`` installs handlers for the length of the run: the first signal sends the
same signal to each step (the first process under each shell: it checkpoints and ends its MLflow
run), waits up to ``STOP_GRACE_SECONDS`` for every process under the run to end, SIGKILLs what
remains, and then unwinds kfp.local with ``Stopped``; a second signal while waiting kills at once,
and one during the MLflow clean-up that follows exits at once (128 + signal).

Processes are found by walking ``/proc`` (Linux): the children this process started after the run
began, and everything under them, each known by (pid, start time), so a process whose parent
died first is still ended and a reused pid is never signalled. Elsewhere nothing is tracked and the
steps are left to the signal the user's terminal sends to the whole group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

STOP_GRACE_SECONDS = 30.0  # a training step checkpoints and ends its MLflow run in this time, even on a busy CPU
KILL_WAIT_SECONDS = 10.0  # after SIGKILL, how long to wait for the processes to vanish
SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "busybox"})  # kfp.local's wrapper around each step
SignalHandler = Callable[[int, FrameType | None], Any] | int | None  # what signal.signal takes and gives back


class Stopped(BaseException):
    """Raised by the signal handler to unwind kfp.local (a ``BaseException``: nothing there catches it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time in clock ticks) of ``pid``; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    try:
        return int(fields[1]), fields[0], fields[19]
    except (IndexError, ValueError):
        return None


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, start time) of every process in ``/proc``; {} without ``/proc``."""
    table = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
                table[int(entry.name)] = st
    return table


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class StepProcesses:
    """The processes a local run started: this process's children that were not there when it began,
    and everything under them (found again on every ``scan``)."""

    def __init__(self, pid: int | None = None):
        self.pid = os.getpid() if pid is None else pid
        table = process_table()
        self.before = {(p, st[2]) for p, st in table.items() if st[0] == self.pid}
        self.known: dict[int, str] = {}  # pid -> start time, of every process seen under the run
        self.tracked = bool(table)

    def scan(self) -> dict[int, tuple[int, str, str]]:
        """The live (not zombie) processes of the run, with their (parent, state, start time)."""
        table = process_table()
        children: dict[int, list[int]] = {}
        for p, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(p)
        for p in children.get(self.pid, []):
            if (p, table[p][2]) not in self.before:
                self.known[p] = table[p][2]
        todo = [p for p, start in self.known.items() if p in table and table[p][2] == start]
        while todo:
            for child in children.get(todo.pop(), []):
                if self.known.get(child) != table[child][2]:
                    self.known[child] = table[child][2]
                    todo.append(child)
        return {p: table[p] for p, start in self.known.items()
                if p in table and table[p][2] == start and table[p][1] not in ("Z", "X", "x")}

    def heads(self, live: dict[int, tuple[int, str, str]]) -> list[int]:
        """The step processes: the first process that is not a shell on each path down from this one."""
        out = []
        for p, (ppid, _, _) in live.items():
            if _comm(p) in SHELLS:
                continue
            parent_is_shell = ppid in live and _comm(ppid) in SHELLS
            if ppid == self.pid or parent_is_shell or ppid not in live:
                out.append(p)
        return sorted(out)

    def end(self, signum: int, grace: float = STOP_GRACE_SECONDS, hurry: Callable[[], bool] = lambda: False,
            poll: float = 0.2) -> tuple[int, int]:
        """Send ``signum`` to the step processes, wait up to ``grace`` seconds (or until ``hurry()``) for
        every process of the run to end, then SIGKILL the rest.

        Returns:
            (processes that ended on the signal, processes that had to be killed).
        """
        live = self.scan()
        if not live:
            return 0, 0
        seen = set(live)
        for p in self.heads(live):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signum)
        deadline = time.monotonic() + grace
        while live and time.monotonic() < deadline and not hurry():
            time.sleep(poll)
            live = self.scan()
            seen |= set(live)
        killed = set()
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while live and time.monotonic() < deadline:
            for p in live:  # scan() checked the start time: this is still the process seen before
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGKILL)
                    killed.add(p)
            time.sleep(poll / 2)
            live = self.scan()
            seen |= set(live)
        return len(seen - killed), len(killed)


class StopOnSignals:
    """SIGTERM and SIGINT stop a local run: its processes end (``StepProcesses.end``), then ``Stopped``
    unwinds kfp.local. Use as a context manager around the run and the clean-up after a stop; the
    previous handlers come back on exit. Inert outside the main thread (no handlers can be installed)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, grace: float = STOP_GRACE_SECONDS):
        self.grace = grace
        self.signum: int | None = None
        self.ended = (0, 0)  # (ended on the signal, killed)
        self._phase = "running"  # then "stopping" (ending processes), then "stopped" (the clean-up)
        self.hurried = False  # a second signal came while the processes ended: the rest were killed at once
        self._previous: dict[int, SignalHandler] = {}
        self.processes: StepProcesses | None = None

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            self.processes = StepProcesses()
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def _handle(self, signum: int, _frame) -> None:
        if self._phase == "stopping":  # a second signal while the steps end: kill them now
            self.hurried = True
            return
        if self._phase == "stopped":  # during the clean-up: stop that too
            raise SystemExit(128 + signum)
        self.signum, self._phase = signum, "stopping"
        try:
            if self.processes is not None:
                self.ended = self.processes.end(signum, self.grace, lambda: self.hurried)
        finally:
            self._phase = "stopped"
        raise Stopped(signum)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15 (the number itself for an unnamed one)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
