"""Tracking: URI handling, reachability, the default sqlite store, and the engine's mlflow-free imports."""

from __future__ import annotations

import ast
import os
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
    files = [*sorted((SRC / "training").glob("*.py")), SRC / "cli" / "train.py"]
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


def test_no_track_is_suggested_only_to_commands_that_have_it():
    """Issue 13: registry commands suggested --no-track, which they lack."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(GanforgeError) as plain:
        check_reachable(uri)
    assert "--no-track" not in str(plain.value)
    with pytest.raises(GanforgeError, match=r"fix MLFLOW_TRACKING_URI, or pass --no-track$"):
        check_reachable(uri, no_track_flag=True)


@pytest.mark.parametrize("where", ["/proc/mlflow.db", "/proc/missing/mlflow.db"])
def test_sqlite_store_in_a_read_only_folder_fails_at_once(where):
    """Issue 13: MLflow retried for 108 s with 36 warnings; /proc refuses new files even to root."""
    t0 = time.monotonic()
    with pytest.raises(GanforgeError, match=r"MLflow store sqlite:////proc/.*(cannot be written|does not exist)"):
        check_reachable(f"sqlite:///{where}", no_track_flag=True)
    assert time.monotonic() - t0 < 30  # no retry loop (generous: a busy machine)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into mode-555 folders")
def test_sqlite_store_in_a_mode_555_folder(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(GanforgeError, match="cannot be written"):
        check_reachable(f"sqlite:///{tmp_path}/ro/mlflow.db")


def test_sqlite_store_paths(tmp_path, monkeypatch):
    (tmp_path / "db").mkdir()
    with pytest.raises(GanforgeError, match=r"is not a file; fix MLFLOW_TRACKING_URI$"):
        check_reachable(f"sqlite:///{tmp_path}/db")
    with pytest.raises(GanforgeError, match="folder .*nope does not exist"):
        check_reachable(f"sqlite:///{tmp_path}/nope/mlflow.db")
    check_reachable(f"sqlite:///{tmp_path}/mlflow.db")  # a new database in a writable folder
    monkeypatch.chdir(tmp_path)
    check_reachable("sqlite:///mlflow.db")  # relative to the working directory
    check_reachable("sqlite://")  # in memory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]  # the probe leaves nothing


def test_a_finished_run_is_never_reopened(sqlite_store, monkeypatch):
    """Issue 13 item 1: only an interrupted run is continued; otherwise a new run carries the lineage tags."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    link = {"resumed_from_run_id": "parent", "resumed_from_step": "2"}
    first = open_tracker(True, "unit", None, {"steps": 2}, {})
    first.close("KILLED")
    again = open_tracker(True, "unit", None, {"steps": 4}, {}, run_id=first.run_id, lineage=link)
    assert again.continued and again.run_id == first.run_id
    again.close()
    client = MlflowClient(sqlite_store)
    assert "resumed_from_run_id" not in client.get_run(first.run_id).data.tags
    third = open_tracker(True, "unit", None, {"steps": 6}, {}, run_id=first.run_id, lineage=link)
    assert not third.continued and third.run_id != first.run_id
    third.close()
    assert client.get_run(first.run_id).data.params["steps"] == "2"
    assert client.get_run(third.run_id).data.tags["resumed_from_step"] == "2"
    unknown = open_tracker(True, "unit", None, {}, {}, run_id="0" * 32)  # from another store: a new run
    assert not unknown.continued
    unknown.close()


def test_end_pipeline_runs_ends_only_the_unfinished_runs_of_that_pipeline_run(tmp_path, monkeypatch, sqlite_store):
    """What a stopped local pipeline calls: its parent and its steps' RUNNING runs end KILLED, with the reason."""
    from mlflow.tracking import MlflowClient

    from ganforge.tracking import PIPELINE_RUN_TAG, end_pipeline_runs

    monkeypatch.chdir(tmp_path)  # sqlite_store put an empty store at tmp_path/mlflow.db
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    c = MlflowClient("sqlite:///mlflow.db")
    exp = c.create_experiment("stop")

    def run(tags, finished=False):
        run_id = c.create_run(exp, tags=tags).info.run_id
        if finished:
            c.set_terminated(run_id)
        return run_id

    parent = run({PIPELINE_RUN_TAG: "kfp-1", "ganforge.step": "pipeline"})
    train = run({PIPELINE_RUN_TAG: "kfp-1", "mlflow.parentRunId": parent})
    nested = run({"mlflow.parentRunId": parent})  # nested under the parent without the pipeline tag
    done = run({PIPELINE_RUN_TAG: "kfp-1", "ganforge.step": "evaluate"}, finished=True)
    other = run({PIPELINE_RUN_TAG: "kfp-2", "ganforge.step": "pipeline"})
    pipeline_run_id, ended = end_pipeline_runs(parent, "stopped by SIGTERM during train")
    assert pipeline_run_id == "kfp-1" and [r.info.run_id for r in ended][0] == parent
    assert {r.info.run_id for r in ended} == {parent, train, nested}
    for run_id in (parent, train, nested):
        r = c.get_run(run_id)
        assert r.info.status == "KILLED" and r.data.tags["ganforge.pipeline_error"] == "stopped by SIGTERM during train"
    assert c.get_run(done).info.status == "FINISHED" and "ganforge.pipeline_error" not in c.get_run(done).data.tags
    assert c.get_run(other).info.status == "RUNNING"
    assert end_pipeline_runs(parent, "again") == ("kfp-1", [])  # nothing left to end
