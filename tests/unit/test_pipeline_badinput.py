"""``ganforge pipeline compile | run | submit`` bad input (issue 13): refused at parse time, one line, exit 2,
nothing written; and hypothesis over the cluster options and pipeline parameters."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import ganforge.pipeline.runner as runner_mod
from ganforge.cli import app
from ganforge.pipeline.params import PIPELINE_BACKBONES, ClusterConfig, PipelineParams
from ganforge.pipeline.runner import local_dataset_name, local_params

runner = CliRunner()
EXAMPLES = int(os.environ.get("GANFORGE_HYPOTHESIS_EXAMPLES", "40"))
PROPS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(res, match: str = "") -> None:
    assert res.exit_code == 2, (res.output, res.exception)
    assert isinstance(res.exception, SystemExit), res.exception  # never a traceback
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert match in lines[0], lines[0]


def no_work(*a, **k):
    raise AssertionError("started work before refusing")


@pytest.mark.parametrize("flag, value, match", [
    ("--cpu-request", "abc", "is not a positive"),
    ("--cpu-request", "0", "is not a positive"),
    ("--memory-request", "16 GB", "is not a positive"),
    ("--shm-size", "-1Gi", "is not a positive"),
    ("--s3-secret", "Bad_Name", "not a Kubernetes object name"),
    ("--mlflow-secret", "-x", "not a Kubernetes object name"),
    ("--workspace-pvc", "a" * 254, "not a Kubernetes object name"),
    ("--image", "UPPER/Case:x", "not an image reference"),
    ("--image", "ganforge:bad tag", "not an image reference"),
    ("--gpu-type", "", "not a node label value"),
    ("--gpu-type", "a" * 64, "not a node label value"),
    ("--gpu-node-label", "bad key/", "not a Kubernetes key"),
    ("--gpu-resource", "/gpu", "not a Kubernetes key"),
])  # fmt: skip
def test_compile_refuses_bad_cluster_wiring_before_writing(flag, value, match, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_mod, "load_pipeline", no_work)
    res = run("pipeline", "compile", "-o", tmp_path / "p.yaml", f"{flag}={value}")
    assert_one_line_error(res, match)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("values", [
    {"cpu_request": "500m", "memory_request": "1536Mi", "shm_size": "1G"},
    {"image": "localhost:5000/ml/ganforge:1.0-rc_1"},
    {"image": "ghcr.io/org/ganforge@sha256:" + "a" * 64},
    {"gpu_type": "NVIDIA-A100-SXM4-80GB", "gpu_node_label": "nvidia.com/gpu.product"},
    {"s3_secret": "team.s3-creds", "workspace_pvc": "ws-1"},
])  # fmt: skip
def test_real_world_cluster_wiring_is_accepted(values):
    assert ClusterConfig(**values).model_dump().items() >= values.items()


@pytest.mark.parametrize("missing", ["pipelines.gan_pipeline", "components"])
def test_a_missing_pipeline_package_is_one_line(missing, tmp_path, monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "pipelines.gan_pipeline", raising=False)
    monkeypatch.setitem(sys.modules, missing, None)  # importing it raises ModuleNotFoundError
    res = run("pipeline", "compile", "-o", tmp_path / "p.yaml")
    assert_one_line_error(res, f"the {missing} package is not installed beside ganforge")
    assert list(tmp_path.iterdir()) == []


def test_compile_output_that_cannot_be_written(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(run("pipeline", "compile", "-o", tmp_path), "is a directory")
    assert_one_line_error(run("pipeline", "compile", "-o", tmp_path / "afile" / "p.yaml"), "is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("flags, match", [
    (["--backbone", "bogus"], "unknown backbone 'bogus'"),
    (["--backbone", "custom"], "unknown backbone 'custom'"),
    (["--steps", "0"], "--steps 0 is not a positive count"),
    (["--limit", "0"], "--limit 0 is not a positive count"),
    (["--epochs", "-2"], "--epochs -2 is not a positive count"),
    (["--preset", ""], "--preset is empty"),
    (["--max-fid", "nan"], "--max-fid must be a finite number > 0, got nan"),  # refused as the flag is read
    (["--max-fid", "inf"], "--max-fid must be a finite number > 0, got inf"),
    (["--max-fid", "0"], "max_fid"),
])  # fmt: skip
def test_local_run_refuses_bad_parameters_before_ingest(flags, match, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_mod, "load_pipeline", no_work)
    res = run("pipeline", "run", "--local", "--dir", tmp_path / "demo", *flags)
    assert_one_line_error(res, match)
    assert not (tmp_path / "demo").exists()
    res = run("pipeline", "submit", "--host", "http://127.0.0.1:9", "--gpus", "1", *flags)
    assert_one_line_error(res, match.split()[0] if "--" not in match else match)


def test_local_run_refuses_unreachable_mlflow_before_ingest(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(runner_mod, "load_pipeline", no_work)
    assert_one_line_error(run("pipeline", "run", "--local", "--dir", tmp_path / "demo"), "cannot reach the MLflow")
    assert not (tmp_path / "demo").exists()


def test_pipeline_backbones_are_the_feature_registry_less_custom():
    from ganforge.metrics.features import EXTRACTORS

    assert set(PIPELINE_BACKBONES) == set(EXTRACTORS) - {"custom"}


def test_local_datasets_are_per_ingest_recipe(tmp_path):
    """A second --source (or size, limit, input) in one --dir gets its own dataset folder."""
    names = {local_dataset_name(v) for v in (
        {}, {"source": "mnist"}, {"image_size": 28}, {"limit": 100}, {"source": "folder", "input": "/a"},
        {"source": "folder", "input": "/b"},
    )}  # fmt: skip
    assert len(names) == 6 and local_dataset_name({}) == "digits-32px"
    assert local_params(tmp_path).dataset == str(tmp_path / "datasets" / "digits-32px")
    assert local_params(tmp_path, dataset="s3://b/d").dataset == "s3://b/d"


# --- property-based: any value of any cluster option compiles or is refused in one line ---------------

_CLUSTER_TEXT = [n for n, f in ClusterConfig.model_fields.items() if f.annotation is str]
_text = st.one_of(st.text(max_size=40), st.sampled_from(["4", "500m", "-1", "0", "1e3", "16Gi", "nan", "inf", "a/b",
                                                          "nvidia.com/gpu", "ganforge:latest", "", " ", "x" * 300]))


@PROPS
@given(field=st.sampled_from(_CLUSTER_TEXT + ["train_retries", "pull_policy"]), value=_text)
def test_property_any_cluster_option_compiles_or_fails_in_one_line(tmp_path_factory, field, value):
    if "\x00" in value:
        return  # a NUL cannot be passed on a command line
    out = tmp_path_factory.mktemp("c") / "p.yaml"
    res = run("pipeline", "compile", "-o", out, f"--{field.replace('_', '-')}={value}")
    if res.exit_code == 0:
        assert out.is_file() and value.strip() in out.read_text() or field in ("train_retries", "pull_policy")
    else:
        assert_one_line_error(res)
        assert not out.exists()


_params = st.fixed_dictionaries({}, optional={
    "steps": st.integers(-3, 5), "epochs": st.integers(-3, 5), "limit": st.integers(-3, 5),
    "max_fid": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
    "backbone": st.sampled_from([*PIPELINE_BACKBONES, "custom", "bogus", ""]),
    "source": st.sampled_from(["digits", "mnist", "imagenet", ""]),
    "n": st.integers(-2, 5), "audit_n": st.integers(0, 30), "gpus": st.integers(-1, 20),
    "image_size": st.integers(0, 2000), "preset": st.sampled_from(["digits-tiny", "nope", ""]),
    "seed": st.integers(-5, 5),
})


@PROPS
@given(values=_params)
def test_property_submit_parameters_are_checked_before_anything_is_sent(values, monkeypatch):
    """``submit`` validates every parameter before it compiles or contacts the endpoint."""
    from ganforge.errors import GanforgeError

    def reached(host, params, *a, **k):
        assert isinstance(params, PipelineParams)
        raise GanforgeError("reached submit")

    monkeypatch.setattr(runner_mod, "submit", reached)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in values.items()]
    res = run("pipeline", "submit", "--host", "http://127.0.0.1:9", "--gpus=1", *flags)
    assert_one_line_error(res)
    if "reached submit" in res.stderr:  # accepted: then every value was in range
        ok = PipelineParams.model_validate({k: v for k, v in values.items()}, strict=False)
        assert all(getattr(ok, k) is not None for k in values if k in ("steps", "epochs", "limit"))
