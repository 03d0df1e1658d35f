"""Pure pipeline logic: the gate's decision and reasons, the nesting environment, the unset encoding."""

from __future__ import annotations

import math
import os

import pytest

from ganforge.pipeline.gate import decide
from ganforge.pipeline.runs import PARENT_ENV, PIPELINE_RUN_ENV, nesting_tags
from ganforge.pipeline.steps import pipeline_env


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


def test_pipeline_env_sets_and_restores(monkeypatch):
    monkeypatch.delenv(PARENT_ENV, raising=False)
    monkeypatch.setenv(PIPELINE_RUN_ENV, "outer")
    with pipeline_env("parent-1", "kfp-1"):
        assert nesting_tags() == {"mlflow.parentRunId": "parent-1", "ganforge.pipeline_run_id": "kfp-1"}
    assert PARENT_ENV not in os.environ and os.environ[PIPELINE_RUN_ENV] == "outer"


def test_no_nesting_outside_a_pipeline(monkeypatch):
    monkeypatch.delenv(PARENT_ENV, raising=False)
    monkeypatch.delenv(PIPELINE_RUN_ENV, raising=False)
    assert nesting_tags() == {}
