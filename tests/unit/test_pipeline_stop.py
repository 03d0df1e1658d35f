"""Ending a local pipeline run's processes (``ganforge.pipeline.stop``), without kfp: real child processes
that take the signal, ignore it, or leave a grandchild behind. The whole pipeline stopped by SIGTERM and
SIGINT is tests/integration/test_pipeline_signals.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from ganforge.pipeline.stop import StepProcesses, _stat

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="processes are found through /proc")

# a step that ignores SIGTERM and starts a grandchild that ignores it too; prints the grandchild's pid
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", code])
print(child.pid, flush=True)
time.sleep(600)
"""


def gone(pid: int) -> bool:
    st = _stat(pid)
    return st is None or st[1] in ("Z", "X")


def start(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_processes_that_ignore_the_signal_are_killed_after_the_grace_period():
    before = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    procs = StepProcesses()  # children there before the run began are never touched
    step = start(STUBBORN)
    try:
        grandchild = int(step.stdout.readline())
        live = procs.scan()
        assert set(live) == {step.pid, grandchild}
        assert procs.heads(live) == [step.pid]
        ended, killed = procs.end(signal.SIGTERM, grace=1.0)
        assert (ended, killed) == (0, 2)
        assert step.wait(30) == -signal.SIGKILL and gone(grandchild)
        assert before.poll() is None
        assert procs.scan() == {}
    finally:
        for p in (before, step):
            p.kill()
            p.wait(30)


def test_a_step_that_takes_the_signal_ends_by_itself_and_hurry_kills_at_once():
    procs = StepProcesses()
    polite = start("import time\nprint('up', flush=True)\ntime.sleep(600)")  # SIGTERM's default: it ends
    stubborn = start(STUBBORN)
    try:
        assert polite.stdout.readline().strip() == "up"
        grandchild = int(stubborn.stdout.readline())
        # hurry (a second signal) once the polite one ended on the first: the stubborn ones are killed at once
        ended, killed = procs.end(signal.SIGTERM, grace=600, hurry=lambda: polite.poll() is not None)
        assert polite.wait(30) == -signal.SIGTERM and stubborn.wait(30) == -signal.SIGKILL and gone(grandchild)
        assert (ended, killed) == (1, 2)
    finally:
        for p in (polite, stubborn):
            p.kill()
            p.wait(30)


def test_the_handler_ends_the_children_then_unwinds_a_blocking_wait():
    """What run_local relies on: a signal while kfp.local waits on a step ends the step, then unwinds."""
    script = """
import subprocess, sys
from ganforge.pipeline.stop import StopOnSignals, Stopped
with StopOnSignals(grace=60) as stop:
    child = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()
        print("ready", flush=True)
        child.wait()
        print("not stopped", flush=True)
    except Stopped as exc:
        print("stopped", exc.signum, stop.ended, child.wait(), flush=True)
"""
    for signum in (signal.SIGTERM, signal.SIGINT):
        p = start(script)
        try:
            assert p.stdout.readline().strip() == "ready"
            p.send_signal(signum)
            out, _ = p.communicate(timeout=120)
        finally:
            p.kill()
        assert out.strip() == f"stopped {int(signum)} (1, 0) {-int(signum)}" and p.returncode == 0, out
