"""SIGTERM/SIGINT to ``ganforge pipeline run --local`` while it trains: the command ends its step processes,
ends every MLflow run the pipeline opened as KILLED with the reason, and exits 143/130 with one ``error:`` line.

The command runs as a subprocess (digits at 16 px, 100,000 training steps: long enough to interrupt)
against a sqlite store in the test's folder; the signal goes to its pid alone, as ``kill PID`` or a job
runner sends it, not to its process group. The test waits for training to log its first metrics (polling
MLflow), never for a fixed time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600),
              pytest.mark.skipif(not os.path.isdir("/proc"), reason="processes are found through /proc")]
EXPERIMENT = "stopped"


def live_processes_mentioning(text: str) -> list[str]:
    """Command lines of the live (not zombie) processes whose command line holds ``text``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append(f"{entry.name} {state} {cmdline[:200]}")
    return found


def wait_for_training(uri: str, proc: subprocess.Popen, log: Path, timeout: float = 400):
    """(an MLflow client, the training run's id) once that run has logged metrics: the loop is running."""
    from mlflow.tracking import MlflowClient

    deadline, client = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the pipeline ended before training: {_text(log)[-3000:]}"
        if client is None and "Executing task 'train'" in _text(log):  # start-run made the experiment before
            client = MlflowClient(uri)
        exp = client.get_experiment_by_name(EXPERIMENT) if client is not None else None
        if exp is not None:
            for run in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'"):
                if "ganforge.step" not in run.data.tags and run.data.metrics:  # a training run has no step tag
                    return client, run.info.run_id
        time.sleep(1)
    raise AssertionError(f"training did not start in {timeout}s: {_text(log)[-3000:]}")


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_during_training_leaves_no_running_run_and_no_process(tmp_path, signum, sqlite_store):
    root = tmp_path / f"run-{signum.name}"
    uri = sqlite_store
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    args = ["pipeline", "run", "--local", "--dir", str(root), "--experiment", EXPERIMENT, "--image-size", "16",
            "--limit", "128", "--steps", "100000"]
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "ganforge", *args], stdout=o, stderr=e, env=env)
    try:
        while "executor logs: " not in _text(err):  # the log's path is its first line on stderr
            assert proc.poll() is None, _text(err)
            time.sleep(0.2)
        log = Path(_text(err).split("executor logs: ", 1)[1].splitlines()[0].strip())
        client, train_run = wait_for_training(uri, proc, log)
        proc.send_signal(signum)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    stderr = _text(err)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 128 + signum, stderr
    assert len(errors) == 1 and errors == stderr.strip().splitlines()[-1:], stderr
    assert f"stopped by {signum.name} during train: " in errors[0] and f"executor logs: {log}" in errors[0]
    assert re.search(rf"^\d\d:\d\d:\d\d train +stopped +[\d:]+  stopped by {signum.name}$", stderr, re.M), stderr
    assert _text(out) == ""  # no summary: the run did not finish

    assert live_processes_mentioning(str(root)) == []  # the steps (and anything under them) are gone
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    parent = next(r for r in runs if r.data.tags.get("ganforge.step") == "pipeline")
    assert parent.info.status == "KILLED" and parent.info.end_time
    assert parent.data.tags["ganforge.pipeline_error"] == f"stopped by {signum.name} during train"
    assert f"parent {parent.info.run_id}" in errors[0]
    train = client.get_run(train_run)
    assert train.info.status == "KILLED" and train.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "ganforge: stopped by" in log.read_text()
