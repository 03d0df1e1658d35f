"""The whole cluster path on a reachable cluster: overlay applied, pipeline submitted, run succeeds, the
generator is in the in-cluster MLflow registry, registered by the pipeline's MLflow user (basic-auth on,
anonymous requests refused). Skips with the reason unless KUBECONFIG names a reachable
cluster that runs Kubeflow Pipelines and has a GPU node (deploy/up.sh makes one on minikube with --gpus all).

    KUBECONFIG=~/.kube/config GANFORGE_DEPLOY_OVERLAY=minikube pytest -m slow tests/integration/test_deploy_cluster.py
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
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
    local = ("statefulset/ganforge-postgres", "deployment/ganforge-minio") if OVERLAY == "minikube" else ()
    for workload in (*local, "deployment/ganforge-mlflow"):
        res = _kubectl("-n", NS, "rollout", "status", workload, "--timeout=600s", timeout=700)
        assert res.returncode == 0, res.stderr
    res = _kubectl("-n", NS, "wait", "--for=condition=complete", "--timeout=300s", "job/ganforge-mlflow-users",
                   timeout=400)
    assert res.returncode == 0, res.stderr


def _pipeline_user() -> dict[str, str]:
    """MLFLOW_TRACKING_USERNAME/PASSWORD of the Secret ganforge-mlflow (what the pipeline pods log in as)."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    res = _kubectl("-n", NS, "get", "secret", "ganforge-mlflow", "-o",
                   "jsonpath={.data.MLFLOW_TRACKING_USERNAME} {.data.MLFLOW_TRACKING_PASSWORD}")
    assert res.returncode == 0, res.stderr
    return {k: base64.b64decode(v).decode() for k, v in zip(keys, res.stdout.split(), strict=True)}


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


def test_submit_run_and_registry(cluster, monkeypatch):
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
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(f"{uri}/api/2.0/mlflow/registered-models/get?name={model_name}", timeout=10)
        for key, value in _pipeline_user().items():
            monkeypatch.setenv(key, value)
        version = mlflow.MlflowClient(uri).get_model_version_by_alias(model_name, "candidate")
    assert anonymous.value.code == 401
    assert version.tags["pipeline_run_id"] == run_id


def _container_env(container: dict, secrets: dict, config: dict) -> dict[str, str]:
    """A container's env as the kubelet would make it, from the rendered Secrets and ConfigMaps."""
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # mlflow, python: the venv's
    for e in container.get("env", []):
        ref = e.get("valueFrom", {})
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in ref and ref["secretKeyRef"]["key"] in secrets.get(ref["secretKeyRef"]["name"], {}):
            env[e["name"]] = secrets[ref["secretKeyRef"]["name"]][ref["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in ref:
            env[e["name"]] = config[ref["configMapKeyRef"]["key"]]
    return env


def test_rendered_mlflow_server_and_users_job_run_locally(tmp_path, monkeypatch):
    """No cluster needed: the minikube overlay's MLflow pod (init container, then `mlflow server` with its
    args and env) and the users Job, run here with sqlite in place of PostgreSQL and a folder in place of
    the bucket. The pipeline user is created once (a rerun is fine), registers a model; others get 401."""
    import mlflow
    import yaml

    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed: overlay not rendered")
    rendered = _kubectl("kustomize", str(ROOT / "deploy" / "overlays" / "minikube")).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    secrets = {d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
               for d in docs if d["kind"] == "Secret"}
    secrets["ganforge-mlflow-db"] = {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path}/mlflow.db",
                                     "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{tmp_path}/auth.db"}
    config = {"MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")}
    pod = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ganforge-mlflow")
    pod = pod["spec"]["template"]["spec"]
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "ganforge-mlflow-users")
    ini = str(tmp_path / "basic_auth.ini")  # the emptyDir

    (init,) = pod["initContainers"]
    env = {**_container_env(init, secrets, config), "MLFLOW_AUTH_CONFIG_PATH": ini}
    subprocess.run(init["command"] + init["args"], env=env, check=True, timeout=30)
    server = pod["containers"][0]
    env = {**_container_env(server, secrets, config), "MLFLOW_AUTH_CONFIG_PATH": ini, "HOME": str(tmp_path)}
    env.pop("MLFLOW_S3_ENDPOINT_URL", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [a.replace("$(MLFLOW_ARTIFACTS_DESTINATION)", config["MLFLOW_ARTIFACTS_DESTINATION"])
            .replace("--port=5000", f"--port={port}") for a in server["args"]]
    assert f"--port={port}" in args
    log = tmp_path / "server.log"
    proc = subprocess.Popen(server["command"] + args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(1)
        (users,) = job["spec"]["template"]["spec"]["containers"]
        env = {**_container_env(users, secrets, config), "MLFLOW_URL": uri}
        runs = [subprocess.run(users["command"] + users["args"], env=env, capture_output=True, text=True, timeout=60)
                for _ in range(2)]
        assert [r.stdout.strip() for r in runs] == ["created MLflow user ganforge-pipeline",
                                                    "MLflow user ganforge-pipeline exists"], runs[0].stderr
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(f"{uri}/api/2.0/mlflow/registered-models/search", timeout=10)
        assert anonymous.value.code == 401
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", secrets["ganforge-mlflow"]["MLFLOW_TRACKING_USERNAME"])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secrets["ganforge-mlflow"]["MLFLOW_TRACKING_PASSWORD"])
        client = mlflow.MlflowClient(uri)
        client.create_registered_model("deploy-local-smoke")
        assert client.get_registered_model("deploy-local-smoke").name == "deploy-local-smoke"
    finally:
        proc.terminate()
        proc.wait(30)
