"""The whole cluster path on a reachable cluster: overlay applied, pipeline submitted, run succeeds, the
generator is in the in-cluster MLflow registry. Skips with the reason unless KUBECONFIG names a reachable
cluster that runs Kubeflow Pipelines and has a GPU node (deploy/up.sh makes one on minikube with --gpus all).

    KUBECONFIG=~/.kube/config GANFORGE_DEPLOY_OVERLAY=minikube pytest -m slow tests/integration/test_deploy_cluster.py
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = os.environ.get("GANFORGE_DEPLOY_OVERLAY", "minikube")
NS = "kubeflow"


def _kubectl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster():
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("KUBECONFIG is not set: no cluster to run the deploy path on (deploy/up.sh makes one)")
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed")
    if _kubectl("get", "--raw", "/readyz", "--request-timeout=10s", timeout=30).returncode != 0:
        pytest.skip(f"the cluster in KUBECONFIG={os.environ['KUBECONFIG']} does not answer")
    if _kubectl("-n", NS, "get", "svc", "ml-pipeline").returncode != 0:
        pytest.skip(f"no Kubeflow Pipelines (svc/ml-pipeline) in namespace {NS}; run deploy/up.sh first")
    gpus = _kubectl("get", "nodes", "-o", "jsonpath={.items[*].status.allocatable.nvidia\\.com/gpu}").stdout.split()
    if not any(int(g) > 0 for g in gpus):
        pytest.skip("no node has an allocatable nvidia.com/gpu: the training task runs on a GPU node on a cluster")
    res = _kubectl("apply", "-k", str(ROOT / "deploy" / "overlays" / OVERLAY))
    assert res.returncode == 0, res.stderr
    for deploy in ("ganforge-mlflow",) + (("ganforge-minio",) if OVERLAY == "minikube" else ()):
        res = _kubectl("-n", NS, "rollout", "status", f"deployment/{deploy}", "--timeout=600s", timeout=700)
        assert res.returncode == 0, res.stderr


@contextmanager
def _forward(service: str, remote: int):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["kubectl", "-n", NS, "port-forward", f"svc/{service}", f"{port}:{remote}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except Exception:  # noqa: BLE001 - not up yet (an HTTP error status means it is up)
                if proc.poll() is not None:
                    raise RuntimeError(f"port-forward to {service} exited") from None
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_submit_run_and_registry(cluster):
    import kfp
    import mlflow

    model_name = f"deploy-smoke-{int(time.time())}"
    res = subprocess.run([str(ROOT / "deploy" / "submit.sh"), OVERLAY, "--gpus", "1", "--steps", "30", "--n", "64", "--audit-n", "64",
                          "--max-fid", "100000", "--model-name", model_name, "--experiment", "deploy-smoke"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    run_id = re.search(r"runs/details/([0-9a-f-]{36})", res.stdout).group(1)
    with _forward("ml-pipeline", 8888) as host:
        run = kfp.Client(host=host).wait_for_run_completion(run_id, timeout=3000)
    assert run.state == "SUCCEEDED", run.error
    with _forward("ganforge-mlflow", 5000) as uri:
        version = mlflow.MlflowClient(uri).get_model_version_by_alias(model_name, "candidate")
    assert version.tags["pipeline_run_id"] == run_id
