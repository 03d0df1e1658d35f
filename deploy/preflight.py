"""Checks before anything is sent to a cluster; each failure is one line naming the fix (exit code 2).

    python deploy/preflight.py settings RENDERED.yaml      # shell assignments from a rendered overlay
    python deploy/preflight.py check --namespace NS --image IMAGE [--gpus N] [--gpu-type T]
        [--gpu-node-label L] [--s3-secret S] [--mlflow-secret M] [--mlflow-app basic-auth]
        [--model-name NAME] [--ganforge PATH]

``check`` asks kubectl (the current KUBECONFIG/context) whether the cluster answers, the namespace
exists, the Secrets the pipeline reads are there with their keys, and a node carries the GPU node
label the training task selects (with enough allocatable GPUs when the run asks for some). When the
MLflow server has basic-auth on, the MLflow Secret must name a user, and that user must be allowed to
register the model: ``ganforge permissions show`` asks the server through a port-forward to
svc/ganforge-mlflow, with the Secret's credentials passed in the environment only. The pure
``check_*`` functions take kubectl's JSON (or that command's), so tests feed them canned objects.
Standard library only, except ``settings`` (PyYAML, present in the project venv).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request

GPU_RESOURCE = "nvidia.com/gpu"
SECRET_KEYS = {  # required keys; AWS_ENDPOINT_URL is optional (AWS S3 proper needs none)
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    "mlflow": ("MLFLOW_TRACKING_URI",),
    "mlflow-auth": ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),  # basic-auth on
}
SECRET_EXAMPLE = {
    "s3": "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=... "
          "--from-literal=AWS_ENDPOINT_URL=https://s3.example.com",
    "mlflow": "--from-literal=MLFLOW_TRACKING_URI=http://ganforge-mlflow.<namespace>.svc.cluster.local:5000",
    "mlflow-auth": "--from-literal=MLFLOW_TRACKING_URI=http://ganforge-mlflow.<namespace>.svc.cluster.local:5000 "
                   "--from-literal=MLFLOW_TRACKING_USERNAME=... --from-literal=MLFLOW_TRACKING_PASSWORD=...",
}
MLFLOW_SERVICE = "svc/ganforge-mlflow"  # deploy/base/mlflow.yaml
MLFLOW_PORT = 5000
REGISTER_PERMISSION = "EDIT"  # MLflow's permission that lets a user add versions to a registered model
DEFAULT_MODEL = "ganforge-generator"  # PipelineParams.model_name's default (a test holds them equal)


class PreflightError(Exception):
    """A problem the user fixes; the message is one line: what is wrong; how to fix it."""


def check_image(image: str) -> None:
    """The image reference must name a tag or a digest: `latest` by omission hides what runs."""
    name = image.strip()
    last = name.rsplit("/", 1)[-1]
    if not name or not (":" in last or "@sha256:" in name):
        raise PreflightError(f"image {name!r} has no tag; name it as name:tag (make image builds ganforge:latest, "
                             "make push REGISTRY=... pushes it)")


def check_namespace(namespaces: dict, namespace: str) -> None:
    names = {item["metadata"]["name"] for item in namespaces.get("items", [])}
    if namespace not in names:
        raise PreflightError(f"namespace {namespace} does not exist; install Kubeflow Pipelines there (deploy/up.sh "
                             "on minikube) or set the overlay's namespace to the one your KFP runs pipelines in")


def check_secret(secrets: dict, namespace: str, name: str, kind: str) -> None:
    """``secrets`` is ``kubectl get secrets -o json``; ``kind`` is "s3", "mlflow" or "mlflow-auth"."""
    found = {item["metadata"]["name"]: item for item in secrets.get("items", [])}
    if name not in found:
        raise PreflightError(f"namespace {namespace} has no Secret {name}; create it: kubectl -n {namespace} create "
                             f"secret generic {name} {SECRET_EXAMPLE[kind]}")
    data = found[name].get("data") or {}
    missing = [k for k in SECRET_KEYS[kind] if not base64.b64decode(data.get(k, "") or "")]
    if missing:
        raise PreflightError(f"Secret {namespace}/{name} lacks {', '.join(missing)}; recreate it with "
                             f"kubectl -n {namespace} create secret generic {name} {SECRET_EXAMPLE[kind]}")


def check_gpu_nodes(nodes: dict, label: str, gpu_type: str, gpus: int) -> None:
    """Some node must carry ``label=gpu_type`` (the training task's node selector), with ``gpus`` GPUs."""
    items = nodes.get("items", [])
    matching = [n for n in items if n["metadata"].get("labels", {}).get(label) == gpu_type]
    if not matching:
        have = sorted({n["metadata"].get("labels", {}).get(label) for n in items} - {None})
        where = f"the cluster has {label} = {', '.join(have)}" if have else f"no node has a {label} label"
        raise PreflightError(f"no node has the GPU type {label}={gpu_type} ({where}); set GPU_TYPE (and "
                             "GPU_NODE_LABEL) in the overlay's cluster.env to a type the cluster has")
    if gpus > 0:
        best = max(_gpus(n) for n in matching)
        if best < gpus:
            raise PreflightError(f"nodes with {label}={gpu_type} have at most {best} allocatable {GPU_RESOURCE}, the "
                                 f"run asks for {gpus}; lower --gpus or install the NVIDIA device plugin")


def check_mlflow_access(result: dict, secret: str, model: str) -> None:
    """``result`` is ``ganforge permissions show --name MODEL --json`` run as the Secret's user.

    The pipeline registers a version of ``model`` at its end: that needs EDIT on an existing model, or
    the right to create it (its creator then owns it). Fails before the run rather than after hours.
    """
    if not result.get("auth"):
        return  # no basic-auth: anyone may register
    user = result.get("user")
    if not user:
        raise PreflightError(f"the MLflow server has basic-auth on but Secret {secret} names no user; set "
                             "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD there")
    if result.get("may_register"):
        return
    has = result.get("permission") or "no permission"
    grant = f"ganforge permissions grant --user {user} --permission {REGISTER_PERMISSION} --name {model}"
    if result.get("model_exists"):
        raise PreflightError(f"the MLflow user '{user}' in Secret {secret} may not register {model} (has {has}, "
                             f"needs {REGISTER_PERMISSION}); ask the model's owner to grant it: {grant}")
    raise PreflightError(f"the MLflow user '{user}' in Secret {secret} may not create the registered model {model} "
                         f"(has {has}); ask an MLflow admin to create it and grant it: {grant}")


def mlflow_permissions(namespace: str, secret: str, data: dict, model: str, ganforge: str) -> dict:
    """Run ``ganforge permissions show`` as the Secret's user against the in-cluster server.

    ``data`` is the Secret's ``data`` (base64). The credentials go to the command's environment only:
    never on a command line, never printed (an error line is scrubbed of the password all the same).
    """
    user, password = (base64.b64decode(data.get(k, "") or "").decode()
                      for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"))
    with _PortForward(namespace, MLFLOW_SERVICE, MLFLOW_PORT) as url:
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": user,
               "MLFLOW_TRACKING_PASSWORD": password}
        try:
            res = subprocess.run([ganforge, "permissions", "show", "--name", model, "--json"], env=env,
                                 capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise PreflightError(f"{ganforge} is not installed; pip install -e . in the project venv") from None
        except subprocess.TimeoutExpired:
            raise PreflightError(f"the MLflow server behind {MLFLOW_SERVICE} did not answer in 120 s; check its "
                                 f"pods: kubectl -n {namespace} get pods -l app.kubernetes.io/name=ganforge-mlflow") \
                from None
    if res.returncode != 0:
        lines = [line for line in res.stderr.splitlines() if line.strip()] or ["no output"]
        why = lines[-1].strip().removeprefix("error: ")
        if password:
            why = why.replace(password, "***")
        raise PreflightError(f"checking the MLflow user '{user}' of Secret {namespace}/{secret} failed: {why}; fix "
                             "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD there (an MLflow admin creates users)")
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:
        raise PreflightError(f"ganforge permissions show printed no JSON ({res.stdout.strip()[:80]!r}); "
                             "update ganforge (pip install -e .)") from None


class _PortForward:
    """``kubectl port-forward SERVICE`` on a free local port until /health answers; the URL on enter."""

    def __init__(self, namespace: str, service: str, remote: int, wait: float = 30):
        self.namespace, self.service, self.remote, self.wait = namespace, service, remote, wait

    def __enter__(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            self.proc = subprocess.Popen(
                ["kubectl", "-n", self.namespace, "port-forward", self.service, f"{port}:{self.remote}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        except FileNotFoundError:
            raise PreflightError("kubectl is not installed; install it (https://kubernetes.io/docs/tasks/tools/)") \
                from None
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                first = next((line for line in self.proc.stderr.read().splitlines() if line.strip()), "no output")
                raise PreflightError(f"kubectl port-forward {self.service} in namespace {self.namespace} failed: "
                                     f"{first.strip()[:200]}; apply the overlay (kubectl apply -k deploy/overlays/...)")
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                return url
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise PreflightError(f"the MLflow server behind {self.service} in namespace {self.namespace} is not healthy "
                             f"after {self.wait:.0f} s; check its pods: kubectl -n {self.namespace} get pods "
                             "-l app.kubernetes.io/name=ganforge-mlflow")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _gpus(node: dict) -> int:
    value = node.get("status", {}).get("allocatable", {}).get(GPU_RESOURCE, "0")
    return int(re.sub(r"\D", "", str(value)) or 0)


def kubectl_json(*args: str, timeout: float = 20) -> dict:
    """``kubectl ARGS -o json``; an unreachable cluster or a refused call is a PreflightError."""
    cmd = ["kubectl", *args, "-o", "json", f"--request-timeout={int(timeout)}s"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
    except FileNotFoundError:
        raise PreflightError("kubectl is not installed; install it (https://kubernetes.io/docs/tasks/tools/)") from None
    except subprocess.TimeoutExpired:
        raise PreflightError("the cluster did not answer in time; check KUBECONFIG/--context (kubectl cluster-info)") \
            from None
    if res.returncode != 0:
        first = next((line for line in res.stderr.splitlines() if line.strip()), "no output")
        raise PreflightError(f"kubectl {' '.join(args)} failed: {first.strip()[:200]}; start the cluster "
                             "(deploy/up.sh for minikube) or point KUBECONFIG/--context at a reachable one")
    return json.loads(res.stdout)


def check(args: argparse.Namespace) -> None:
    check_image(args.image)
    _reachable()
    check_namespace(kubectl_json("get", "namespaces"), args.namespace)
    secrets = kubectl_json("-n", args.namespace, "get", "secrets")
    auth = args.mlflow_app == "basic-auth"
    check_secret(secrets, args.namespace, args.s3_secret, "s3")
    check_secret(secrets, args.namespace, args.mlflow_secret, "mlflow-auth" if auth else "mlflow")
    check_gpu_nodes(kubectl_json("get", "nodes"), args.gpu_node_label, args.gpu_type, args.gpus)
    if auth:  # last: the slowest, and the only one that needs the MLflow server up
        data = next(s for s in secrets["items"] if s["metadata"]["name"] == args.mlflow_secret).get("data") or {}
        result = mlflow_permissions(args.namespace, args.mlflow_secret, data, args.model_name, args.ganforge)
        check_mlflow_access(result, args.mlflow_secret, args.model_name)


def _reachable() -> None:
    try:
        res = subprocess.run(["kubectl", "get", "--raw", "/readyz", "--request-timeout=10s"], capture_output=True,
                             text=True, timeout=20)
    except FileNotFoundError:
        raise PreflightError("kubectl is not installed; install it (https://kubernetes.io/docs/tasks/tools/)") from None
    except subprocess.TimeoutExpired:
        res = None
    if res is None or res.returncode != 0:
        server = subprocess.run(["kubectl", "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or "no server configured"
        raise PreflightError(f"no Kubernetes cluster answers at {server}; start it (deploy/up.sh for minikube) or "
                             "point KUBECONFIG/--context at a reachable cluster")


def settings(rendered: str) -> str:
    """Shell assignments (namespace, image, MLflow --app-name, ConfigMap ganforge-cluster) from a rendered overlay."""
    import yaml

    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ganforge-cluster")
    mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ganforge-mlflow")
    server = mlflow["spec"]["template"]["spec"]["containers"][0]
    app = next((a.split("=", 1)[1] for a in server.get("args", []) if a.startswith("--app-name=")), "")
    values = {"NAMESPACE": config["metadata"]["namespace"], "IMAGE": server["image"], "MLFLOW_APP": app,
              **config["data"]}
    return "\n".join(f"{k}={shlex.quote(str(v))}" for k, v in values.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("settings")
    s.add_argument("rendered")
    c = sub.add_parser("check")
    c.add_argument("--namespace", required=True)
    c.add_argument("--image", required=True)
    c.add_argument("--gpus", type=int, default=0)
    c.add_argument("--gpu-type", default="nvidia-l4")
    c.add_argument("--gpu-node-label", default="cloud.google.com/gke-accelerator")
    c.add_argument("--s3-secret", default="ganforge-s3")
    c.add_argument("--mlflow-secret", default="ganforge-mlflow")
    c.add_argument("--mlflow-app", default="", help="the MLflow server's --app-name (basic-auth: auth on)")
    c.add_argument("--model-name", default=DEFAULT_MODEL, help="the registered model the run adds to")
    c.add_argument("--ganforge", default="ganforge", help="the ganforge executable")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "settings":
            print(settings(args.rendered))
        else:
            check(args)
    except PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
