"""Build the CPU image with docker/build-local.sh and check what is inside it (needs a Docker engine).

Slow (minutes; the first build downloads about 4 GB of wheels): ``make test-slow`` or
``pytest -m slow tests/slow/test_docker_image.py``. Skips with the reason when no engine answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("GANFORGE_TEST_IMAGE", "ganforge:latest")  # the components' base image


def _docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def image():
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI: apt-get install docker.io, start dockerd, then rerun")
    info = _docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    if info.returncode != 0:
        pytest.skip(f"no Docker engine answers ({info.stderr.strip().splitlines()[-1:]}); start dockerd and rerun")
    # build-local.sh builds, then runs the smoke test (ingest digits + 5 training steps) inside the container
    res = subprocess.run([str(ROOT / "docker" / "build-local.sh")], env={**os.environ, "IMAGE": IMAGE},
                         capture_output=True, text=True, timeout=3000)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "smoke test passed" in res.stderr
    return IMAGE


def _run(image: str, script: str) -> str:
    res = _docker("run", "--rm", "--network", "none", image, "bash", "-c", script)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


def test_labels_and_user(image):
    labels = _docker("image", "inspect", "-f", "{{json .Config.Labels}}", image).stdout
    for key in ("org.opencontainers.image.source", "org.opencontainers.image.version",
                "org.opencontainers.image.revision"):
        assert key in labels
    assert _run(image, "id -u; id -g") == "10001\n10001"


def test_final_layer_has_no_build_tools_or_caches(image):
    out = _run(image, "for t in gcc cc make g++ apt-cache; do command -v $t >/dev/null && echo $t; done; "
                      "ls -d /root/.cache/pip ~/.cache/pip /src 2>/dev/null; true")
    assert out in ("", "apt-cache"), out  # apt itself is part of any Debian base


def test_every_component_entry_point_runs(image):
    # one image serves every component: the CLI, KFP's python3 launcher and the MLflow server are all there
    out = _run(image, "ganforge --help >/dev/null && python3 -c 'import ganforge, kfp, mlflow, boto3; print(1)' "
                      "&& command -v mlflow")
    assert out.splitlines() == ["1", "/opt/ganforge/bin/mlflow"]


def test_kfp_launcher_dirs_are_writable(image):
    # KFP's v2 launcher writes artifacts under /minio, /s3 or /gcs as the image's (non-root) user
    assert _run(image, "for d in /minio /s3 /gcs; do touch $d/probe && echo ok; done") == "ok\nok\nok"


def test_a_component_runs_in_the_image_through_kfp_local(image, tmp_path):
    """The ingest component, run by kfp.local's DockerRunner in the components' base image."""
    import sys

    from kfp import local

    if image != "ganforge:latest":
        pytest.skip("the components name ganforge:latest as their base image")
    sys.path.insert(0, str(ROOT))
    from components.ingest import ingest

    root = tmp_path / "kfp"
    root.mkdir()
    root.chmod(0o777)  # the container's user 10001 writes the outputs into this bind mount
    local.init(runner=local.DockerRunner(), pipeline_root=str(root), raise_on_error=True)
    task = ingest(source="digits", dataset=str(root / "datasets" / "digits"), image_size=16, limit=64)
    meta = task.outputs["dataset_out"].metadata
    assert meta["uri"] == str(root / "datasets" / "digits") and len(meta["fingerprint"]) == 64


def test_mlflow_deployment_command_runs_in_the_image(image, s3_env, tmp_path):
    """deploy/base/mlflow.yaml's command line, in the image (host network), stores artifacts in S3 (moto)."""
    import time
    import urllib.request

    import mlflow
    import yaml

    from tests.conftest import free_port

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "base" / "mlflow.yaml").read_text()))
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    destination = f"s3://{s3_env}/artifacts"
    args = [a.replace("$(MLFLOW_ARTIFACTS_DESTINATION)", destination).replace("--port=5000", f"--port={port}")
            for a in container["args"]]
    (tmp_path / "db").mkdir(mode=0o777)
    (tmp_path / "db").chmod(0o777)
    name = f"ganforge-mlflow-test-{port}"
    res = _docker("run", "-d", "--name", name, "--network", "host", "-v", f"{tmp_path / 'db'}:/mlflow",
                  "-e", f"AWS_ACCESS_KEY_ID={os.environ['AWS_ACCESS_KEY_ID']}",
                  "-e", f"AWS_SECRET_ACCESS_KEY={os.environ['AWS_SECRET_ACCESS_KEY']}",
                  "-e", "AWS_DEFAULT_REGION=us-east-1", "-e", f"MLFLOW_S3_ENDPOINT_URL={os.environ['AWS_ENDPOINT_URL']}",
                  image, *container["command"], *args)
    assert res.returncode == 0, res.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(1)
        client = mlflow.MlflowClient(url)
        run = client.create_run(client.create_experiment(f"deploy-check-{port}"))
        (tmp_path / "grid.txt").write_text("grid")
        client.log_artifact(run.info.run_id, str(tmp_path / "grid.txt"), "samples")
        assert [f.path for f in client.list_artifacts(run.info.run_id, "samples")] == ["samples/grid.txt"]
    finally:
        logs = _docker("logs", name).stderr[-2000:]
        _docker("rm", "-f", name)
    import boto3

    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_env).get("Contents", [])]
    assert any(k.endswith("samples/grid.txt") for k in keys), logs
