"""The fault-injection hook: inert unless named, signals at exactly the named point (names hold colons)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("spec, point, code", [
    ("evaluate:before-output@15", "evaluate:before-output", -15),
    ("evaluate:before-output", "evaluate:before-output", -9),
    ("evaluate:before-output@15", "evaluate", 0),
    ("", "evaluate:before-output", 0),
])  # fmt: skip
def test_fault_point_signals_only_the_named_point(spec, point, code):
    src = (f"import os; os.environ['GANFORGE_FAULT_AT'] = {spec!r}\n"
           f"from ganforge.faults import fault_point\nfault_point({point!r})")
    assert subprocess.run([sys.executable, "-c", src], timeout=120).returncode == code
