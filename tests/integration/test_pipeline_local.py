"""The whole pipeline through kfp.local (SubprocessRunner) against a real ``mlflow server`` and a real S3
endpoint (moto), both on 127.0.0.1: a run that registers, one the gate stops, one whose step fails.

Each run is tiny (16 px digits on S3, 20 training steps, 64 evaluated and 24 audited images); most of
its time is the start-up of one Python process per task.
"""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ganforge.cli import app
from ganforge.errors import GanforgeError
from ganforge.pipeline.runner import local_params, run_local
from pipelines.gan_pipeline import build

pytestmark = pytest.mark.integration

TINY = {"image_size": 16, "steps": 20, "n": 64, "audit_n": 24, "max_fid": 1000.0}  # 20 steps: a loose gate
STEPS = ("ingest", "start-run", "train", "evaluate", "audit", "gate", "register", "finish-run")
STEP_LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<step>[\w-]+) +(?P<status>\w+)\b *(?P<rest>.*)$")


def _step_lines(output: str) -> dict[tuple[str, str], str]:
    """``(step, status) -> the rest of the line`` of the console's step lines."""
    found = {}
    for line in output.splitlines():
        if m := STEP_LINE.match(line):
            found[(m.group("step"), m.group("status"))] = m.group("rest")
    return found


