"""Fault injection for tests: ``GANFORGE_FAULT_AT=<point>[@<signal number>]`` signals the process at ``point``.

Inert unless the variable names the point being passed; the fault-injection tests use it to kill a
command between two writes that must not be seen apart (registry writes, MLflow and ``--output``).
Default signal: SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "GANFORGE_FAULT_AT"


def fault_point(name: str) -> None:
    """Signal this process when ``GANFORGE_FAULT_AT`` names ``name``; otherwise do nothing."""
    point, _, signum = os.environ.get(FAULT_ENV, "").partition("@")
    if point == name:
        os.kill(os.getpid(), int(signum or signal.SIGKILL))
        time.sleep(5)  # a handled signal (SIGTERM) is acted on here, as it would be at any other point
