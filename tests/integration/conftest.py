"""Integration fixtures: a real ``mlflow server`` on 127.0.0.1 and a tiny real dataset.

The helpers ``free_port``, ``wait_http`` and ``stop_server`` come from the root conftest (the moto S3 fixture
uses the first two).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import MLFLOW_SERVER_ENV, free_port, stop_server, wait_http


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """An ``mlflow server`` process (sqlite backend, local artifact store) on a free 127.0.0.1 port.

    Yields its URL once ``/health`` answers; the process is killed at teardown (``stop_server``).
    """
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group: its workers go too
        env={**os.environ, **MLFLOW_SERVER_ENV},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, timeout=120)
    except RuntimeError:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise RuntimeError(f"mlflow server did not start; log:\n{(root / 'server.log').read_text()[-3000:]}") from None
    yield url
    stop_server(proc)
    log.close()


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL cluster on 127.0.0.1 (``tests.team_mlflow.Postgres``), removed after."""
    from tests.team_mlflow import Postgres

    pg = Postgres.start()
    yield pg
    pg.stop()


OWNER, READER = "owner", "reader"  # the team server's users: the model's owner (a release manager) and a reader
PASSWORDS = {OWNER: "owner-password-x7Q2", READER: "reader-password-k3W9"}


@pytest.fixture(scope="session")
def team_server(postgres, moto_server, tmp_path_factory):
    """MLflow as a team runs it: ``mlflow server --app-name basic-auth`` on PostgreSQL, artifacts in a moto S3
    bucket served through the server (clients need no S3 credentials), users ``owner`` and ``reader``
    (default permission READ). Yields the ``tests.team_mlflow.TeamServer``."""
    from tests.team_mlflow import TeamServer

    s3 = {"AWS_ACCESS_KEY_ID": "team-key", "AWS_SECRET_ACCESS_KEY": "team-secret", "AWS_REGION": "us-east-1"}
    server = TeamServer.start(tmp_path_factory.mktemp("team-mlflow"), postgres, moto_server, s3)
    try:
        for user, password in PASSWORDS.items():
            server.add_user(user, password)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def registry_server(request):
    """The registry suite's server, each module run twice: the plain ``mlflow_server`` (sqlite, local artifacts,
    no users) and the ``team_server`` (PostgreSQL, S3 artifacts, basic-auth) as the model's owner, whose
    credentials stay in the environment for the module (its subprocesses inherit them). Yields the URL."""
    if request.param == "sqlite":
        yield request.getfixturevalue("mlflow_server")
        return
    team = request.getfixturevalue("team_server")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_USERNAME", OWNER)
        mp.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORDS[OWNER])
        yield team.url


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Tiny networks: one thread per process (and per rank or subprocess) on shared, busy cores."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