@pytest.fixture
def tracked(mlflow_server, s3_env, monkeypatch, tmp_path, request):
    """MLflow at the server, datasets on the moto bucket; yields (root dir, experiment, model name, S3 URI)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = request.node.name.replace("_", "-")[:40]
    return tmp_path, f"exp-{name}", f"gen-{name}", f"s3://{s3_env}/datasets/digits16"


def _runs(experiment: str, pipeline_run_id: str) -> dict:
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`ganforge.pipeline_run_id` = '{pipeline_run_id}'")
    return {r.data.tags.get("ganforge.step", "train"): r for r in runs}


def _versions(name: str) -> list:
    return MlflowClient().search_model_versions(f"name = '{name}'")


def test_local_run_registers_candidate(tracked):
    root, experiment, model_name, dataset = tracked
    args = ["pipeline", "run", "--local", "--dir", str(root), "--dataset", dataset, "--experiment", experiment,
            "--model-name", model_name, *[x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output[-3000:]
    # one screen: a start and an end line per step, then the summary; kfp.local's own logs are in the file
    assert len(res.output.splitlines()) <= 40, res.output
    assert "Executing task" not in res.output and "Streamed logs" not in res.output
    steps = _step_lines(res.output)
    for step in STEPS:
        assert (step, "start") in steps and (step, "ok") in steps, (step, res.output)
    assert re.match(r"0:\d\d:\d\d  digits16: 1,797 images, fingerprint [0-9a-f]{12} ", steps["ingest", "ok"])
    assert re.search(r"step 20, loss_d \d+\.\d{3}, loss_g \d+\.\d{3}$", steps["train", "ok"])
    assert re.search(r"FID \d+\.\d\d, KID -?\d\.\d{4} \(64 images\)$", steps["evaluate", "ok"])
    assert steps["audit", "ok"].endswith("verdict pass")
    assert steps["gate", "ok"].endswith("register: passed: FID and audit within limits")
    assert steps["register", "ok"].endswith(f"{model_name}/1 (alias candidate)")
    lines = {ln.split(":")[0].strip(): ln for ln in res.output.splitlines() if ":" in ln}
    log = root / lines["executor logs"].split(":", 1)[1].strip()
    assert log.parent == root / "logs" and log.is_file()
    text = log.read_text()
    for step in STEPS:
        assert f"Executing task '{step}'" in text and f"Task '{step}' finished with status SUCCESS" in text, step
    assert "step 20/20 loss_d=" in text  # the training task's own output, streamed by kfp.local
    assert "FINISHED" in next(ln for ln in res.output.splitlines() if ln.startswith("pipeline run "))
    assert f"{model_name}/1 (alias candidate)" in lines["registered"]
    assert "mlflow ui --backend-store-uri" in lines["open the MLflow UI"]
    grid = lines["sample grid"].split(":", 1)[1].strip()
    assert grid.endswith("samples/final.png") and (root / "runs").as_posix() in grid

    client = MlflowClient()
    parent_id = lines["MLflow run"].split(":", 1)[1].split()[0]
    parent = client.get_run(parent_id)
    kfp_run = parent.data.tags["ganforge.pipeline_run_id"]
    assert parent.info.status == "FINISHED"
    assert f"/#/experiments/{parent.info.experiment_id}/runs?workflowType=machine_learning&" in lines["runs table"]
    assert parent.data.tags["ganforge.pipeline_version"] and parent.data.tags["ganforge.gate"].startswith("passed")
    assert parent.data.tags["ganforge.registered_model"] == f"{model_name}/1"
    assert parent.data.metrics["gate/passed"] == 1.0 and parent.data.metrics["eval/fid"] > 0

    runs = _runs(experiment, kfp_run)
    assert set(runs) == {"pipeline", "train", "evaluate", "audit"}
    for step in ("train", "evaluate", "audit"):
        assert runs[step].data.tags["mlflow.parentRunId"] == parent_id, step
        assert runs[step].info.status == "FINISHED", step
    assert runs["train"].data.params["dataset"] == dataset and runs["train"].data.params["steps"] == "20"
    assert "train/loss_d" in runs["train"].data.metrics
    assert runs["evaluate"].data.metrics["eval/fid_64_train"] == pytest.approx(parent.data.metrics["eval/fid"])
    # the runs table's columns: FID, KID and the audit verdict under the same names whatever n was
    assert runs["evaluate"].data.metrics["eval/kid_mean_64_train"] == pytest.approx(parent.data.metrics["eval/kid"])
    assert parent.data.tags["audit_verdict"] == "pass"
    # the final sample grid is an image of the parent run (MLflow's chart view shows it beside the table)
    images = [f.path for f in client.list_artifacts(parent_id, "images")]
    assert any(p.startswith("images/samples") and p.endswith(".png") for p in images), images
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert runs["audit"].data.metrics["audit/passed"] == 1.0

    version = client.get_model_version_by_alias(model_name, "candidate")
    assert version.version == "1" and version.run_id == runs["train"].info.run_id
    assert version.tags["pipeline_run_id"] == kfp_run
    assert version.tags["dataset_uri"] == dataset
    assert version.tags["dataset_fingerprint"] == runs["train"].data.tags["dataset_fingerprint"]


def test_impossible_gate_registers_nothing(tracked, capsys):
    root, experiment, model_name, dataset = tracked
    params = local_params(root, dataset=dataset, experiment=experiment, model_name=model_name,
                          **{**TINY, "max_fid": 1e-9})
    result = run_local(params, root, build=build)
    steps = _step_lines(capsys.readouterr().err)
    assert re.search(r"do not register: not registered: FID \S+ is above max_fid 1e-09", steps["gate", "ok"])
    assert steps["register", "skipped"] == "gate-passed: condition evaluated to False"
    assert ("register", "start") not in steps and ("finish-run", "ok") in steps
    assert result.status == "FINISHED" and result.registered is None
    assert result.outcome.startswith("not registered: FID") and "above max_fid 1e-09" in result.outcome
    parent = MlflowClient().get_run(result.parent_run_id)
    assert parent.data.metrics["gate/passed"] == 0.0
    assert "ganforge.registered_model" not in parent.data.tags
    assert _versions(model_name) == []


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
    steps = _step_lines(err)
    assert ("evaluate", "FAILED") in steps and "weights" in steps["evaluate", "FAILED"]
    assert "upstream" in steps["gate", "skipped"] and ("finish-run", "ok") in steps
    assert "Executing task" in err  # --verbose: kfp.local's logs reach the console as well as the file
    assert "Task 'evaluate' finished with status FAILURE" in log.read_text()
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], "tags.`ganforge.step` = 'pipeline'")
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert parents[0].data.tags["ganforge.pipeline_state"] == "FAILED"
    runs = _runs(experiment, parents[0].data.tags["ganforge.pipeline_run_id"])
    assert runs["train"].info.status == "FINISHED" and "evaluate" not in runs
    assert _versions(model_name) == []
