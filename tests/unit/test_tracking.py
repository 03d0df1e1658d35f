"""Tracking: URI handling, reachability, the default sqlite store, and the engine's mlflow-free imports."""

from __future__ import annotations

import ast
import socket
import time
from pathlib import Path

import numpy as np
import pytest

import ganforge
from ganforge.errors import GanforgeError
from ganforge.tracking import NullTracker, check_reachable, open_tracker, redact, tracking_uri

SRC = Path(ganforge.__file__).parent


def test_redact_hides_credentials():
    assert redact("https://alice:s3cret@mlflow.example.com/x") == "https://***@mlflow.example.com/x"
    assert redact("sqlite:///mlflow.db") == "sqlite:///mlflow.db"


def test_default_uri_is_local_sqlite(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


def test_unreachable_server_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(GanforgeError, match=rf"cannot reach the MLflow server at http://127.0.0.1:{port}"):
        check_reachable(f"http://127.0.0.1:{port}")
    assert time.monotonic() - t0 < 6
    check_reachable("sqlite:///anything.db")  # local stores need no server


def test_disabled_tracking_is_a_null_tracker():
    tracker = open_tracker(False, "e", None, {"a": 1}, {})
    assert isinstance(tracker, NullTracker) and tracker.run_id is None
    tracker.log_metrics({"x": 1.0}, 1)
    tracker.close()


def test_only_tracking_imports_mlflow_in_the_engine():
    files = [*sorted((SRC / "training").glob("*.py")), SRC / "cli_train.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "mlflow" for n in names), path


def test_sqlite_default_store_records_a_run(tmp_path, monkeypatch):
    """With no MLFLOW_TRACKING_URI the run lands in ./mlflow.db; metrics async, images in the background."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = open_tracker(True, "unit", None, {"lr_g": 0.0002, "resume": None}, {"git_commit": "abc"})
    for step in (1, 2, 3):
        tracker.log_metrics({"train/loss_g": float(step)}, step)
    tracker.log_image(np.zeros((8, 8, 3), np.uint8), "samples", 3)
    tracker.log_loss_curves({"train/loss_g": [(1, 1.0), (2, 2.0)]})
    tracker.close()
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient("sqlite:///mlflow.db")
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr_g": "0.0002", "resume": "None"}
    assert run.data.tags["git_commit"] == "abc"
    assert [m.step for m in client.get_metric_history(tracker.run_id, "train/loss_g")] == [1, 2, 3]
    names = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert "loss_curve.png" in names and "images" in names
