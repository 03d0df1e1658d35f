"""Experiments ganforge creates or uses carry ``mlflow.experimentKind`` and a shared runs-table view, so the
MLflow UI opens the runs table with FID, KID and the audit verdict (the browser check: test_pipeline_local.py)."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from ganforge.tracking import EXPERIMENT_KIND, experiment_id, open_tracker, runs_table_url

KIND = "mlflow.experimentKind"
VIEW = "mlflow.sharedViewState.ganforge"


def test_experiment_kind(sqlite_store, monkeypatch):
    uri = sqlite_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    assert EXPERIMENT_KIND == {KIND: "custom_model_development"}

    # created by a training/evaluate run: tagged from the start
    tracker = open_tracker(True, "made-by-ganforge", None, {"lr": 0.1}, {})
    tracker.close()
    made = client.get_experiment_by_name("made-by-ganforge")
    assert made.tags[KIND] == "custom_model_development"
    assert json.loads(made.tags[VIEW])["selectedColumns"][1:] == [
        "metrics.`eval/fid`", "metrics.`eval/kid`", "tags.`audit_verdict`"]
    assert experiment_id(client, "made-by-ganforge") == made.experiment_id  # found, not created twice

    # an experiment from before (no kind) gets the tag; one its owner tagged as GenAI keeps its kind
    old = client.create_experiment("older")
    genai = client.create_experiment("genai", tags={KIND: "genai_development"})
    assert experiment_id(client, "older") == old and experiment_id(client, "genai") == genai
    assert client.get_experiment(old).tags[KIND] == "custom_model_development" and VIEW in client.get_experiment(old).tags
    assert client.get_experiment(genai).tags[KIND] == "genai_development"


def test_runs_table_url():
    assert runs_table_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=ganforge")
