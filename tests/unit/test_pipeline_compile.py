"""The compiled pipeline: golden file, cluster wiring (GPU pool, /dev/shm, Secrets), caching and retries,
no credentials or local paths, and bad parameters/options refused at compile or submit time."""

from __future__ import annotations

import re

import pytest
import yaml
from typer.testing import CliRunner

from ganforge.errors import GanforgeError
from ganforge.pipeline.params import ClusterConfig, PipelineParams, check_cluster, check_params
from ganforge.pipeline.runner import compile_pipeline
from pipelines.gan_pipeline import build
from tests import golden


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "gan_pipeline.yaml"
    golden.write(path)
    text = path.read_text()
    return text, yaml.safe_load_all(text)


@pytest.fixture(scope="module")
def spec(compiled):
    docs = list(yaml.safe_load_all(compiled[0]))
    return docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_matches_golden_file(compiled):
    assert compiled[0] == golden.GOLDEN.read_text(), (
        "compiled pipeline differs from tests/golden/gan_pipeline.yaml; if the change is deliberate, run `make golden`"
    )


def test_parameters_are_pipeline_params(spec):
    params = spec[0]["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(PipelineParams.model_fields)
    for name, value in PipelineParams().arguments().items():
        assert params[name]["defaultValue"] == value, name


def test_dag_order_and_gate(spec):
    dag = spec[0]["root"]["dag"]["tasks"]
    assert set(dag) == {"exit-handler-1", "finish-run"}
    assert dag["finish-run"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    body = spec[0]["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert set(body) == {"start-run", "ingest", "train", "evaluate", "audit", "gate", "condition-2"}
    assert set(body["evaluate"]["dependentTasks"]) == set(body["audit"]["dependentTasks"]) == {"ingest", "train",
                                                                                               "start-run"}
    assert set(body["gate"]["dependentTasks"]) == {"evaluate", "audit", "start-run"}
    assert body["condition-2"]["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-Output'] == true"
    cond = spec[0]["components"]["comp-condition-2"]["dag"]["tasks"]
    assert set(cond) == {"register"}


def test_training_on_gpu_pool(spec):
    pipeline, k8s = spec
    resources = pipeline["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    # KFP's driver makes the accelerator type the limit's resource name: it must be a Kubernetes resource
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus']}}"
    assert resources["resourceCpuRequest"] == "4" and resources["resourceMemoryRequest"] == "16Gi"
    train = k8s["exec-train"]
    assert train["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert train["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    shm = train["emptyDirMounts"][0]
    assert shm["mountPath"] == "/dev/shm" and shm["medium"] == "Memory" and shm["sizeLimit"] == "8Gi"
    for other in ("exec-ingest", "exec-evaluate", "exec-audit", "exec-gate", "exec-register"):
        assert "accelerator" not in pipeline["deploymentSpec"]["executors"][other]["container"].get("resources", {})
        assert "nodeSelector" not in k8s[other]


def test_gpu_options_reach_the_spec(tmp_path):
    path = tmp_path / "p.yaml"
    compile_pipeline(path, ClusterConfig(image="reg.example/ganforge:1.2", gpu_type="nvidia-tesla-a100",
                                         gpu_node_label="nvidia.com/gpu.product", shm_size="32Gi"), build=build)
    text = path.read_text()
    assert "resourceType: nvidia.com/gpu" in text and "nvidia.com/gpu.product: nvidia-tesla-a100" in text
    assert "resourceType: nvidia-tesla-a100" not in text
    assert "sizeLimit: 32Gi" in text
    assert set(re.findall(r"image: (\S+)", text)) == {"reg.example/ganforge:1.2"}


def test_secrets_as_env_only(spec):
    _, k8s = spec
    for name, ex in k8s.items():
        secrets = {s["secretName"]: {e["envVar"] for e in s["keyToEnv"]} for s in ex["secretAsEnv"]}
        assert secrets["ganforge-mlflow"] == {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
                                              "MLFLOW_TRACKING_PASSWORD"}, name
        if name in ("exec-ingest", "exec-train", "exec-evaluate", "exec-audit", "exec-register"):
            assert secrets["ganforge-s3"] == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}


def test_caching_retries_and_workspace(spec):
    pipeline, k8s = spec
    body = pipeline["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert body["ingest"]["cachingOptions"] == {"enableCache": True}
    for name in ("start-run", "train", "evaluate", "audit", "gate"):
        assert body[name]["cachingOptions"].get("enableCache", False) is False, name
    retry = body["train"]["retryPolicy"]
    assert retry["maxRetryCount"] == 3 and retry["backoffDuration"] == "60s"
    assert k8s["exec-train"]["pvcMount"][0]["mountPath"] == "/workspace"


def test_one_image_no_installs(spec, compiled):
    pipeline, k8s = spec
    images = {ex["container"]["image"] for ex in pipeline["deploymentSpec"]["executors"].values()}
    assert images == {"ganforge:latest"}
    assert "pip install" not in compiled[0] and "packages_to_install" not in compiled[0]
    assert {ex["imagePullPolicy"] for ex in k8s.values()} == {"IfNotPresent"}


def test_no_credentials_or_local_paths(compiled):
    text = compiled[0]
    for needle in ("/work/", "/tmp/", "/home/", "sqlite:", "127.0.0.1", "localhost", "testing-secret",
                   "AKIA", "password:", "token:"):
        assert needle not in text, needle
    assert not re.search(r"(?i)(secret_access_key|tracking_password)\s*[:=]\s*\S+['\"]", text)


def test_image_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_IMAGE", "registry.local/ganforge:abc")
    assert ClusterConfig().image == "registry.local/ganforge:abc"


@pytest.mark.parametrize("values, fragment", [
    ({"steps": "300"}, "steps: Input should be a valid integer"),
    ({"max_fid": -1.0}, "max_fid: Input should be greater than 0"),
    ({"gpus": 64}, "gpus: Input should be less than or equal to 16"),
    ({"audit_n": 5}, "audit_n: Input should be greater than or equal to 20"),
    ({"preset": "nope"}, "unknown preset 'nope'"),
    ({"source": "imagenet"}, "unknown source 'imagenet'"),
    ({"epochs": 2, "steps": 10}, "at most one of epochs or steps"),
    ({"learning_rate": 0.1}, "learning_rate: Extra inputs are not permitted"),
])  # fmt: skip
def test_bad_parameters_fail_early(values, fragment):
    with pytest.raises(GanforgeError, match=re.escape(fragment)) as err:
        check_params(values)
    assert "\n" not in str(err.value)


def test_bad_cluster_option():
    with pytest.raises(GanforgeError, match="train_retries"):
        check_cluster({"train_retries": 50})


def test_unset_optionals_travel_as_empty():
    params = PipelineParams(model="dcgan", preset=None, epochs=5)
    args = params.arguments()
    assert args["preset"] == "" and args["model"] == "dcgan" and args["limit"] == 0 and args["input"] == ""
    assert check_params(args) == params  # and read back as None


def test_cli_compile_and_bad_input(tmp_path):
    from ganforge.cli import app

    runner = CliRunner()
    out = tmp_path / "gp.yaml"
    res = runner.invoke(app, ["pipeline", "compile", "-o", str(out), "--gpu-type", "nvidia-h100-80gb"])
    assert res.exit_code == 0, res.output
    assert "nvidia-h100-80gb" in out.read_text()
    res = runner.invoke(app, ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--max-fid", "-5"])
    assert res.exit_code == 2 and "max_fid: Input should be greater than 0" in res.output
    res = runner.invoke(app, ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--steps", "ten"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["pipeline", "run"])
    assert res.exit_code == 2 and "--local" in res.output
