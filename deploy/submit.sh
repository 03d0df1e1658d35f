#!/usr/bin/env bash
# Compile and submit the ganforge pipeline to the Kubeflow Pipelines of the current kubectl context,
# with the settings of one overlay (image, GPU node pool, Secrets, namespace):
#
#   deploy/submit.sh minikube --steps 300 --n 500            # extra options go to `ganforge pipeline submit`
#   deploy/submit.sh cluster --gpus 1 --steps 20000
#
# Preflight first (deploy/preflight.py): cluster reachable, namespace and Secrets present, image tagged,
# a node with the GPU type, and (MLflow with basic-auth) the Secret's MLflow user may register the model
# (--model-name, else the pipeline's default), asked through a port-forward to svc/ganforge-mlflow.
# GANFORGE_IMAGE and GANFORGE_GPU_TYPE override the overlay's values. Each failure is one line `error: ...; fix` and exit code 2. The KFP API is
# reached through a port-forward to svc/ml-pipeline unless KFP_HOST is set (e.g. https://kfp.example.com).
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"; [[ -x $PY ]] || PY=python3
GANFORGE="$ROOT/.venv/bin/ganforge"; [[ -x $GANFORGE ]] || GANFORGE=ganforge

overlay="${1:-}"; [[ -n $overlay ]] || die "no overlay given; run deploy/submit.sh minikube|cluster [pipeline options]"
shift
[[ -f $ROOT/deploy/overlays/$overlay/kustomization.yaml ]] || die "no overlay deploy/overlays/$overlay; use minikube or cluster"
command -v kubectl >/dev/null || die "kubectl is not installed; install it (https://kubernetes.io/docs/tasks/tools/)"

rendered="$(mktemp)"; pf_pid=""
trap 'rm -f "$rendered"; [[ -n $pf_pid ]] && kill "$pf_pid" 2>/dev/null || true' EXIT
kubectl kustomize "$ROOT/deploy/overlays/$overlay" >"$rendered" || die "kustomize could not render deploy/overlays/$overlay; fix the overlay"
eval "$("$PY" "$ROOT/deploy/preflight.py" settings "$rendered")"
IMAGE="${GANFORGE_IMAGE:-$IMAGE}"            # overrides for one run, without editing the overlay
GPU_TYPE="${GANFORGE_GPU_TYPE:-$GPU_TYPE}"

gpus=0; model=(); args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --gpus) gpus="${args[i+1]:-0}" ;; --gpus=*) gpus="${args[i]#--gpus=}" ;;
    --model-name) model=(--model-name "${args[i+1]:-}") ;; --model-name=*) model=(--model-name "${args[i]#--model-name=}") ;;
  esac
done
"$PY" "$ROOT/deploy/preflight.py" check --namespace "$NAMESPACE" --image "$IMAGE" --gpus "$gpus" \
  --gpu-type "$GPU_TYPE" --gpu-node-label "$GPU_NODE_LABEL" --s3-secret "$S3_SECRET" --mlflow-secret "$MLFLOW_SECRET" \
  --mlflow-app "$MLFLOW_APP" --ganforge "$GANFORGE" "${model[@]}"

host="${KFP_HOST:-}"
if [[ -z $host ]]; then
  port="${KFP_PORT:-8888}"
  kubectl -n "$NAMESPACE" get svc ml-pipeline >/dev/null 2>&1 \
    || die "no Kubeflow Pipelines API (svc/ml-pipeline) in namespace $NAMESPACE; install KFP (deploy/up.sh) or set KFP_HOST"
  kubectl -n "$NAMESPACE" port-forward svc/ml-pipeline "$port:8888" >/dev/null 2>&1 &
  pf_pid=$!
  host="http://127.0.0.1:$port"
  for _ in $(seq 30); do "$PY" -c "import urllib.request; urllib.request.urlopen('$host/apis/v2beta1/healthz', timeout=2)" 2>/dev/null && break; sleep 1; done
fi

"$GANFORGE" pipeline submit --host "$host" --image "$IMAGE" --gpu-type "$GPU_TYPE" --gpu-node-label "$GPU_NODE_LABEL" \
  --gpu-taint "$GPU_TAINT" --cpu-request "$CPU_REQUEST" --memory-request "$MEMORY_REQUEST" --shm-size "$SHM_SIZE" \
  --s3-secret "$S3_SECRET" --mlflow-secret "$MLFLOW_SECRET" --workspace-pvc "$WORKSPACE_PVC" \
  --pull-policy "$PULL_POLICY" "$@"
