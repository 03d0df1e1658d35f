"""Checks before anything is sent to a cluster; each failure is one line naming the fix (exit code 2).

    python deploy/preflight.py settings RENDERED.yaml      # shell assignments from a rendered overlay
    python deploy/preflight.py check --namespace NS --image IMAGE [--gpus N] [--gpu-type T]
        [--gpu-node-label L] [--s3-secret S] [--mlflow-secret M]

``check`` asks kubectl (the current KUBECONFIG/context) whether the cluster answers, the namespace
exists, the Secrets the pipeline reads are there with their keys, and a node carries the GPU node
label the training task selects (with enough allocatable GPUs when the run asks for some). The pure
``check_*`` functions take kubectl's JSON, so tests feed them canned objects. Standard library only,
except ``settings`` (PyYAML, present in the project venv).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shlex
import subprocess
import sys

GPU_RESOURCE = "nvidia.com/gpu"
SECRET_KEYS = {  # required keys; AWS_ENDPOINT_URL is optional (AWS S3 proper needs none)
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    "mlflow": ("MLFLOW_TRACKING_URI",),
}
SECRET_EXAMPLE = {
    "s3": "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=... "
          "--from-literal=AWS_ENDPOINT_URL=https://s3.example.com",
    "mlflow": "--from-literal=MLFLOW_TRACKING_URI=http://ganforge-mlflow.<namespace>.svc.cluster.local:5000",
}


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
    """``secrets`` is ``kubectl get secrets -o json``; ``kind`` is "s3" or "mlflow"."""
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
    check_secret(secrets, args.namespace, args.s3_secret, "s3")
    check_secret(secrets, args.namespace, args.mlflow_secret, "mlflow")
    check_gpu_nodes(kubectl_json("get", "nodes"), args.gpu_node_label, args.gpu_type, args.gpus)


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
    """Shell assignments (namespace, image, ConfigMap ganforge-cluster) from a rendered overlay."""
    import yaml

    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ganforge-cluster")
    mlflow = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ganforge-mlflow")
    values = {"NAMESPACE": config["metadata"]["namespace"],
              "IMAGE": mlflow["spec"]["template"]["spec"]["containers"][0]["image"], **config["data"]}
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
