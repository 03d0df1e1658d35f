"""The fault-injection hook: inert unless named, signals at exactly the named point (names hold colons);
the signal is a number or a name (``@SIGKILL``, ``@KILL``, ``@term``), as its docstring says."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from ganforge.errors import GanforgeError
from ganforge.faults import fault_signal


@pytest.mark.parametrize("spec, point, code", [
    ("evaluate:before-output@15", "evaluate:before-output", -15),
    ("evaluate:before-output", "evaluate:before-output", -9),
    ("evaluate:before-output@15", "evaluate", 0),
    ("", "evaluate:before-output", 0),
    ("evaluate:before-output@SIGTERM", "evaluate:before-output", -15),
    ("evaluate:before-output@KILL", "evaluate:before-output", -9),
    ("evaluate:before-output@term", "evaluate:before-output", -15),
])  # fmt: skip
def test_fault_point_signals_only_the_named_point(spec, point, code):
    src = (f"import os; os.environ['GANFORGE_FAULT_AT'] = {spec!r}\n"
           f"from ganforge.faults import fault_point\nfault_point({point!r})")
    assert subprocess.run([sys.executable, "-c", src], timeout=120).returncode == code


@pytest.mark.parametrize("spec, signum", [
    ("", signal.SIGKILL), ("9", signal.SIGKILL), ("15", signal.SIGTERM), ("SIGKILL", signal.SIGKILL),
    ("KILL", signal.SIGKILL), ("TERM", signal.SIGTERM), ("sigint", signal.SIGINT), ("Int", signal.SIGINT),
])  # fmt: skip
def test_fault_signal_takes_numbers_and_names(spec, signum):
    assert fault_signal(spec) == signum


@pytest.mark.parametrize("spec", ["FOO", "SIG_IGN", "SIG_DFL", "-9", "9.0", "SIG KILL"])
def test_fault_signal_refuses_what_is_no_signal_in_one_line(spec):
    with pytest.raises(GanforgeError, match=r"is not a signal; use a number \(9\) or a name") as err:
        fault_signal(spec)
    assert "\n" not in str(err.value)
