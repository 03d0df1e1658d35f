"""Ingest to and load from a real S3 endpoint: moto in server mode on 127.0.0.1, over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import pytest
import torch

from ganforge.data import load, read_manifest
from ganforge.data.ingest import ingest
from ganforge.errors import GanforgeError

pytestmark = pytest.mark.integration


def test_digits_round_trip_on_s3(s3_env, moto_server, tmp_path):
    uri = f"s3://{s3_env}/datasets/digits"
    res = ingest("digits", uri, image_size=16, shard_size_mb=0.05)
    assert not res.reused
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_env, Prefix="datasets/digits/")["Contents"]]
    assert "datasets/digits/manifest.json" in keys
    assert not [k for k in keys if "/_tmp-" in k], "temporary shards must be gone after publishing"
    shards = [k for k in keys if k.endswith(".parquet")]
    assert len(shards) == len(res.manifest["shards"]) > 1
    manifest_text = s3.get_object(Bucket=s3_env, Key="datasets/digits/manifest.json")["Body"].read().decode()
    assert "testing-secret" not in manifest_text and "testing-key" not in manifest_text

    local = ingest("digits", str(tmp_path / "digits"), image_size=16)
    assert local.fingerprint == res.fingerprint, "the fingerprint identifies content, wherever it lives"
    a, b = load(uri, use_cache=False), load(str(tmp_path / "digits"), use_cache=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert ingest("digits", uri, image_size=16).reused
    assert read_manifest(uri)["counts"] == local.manifest["counts"]


def test_missing_bucket_is_one_clear_error(s3_env):
    with pytest.raises(GanforgeError, match="bucket 'no-such-bucket' does not exist"):
        ingest("digits", "s3://no-such-bucket/x")


def test_cli_error_line_for_missing_bucket(s3_env):
    proc = subprocess.run(
        [sys.executable, "-m", "ganforge", "ingest", "digits", "--output", "s3://no-such-bucket/x"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: S3 bucket 'no-such-bucket' does not exist")


def test_bad_credentials_are_refused_with_the_fix(monkeypatch):
    """A moto server with authentication on: unknown keys get 403, which ganforge names."""
    from tests.conftest import start_moto

    proc, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        with pytest.raises(GanforgeError, match="refused the credentials.*AWS_ACCESS_KEY_ID") as info:
            ingest("digits", "s3://some-bucket/x")
        assert "wrong-secret" not in str(info.value)
    finally:
        proc.terminate()
        proc.wait(10)


def test_reader_ignores_unpublished_dataset(s3_env, moto_server):
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.put_object(Bucket=s3_env, Key="half/_tmp-abc/part-00000.parquet", Body=b"PAR1")
    with pytest.raises(GanforgeError, match="no dataset at s3://.*/half"):
        load(f"s3://{s3_env}/half")
    res = ingest("digits", f"s3://{s3_env}/half", image_size=8)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_env, Prefix="half/")["Contents"]]
    assert not [k for k in keys if "_tmp-" in k], "a rerun removes what an interrupted ingest left"
    assert json.loads(s3.get_object(Bucket=s3_env, Key="half/manifest.json")["Body"].read())["fingerprint"] == res.fingerprint
