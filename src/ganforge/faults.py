"""Fault injection for tests: ``GANFORGE_FAULT_AT=<point>[@<signal>]`` signals the process at ``point``.

Inert unless the variable names the point being passed; the fault-injection tests use it to kill a
command between two writes that must not be seen apart (registry writes, MLflow and ``--output``).
``<signal>`` is a number (``9``) or a name, with or without ``SIG`` and in any case (``SIGKILL``,
``KILL``, ``term``); default: SIGKILL. A signal that is neither fails at the point with one line.
"""

from __future__ import annotations

import os
import signal
import time

from ganforge.errors import GanforgeError

FAULT_ENV = "GANFORGE_FAULT_AT"


def fault_signal(spec: str) -> int:
    """The signal number ``spec`` names: ``""`` (SIGKILL), ``"15"``, ``"SIGTERM"``, ``"TERM"``, ``"term"``.

    Raises:
        GanforgeError: neither a number nor a signal's name (one line: what is accepted).
    """
    text = spec.strip()
    if not text:
        return int(signal.SIGKILL)
    if text.isdigit():
        return int(text)
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    sig = getattr(signal.Signals, name, None) if name.isidentifier() else None
    if not isinstance(sig, signal.Signals):
        raise GanforgeError(f"{FAULT_ENV}: {spec!r} is not a signal; use a number (9) or a name (KILL, SIGTERM, term)")
    return int(sig)


def fault_point(name: str) -> None:
    """Signal this process when ``GANFORGE_FAULT_AT`` names ``name``; otherwise do nothing.

    Raises:
        GanforgeError: the variable names ``name`` with a signal that is not one (see ``fault_signal``).
    """
    point, _, spec = os.environ.get(FAULT_ENV, "").partition("@")
    if point == name:
        os.kill(os.getpid(), fault_signal(spec))
        time.sleep(5)  # a handled signal (SIGTERM) is acted on here, as it would be at any other point
