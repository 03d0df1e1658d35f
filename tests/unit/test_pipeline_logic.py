"""Pure pipeline logic: the gate's decision and reasons, the run context, the unset encoding."""

from __future__ import annotations

import math
import os

import pytest

from ganforge.pipeline.gate import decide
from ganforge.tracking import RunContext


def test_gate_passes_within_limits():
    d = decide(12.5, 20.0, "pass")
    assert d.passed and d.reasons == [] and d.summary().startswith("passed")


def test_gate_fid_limit_is_inclusive():
    assert decide(20.0, 20.0, "pass").passed


def test_gate_gives_every_reason():
    d = decide(35.0, 20.0, "fail", ["12% of samples closer than the held-out baseline"])
    assert not d.passed
    assert d.reasons == ["FID 35.00 is above max_fid 20",
                         "memorisation audit verdict 'fail' (12% of samples closer than the held-out baseline)"]
    assert d.summary() == "not registered: " + "; ".join(d.reasons)


def test_gate_nan_fid_never_passes():
    assert not decide(math.nan, 1e9, "pass").passed


@pytest.mark.parametrize("limit", [math.nan, math.inf, -1.0, 0.0])
def test_gate_limit_that_would_switch_it_off_never_passes(limit):
    d = decide(428.0, limit, "pass")
    assert not d.passed and "not a finite positive limit" in d.summary()


def test_a_run_context_nests_a_run_without_touching_the_environment():
    before = dict(os.environ)
    assert RunContext("parent-1", "kfp-1").tags() == {"mlflow.parentRunId": "parent-1",
                                                      "ganforge.pipeline_run_id": "kfp-1"}
    assert dict(os.environ) == before


def test_no_nesting_outside_a_pipeline():
    assert RunContext().tags() == {}
