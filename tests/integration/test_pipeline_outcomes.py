"""The whole pipeline through kfp.local (SubprocessRunner) against a real ``mlflow server`` and a real S3
endpoint (moto), both on 127.0.0.1: a run the gate stops, and one whose step fails after training.

The run that registers, and what the MLflow UI shows of it, is test_pipeline_local.py. Each run is tiny
(16 px digits on S3, 20 training steps, 64 evaluated and 24 audited images); most of its time is the
start-up of one Python process per task.
"""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient

from ganforge.errors import GanforgeError
from ganforge.pipeline.runner import local_params, run_local
from pipelines.gan_pipeline import build
from tests.integration.kfp_runs import TINY, step_lines, step_runs, versions

pytestmark = pytest.mark.integration


@pytest.fixture
def tracked(mlflow_server, s3_env, monkeypatch, tmp_path, request):
    """MLflow at the server, datasets on the moto bucket; yields (root dir, experiment, model name, S3 URI)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = request.node.name.replace("_", "-")[:40]
    return tmp_path, f"exp-{name}", f"gen-{name}", f"s3://{s3_env}/datasets/digits16"


def test_impossible_gate_registers_nothing(tracked, capsys):
    root, experiment, model_name, dataset = tracked
    params = local_params(root, dataset=dataset, experiment=experiment, model_name=model_name,
                          **{**TINY, "max_fid": 1e-9})
    result = run_local(params, root, build=build)
    steps = step_lines(capsys.readouterr().err)
    assert re.search(r"do not register: not registered: FID \S+ is above max_fid 1e-09", steps["gate", "ok"])
    assert steps["register", "skipped"] == "gate-passed: condition evaluated to False"
    assert ("register", "start") not in steps and ("finish-run", "ok") in steps
    assert result.status == "FINISHED" and result.registered is None
    assert result.outcome.startswith("not registered: FID") and "above max_fid 1e-09" in result.outcome
    parent = MlflowClient().get_run(result.parent_run_id)
    assert parent.data.metrics["gate/passed"] == 0.0
    assert "ganforge.registered_model" not in parent.data.tags
    assert versions(model_name) == []


def test_failing_step_marks_parent_failed(tracked, capsys):
    root, experiment, model_name, dataset = tracked
    # weights that exist (the up-front check passes) but are not the backbone's: evaluate fails after training,
    # inside the exit handler
    weights = root / "not-inception.pth"
    weights.write_bytes(b"not a state dict")
    params = local_params(root, dataset=dataset, experiment=experiment, model_name=model_name,
                          backbone="inception-torchvision", backbone_weights=str(weights), **TINY)
    with pytest.raises(GanforgeError, match="failed: .*parent MLflow run .* is marked FAILED and nothing was registered"
                       ) as failure:
        run_local(params, root, verbose=True, build=build)
    # the message names the failed step, its last output line and the log file
    log = next((root / "logs").glob("kfp-*.log"))
    assert re.search(r"; evaluate: .*weights.*; executor logs: " + re.escape(str(log)) + "$", str(failure.value))
    err = capsys.readouterr().err
    steps = step_lines(err)
    assert ("evaluate", "FAILED") in steps and "weights" in steps["evaluate", "FAILED"]
    assert "upstream" in steps["gate", "skipped"] and ("finish-run", "ok") in steps
    assert "Executing task" in err  # --verbose: kfp.local's logs reach the console as well as the file
    assert "Task 'evaluate' finished with status FAILURE" in log.read_text()
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], "tags.`ganforge.step` = 'pipeline'")
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert parents[0].data.tags["ganforge.pipeline_state"] == "FAILED"
    runs = step_runs(experiment, parents[0].data.tags["ganforge.pipeline_run_id"])
    assert runs["train"].info.status == "FINISHED" and "evaluate" not in runs
    assert versions(model_name) == []
