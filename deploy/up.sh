#!/usr/bin/env bash
# The whole path on a local minikube: cluster, Kubeflow Pipelines, MLflow + MinIO, Secrets, one run.
#
#   make image && deploy/up.sh                      # CPU; then open the two addresses it prints
#   deploy/up.sh --steps 2000 --n 1000              # options after the flags go to the pipeline run
#
# Steps: minikube start (profile ganforge; --gpus all when nvidia-smi sees GPUs), load the project image,
# Kubeflow Pipelines standalone (deploy/kfp, pinned release), deploy/overlays/minikube (MLflow server with
# basic-auth on PostgreSQL, its pipeline user, MinIO, buckets, development Secrets, workspace volume), label
# the node with its GPU type, port-forward the KFP UI and the MLflow UI, and submit the pipeline
# (deploy/submit.sh minikube --gpus 1) when the host has an NVIDIA GPU: on a cluster the training task runs
# on a GPU node.
# Settings (environment): IMAGE (ganforge:latest, or ganforge:latest-cuda with GPUs), PROFILE (ganforge),
# CPUS (4), MEMORY (12g), DISK (40g), K8S_VERSION (v1.32.0), KFP_UI_PORT (8080), MLFLOW_UI_PORT (5000),
# GPUS (auto: all when nvidia-smi lists GPUs; 0: never). Stop everything: deploy/down.sh.
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }
log() { echo "==> $*" >&2; }
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PROFILE="${PROFILE:-ganforge}"
NS=kubeflow

for tool in minikube kubectl docker; do
  command -v "$tool" >/dev/null || die "$tool is not installed; install it (minikube: https://minikube.sigs.k8s.io/docs/start/)"
done

gpu_args=(); gpu_type=none
if [[ ${GPUS:-auto} != 0 ]] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  gpu_args=(--gpus all)
  # "NVIDIA H100 80GB HBM3" -> nvidia-h100-80gb-hbm3: the node label value the training task selects
  gpu_type="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')"
elif [[ ${GPUS:-auto} == all ]]; then
  die "GPUS=all but nvidia-smi sees no GPU on this host; install the NVIDIA driver or unset GPUS"
fi
IMAGE="${IMAGE:-$([[ ${#gpu_args[@]} -gt 0 ]] && echo ganforge:latest-cuda || echo ganforge:latest)}"
[[ ${IMAGE##*/} == *:* ]] || die "IMAGE=$IMAGE has no tag; set IMAGE=name:tag (make image builds ganforge:latest)"
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE is not in the local Docker engine; build it: make image (make image-cuda for GPUs)"

log "minikube start -p $PROFILE ${gpu_args[*]}"
minikube start -p "$PROFILE" --driver docker --cpus "${CPUS:-4}" --memory "${MEMORY:-12g}" --disk-size "${DISK:-40g}" \
  --kubernetes-version "${K8S_VERSION:-v1.32.0}" "${gpu_args[@]}"
kubectl config use-context "$PROFILE" >/dev/null
log "minikube image load $IMAGE (a few minutes for a multi-GB image)"
minikube -p "$PROFILE" image load "$IMAGE"

log "Kubeflow Pipelines (deploy/kfp, $(sed -n 's/.*?ref=//p' "$ROOT/deploy/kfp/env/kustomization.yaml"))"
kubectl apply -k "$ROOT/deploy/kfp/cluster-scoped"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "$ROOT/deploy/kfp/env"
kubectl -n "$NS" wait --for=condition=Available --timeout=900s deployment/ml-pipeline deployment/ml-pipeline-ui \
  deployment/workflow-controller

log "MLflow, PostgreSQL, MinIO, buckets, Secrets (deploy/overlays/minikube)"
if [[ $IMAGE != ganforge:latest ]]; then  # the overlay names ganforge:latest; point it at the image loaded
  minikube -p "$PROFILE" image tag "$IMAGE" ganforge:latest 2>/dev/null || true
fi
kubectl apply -k "$ROOT/deploy/overlays/minikube"
kubectl -n "$NS" rollout status deployment/ganforge-minio --timeout=300s
kubectl -n "$NS" rollout status statefulset/ganforge-postgres --timeout=300s
kubectl -n "$NS" rollout status deployment/ganforge-mlflow --timeout=300s
kubectl -n "$NS" wait --for=condition=complete --timeout=300s job/ganforge-buckets job/ganforge-mlflow-users

label="$(kubectl -n "$NS" get configmap ganforge-cluster -o jsonpath='{.data.GPU_NODE_LABEL}')"
kubectl label nodes --all --overwrite "$label=$gpu_type" >/dev/null
if [[ $gpu_type != none ]]; then
  kubectl -n "$NS" patch configmap ganforge-cluster --type merge -p "{\"data\":{\"GPU_TYPE\":\"$gpu_type\"}}" >/dev/null
fi

kfp_port="${KFP_UI_PORT:-8080}"; mlflow_port="${MLFLOW_UI_PORT:-5000}"
nohup kubectl -n "$NS" port-forward svc/ml-pipeline-ui "$kfp_port:80" >/tmp/ganforge-kfp-ui.log 2>&1 &
echo $! >/tmp/ganforge-port-forward.pids
nohup kubectl -n "$NS" port-forward svc/ganforge-mlflow "$mlflow_port:5000" >/tmp/ganforge-mlflow-ui.log 2>&1 &
echo $! >>/tmp/ganforge-port-forward.pids

if [[ $gpu_type != none ]]; then
  log "submitting the pipeline"
  # --gpus 1 first: the training task runs on the GPU pool; the caller's options come after and win
  GANFORGE_IMAGE="$IMAGE" GANFORGE_GPU_TYPE="$gpu_type" "$ROOT/deploy/submit.sh" minikube --gpus 1 "$@"
else
  # On a cluster the training task needs a GPU (ganforge pipeline submit refuses --gpus 0). The cluster,
  # MLflow and MinIO are up all the same; the same DAG runs here and logs to the cluster's MLflow:
  # (the credentials stay in the Secret: the command reads them when it runs, the terminal never shows them)
  secret="kubectl -n $NS get secret ganforge-mlflow -o jsonpath"
  echo "no NVIDIA GPU on this host, so no cluster run was submitted; run the pipeline locally against this" \
       "MLflow, as its pipeline user: MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port" \
       "MLFLOW_TRACKING_USERNAME=\"\$($secret='{.data.MLFLOW_TRACKING_USERNAME}' | base64 -d)\"" \
       "MLFLOW_TRACKING_PASSWORD=\"\$($secret='{.data.MLFLOW_TRACKING_PASSWORD}' | base64 -d)\"" \
       "ganforge pipeline run --local" >&2
fi
echo "Kubeflow Pipelines UI: http://127.0.0.1:$kfp_port"
echo "MLflow UI:             http://127.0.0.1:$mlflow_port (user admin; password:" \
     "kubectl -n $NS get secret ganforge-mlflow-admin -o jsonpath='{.data.MLFLOW_AUTH_ADMIN_PASSWORD}' | base64 -d)"
echo "(port-forwards: kill \$(cat /tmp/ganforge-port-forward.pids); everything: deploy/down.sh)"
