#!/usr/bin/env bash
# Stop the port-forwards deploy/up.sh started and delete its minikube profile (all data in it goes).
set -euo pipefail
if [[ -f /tmp/ganforge-port-forward.pids ]]; then
  while read -r pid; do kill "$pid" 2>/dev/null || true; done </tmp/ganforge-port-forward.pids
  rm -f /tmp/ganforge-port-forward.pids
fi
minikube delete -p "${PROFILE:-ganforge}"
