"""The registry with its artifacts on S3 (moto in server mode) behind a second ``mlflow server``."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import MLFLOW_SERVER_ENV, free_port, stop_server, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def s3_mlflow_server(s3_env, moto_server, tmp_path):
    """An ``mlflow server`` proxying artifacts to ``s3://<bucket>/mlflow`` on moto; yields (url, bucket)."""
    port = free_port()
    env = {**os.environ, **MLFLOW_SERVER_ENV, "MLFLOW_S3_ENDPOINT_URL": moto_server}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
         "--artifacts-destination", f"s3://{s3_env}/mlflow", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc, timeout=120)
        yield url, s3_env
    finally:
        stop_server(proc)
        log.close()


def test_register_and_load_with_s3_artifacts(s3_mlflow_server, digits16, moto_server, tmp_path, monkeypatch):
    import boto3
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from ganforge.registry import promote, register, resolve_model_uri
    from tests.integration.test_registry import train_run

    url, bucket = s3_mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    run_id = train_run(digits16, tmp_path / "run")
    client = MlflowClient(url, registry_uri=url)
    secret_uri = "s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/digits?X-Amz-Signature=deadbeef"
    client.set_tag(run_id, "dataset_uri", secret_uri)  # a URI someone typed with credentials in it

    out = register(run_id, name="s3gen")
    promote("s3gen", out["version"])
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=moto_server).list_objects_v2(
        Bucket=bucket, Prefix="mlflow/")["Contents"]]
    assert any(k.endswith("artifacts/generator.safetensors") for k in keys)
    assert any(k.endswith("checkpoint/generator.safetensors") for k in keys)
    images = mlflow.pyfunc.load_model("models:/s3gen@champion").predict(
        pd.DataFrame({"seed": [0], "label": [-1], "n": [2]}))
    assert len(images) == 2
    assert (resolve_model_uri("models:/s3gen@champion") / "generator.safetensors").is_file()

    mv = client.get_model_version("s3gen", str(out["version"]))
    model = client.get_registered_model("s3gen")
    logged = client.get_logged_model(mv.source.removeprefix("models:/"))
    seen = " ".join([*mv.tags.values(), mv.description or "", *model.tags.values(), model.description or "",
                     *logged.tags.values(), *logged.params.values()])
    assert mv.tags["dataset_uri"] == "s3://***@bucket/digits?X-Amz-Signature=***"
    for secret in ("wJalrXUtnFEMI", "deadbeef", os.environ["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in seen
