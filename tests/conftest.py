"""Shared fixtures: a real S3 endpoint (moto in server mode) on 127.0.0.1, and a clean cache dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not come up in {timeout}s")


# The environment of a test's ``mlflow server``: no job runner. MLflow 3 starts one beside the server, with
# seven huey consumer processes for its GenAI jobs (ganforge has none): 8 more Python start-ups, 11 s of CPU
# of a server's 19 s on a busy machine, and 4 s more before it answers.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def stop_server(proc: subprocess.Popen) -> None:
    """SIGKILL to a test server started in its own session (``start_new_session=True``), and to its workers:
    its store is thrown away with the test's folder, and a graceful stop waits out the clients' kept-alive
    connections (4 s or more)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory):
    """An empty sqlite MLflow store, made once per test process for ``sqlite_store`` and ``copy_store`` to copy.
    MLflow makes a new store by running its schema migrations: 1.5 s, 5 s on a busy core, per test."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("empty-mlflow-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates it (sqlite's rollback journal: one file)
    return path


def copy_store(template, folder) -> str:
    """``folder/mlflow.db``, an empty MLflow store (a copy of ``template``); returns its absolute sqlite URI.
    Only the Default experiment's artifact folder differs from a store MLflow would make here: ganforge never
    logs to Default, and every other experiment's is set when the store is opened, as before."""
    from pathlib import Path

    path = Path(folder) / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_store(empty_mlflow_store, tmp_path) -> str:
    """The URI of an empty sqlite MLflow store at ``tmp_path/mlflow.db`` (``copy_store``)."""
    return copy_store(empty_mlflow_store, tmp_path)


def assert_no_runs(uri: str, experiment: str) -> None:
    """The sqlite MLflow store at ``uri`` holds no run in ``experiment``. A store file that was never created
    holds none: opening it would only create it (MLflow's schema migrations, 1.5 s or more on a busy core)."""
    if not os.path.exists(uri.removeprefix("sqlite:///")):
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is None or not client.search_runs([exp.experiment_id]), f"a run in {experiment!r} at {uri}"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny tensors gain nothing from threads, and a second thread spinning while the other core is
    busy (another test process, a server fixture) slows tiny tests down many times over."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _one_click_tree():
    """typer's ``CliRunner.invoke(app)`` rebuilds the click command tree from the typer app on every call
    (20-40 ms; the suite invokes ganforge's app some 1,700 times): ganforge's app is built once per process.
    Any other typer app (a test's own) is built per call as before."""
    import typer.testing

    build, built = typer.testing._get_command, {}

    def get_command(app):
        cli = sys.modules.get("ganforge.cli.app")
        if cli is None or app is not cli.app:
            return build(app)
        if "tree" not in built:
            built["tree"] = build(app)
        return built["tree"]

    typer.testing._get_command = get_command
    yield
    typer.testing._get_command = build


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's ~/.cache/ganforge, nor finds weights in torch.hub's cache
    (``~/.cache/torch/hub``: inception-torchvision's are looked up there), which differs between machines."""
    monkeypatch.setenv("GANFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))


def start_moto(extra_env: dict | None = None):
    port = free_port()
    env = {**os.environ, **(extra_env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/moto-api/", proc)
    return proc, url


@pytest.fixture(scope="session")
def moto_server():
    """A moto S3 server process on 127.0.0.1; yields its endpoint URL."""
    proc, url = start_moto()
    yield url
    proc.terminate()
    proc.wait(10)


def s3_bucket(moto_server: str, monkeypatch) -> str:
    """Point boto3 and pyarrow at the moto server with dummy credentials; returns a fresh bucket's name."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = f"gf-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def s3_env(moto_server, monkeypatch):
    """``s3_bucket`` for one test; yields the bucket name."""
    return s3_bucket(moto_server, monkeypatch)


@pytest.fixture(scope="session")
def digits16(tmp_path_factory):
    """scikit-learn's digits ingested at 16 px (at most 128 images per split): a real ganforge dataset."""
    from ganforge.data.ingest import ingest

    out = tmp_path_factory.mktemp("digits16")
    ingest("digits", output=str(out), image_size=16, limit=128)
    return str(out)
