"""What the kfp.local pipeline tests share: the tiny run's parameters and readers of its console and runs."""

from __future__ import annotations

import re

from mlflow.tracking import MlflowClient

TINY = {"image_size": 16, "steps": 20, "n": 64, "audit_n": 24, "max_fid": 1000.0}  # 20 steps: a loose gate
STEPS = ("ingest", "start-run", "train", "evaluate", "audit", "gate", "register", "finish-run")
STEP_LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<step>[\w-]+) +(?P<status>\w+)\b *(?P<rest>.*)$")


def step_lines(output: str) -> dict[tuple[str, str], str]:
    """``(step, status) -> the rest of the line`` of the console's step lines."""
    found = {}
    for line in output.splitlines():
        if m := STEP_LINE.match(line):
            found[(m.group("step"), m.group("status"))] = m.group("rest")
    return found


def step_runs(experiment: str, pipeline_run_id: str) -> dict:
    """The pipeline run's MLflow runs by step (the training run has no step tag of its own)."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`ganforge.pipeline_run_id` = '{pipeline_run_id}'")
    return {r.data.tags.get("ganforge.step", "train"): r for r in runs}


def versions(name: str) -> list:
    return MlflowClient().search_model_versions(f"name = '{name}'")
