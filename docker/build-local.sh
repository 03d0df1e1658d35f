#!/usr/bin/env bash
# Build and smoke-test the ganforge image on a machine with no container registry.
#
#   sudo docker/build-local.sh                 # CPU image ganforge:latest (make image)
#   sudo docker/build-local.sh --cuda          # CUDA image ganforge:latest-cuda (make image-cuda)
#   sudo docker/build-local.sh --no-smoke      # build only
#
# Steps (each reused when already done):
#   1. a Docker engine: uses the running one; as root, starts Debian's dockerd (package docker.io) if none
#   2. a Debian 12 base image without Docker Hub: debootstrap --variant=minbase bookworm, docker import
#      as ganforge-base:bookworm (rootfs cached under $GANFORGE_BUILD_CACHE, default /var/lib/ganforge-build)
#   3. pip indexes: when pip on this machine reads local file:// indexes (pip config list), the host's pip
#      downloads the pinned wheels (docker/requirements.lock) into a wheelhouse served on 127.0.0.1, and
#      the build runs with --network host and an offline pip; elsewhere the Dockerfile's public defaults
#      (pypi.org, download.pytorch.org/whl/cpu) apply
#   4. docker build, then a smoke test: `ganforge ingest digits` + 5 training steps (--no-track) + FID of 16
#      samples with the default backbone (inception-tf, weights in the image) inside the container, with no
#      network, as the image's non-root user
#
# Environment: IMAGE (default ganforge:latest, or ganforge:latest-cuda with --cuda), BASE (skip step 2 and
# build FROM this image, e.g. debian:bookworm-slim or nvidia/cuda:...), GANFORGE_BUILD_CACHE,
# DOCKERD_FLAGS (extra dockerd flags, e.g. "--storage-driver vfs --iptables=false --bridge=none"),
# WHEELHOUSE (auto: 1 when pip here reads file:// indexes; 1: always; 0: never), INDEX_PORT (a free one),
# DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }
log() { echo "==> $*" >&2; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${GANFORGE_BUILD_CACHE:-/var/lib/ganforge-build}"
FLAVOUR=cpu
SMOKE=1
for arg in "$@"; do
  case "$arg" in
    --cuda) FLAVOUR=cuda ;;
    --no-smoke) SMOKE=0 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) die "unknown option $arg; use --cuda, --no-smoke or --help" ;;
  esac
done
if [[ $FLAVOUR == cuda ]]; then
  DOCKERFILE="$ROOT/docker/Dockerfile.cuda"; IMAGE="${IMAGE:-ganforge:latest-cuda}"
else
  DOCKERFILE="$ROOT/docker/Dockerfile"; IMAGE="${IMAGE:-ganforge:latest}"
fi
[[ $IMAGE == *:* ]] || die "IMAGE=$IMAGE has no tag; set IMAGE=name:tag (e.g. ganforge:0.1.0)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)"
REVISION="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"

# --- 1. engine -------------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || die "no Docker engine; install one (Debian: apt-get install docker.io) or start it"
  [[ $EUID -eq 0 ]] || die "no Docker engine reachable; start it (sudo dockerd &) or rerun this script as root"
  log "starting dockerd ${DOCKERD_FLAGS:-} (log /var/log/ganforge-dockerd.log)"
  # shellcheck disable=SC2086  # DOCKERD_FLAGS is a list of flags
  setsid dockerd ${DOCKERD_FLAGS:-} >/var/log/ganforge-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "dockerd did not start: $(tail -n1 /var/log/ganforge-dockerd.log); try DOCKERD_FLAGS='--storage-driver vfs --iptables=false --bridge=none'"
fi

# --- 2. base image ---------------------------------------------------------------------------------
if [[ -z ${BASE:-} ]]; then
  BASE=ganforge-base:bookworm
  if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || die "debootstrap is missing; apt-get install debootstrap (or set BASE=debian:bookworm-slim)"
    [[ $EUID -eq 0 ]] || die "debootstrap needs root; rerun as root (or set BASE=debian:bookworm-slim)"
    rootfs="$CACHE/rootfs-bookworm"
    if [[ ! -x $rootfs/usr/bin/apt-get ]]; then
      log "debootstrap bookworm into $rootfs"
      rm -rf "$rootfs"; mkdir -p "$CACHE"
      debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    log "docker import $BASE"
    tar --numeric-owner -C "$rootfs" -c . | docker import \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["/bin/bash"]' \
      -m "debootstrap --variant=minbase bookworm" - "$BASE" >/dev/null
  fi
fi

# --- 3. package indexes ----------------------------------------------------------------------------
build_args=(--build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION")
network=()
pip_host=("$ROOT/.venv/bin/python" -m pip)
[[ -x ${pip_host[0]} ]] || pip_host=(python3 -m pip)
pip_config="$("${pip_host[@]}" config list 2>/dev/null || true)"
if [[ ${WHEELHOUSE:-auto} == 1 ]] || [[ ${WHEELHOUSE:-auto} == auto && $pip_config == *file://* ]]; then
  # This machine's pip reads local indexes (file:///opt/pypi/simple, find-links /opt/wheels) and reaches
  # pypi.org only through a TLS proxy whose CA the image does not trust. So the host's pip downloads every
  # pinned wheel into a wheelhouse, which is served on 127.0.0.1 to an offline (--no-index) pip inside
  # the build (--network host). torch is then the build these indexes hold: the PyPI default 2.14.1,
  # CUDA runtime bundled as nvidia-* wheels (runs on CPU; 2.14.1+cpu from download.pytorch.org is not
  # reachable here). Elsewhere the Dockerfile's defaults apply: pypi.org and the PyTorch CPU index.
  wheelhouse="$CACHE/wheelhouse"; mkdir -p "$wheelhouse"
  log "downloading pinned wheels into $wheelhouse (host pip; reused)"
  # pip wheel: sdist-only pins (kfp, kfp-server-api) become wheels here, so the image needs no build step.
  "${pip_host[@]}" wheel --quiet --no-deps --wheel-dir "$wheelhouse" \
    -r "$ROOT/docker/requirements.lock" "wheel" "pip" 2> >(grep -v "is ignored: it is neither" >&2)
  # a free port unless INDEX_PORT says otherwise, so two builds (CPU and CUDA) can run side by side
  port="${INDEX_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
  python3 -m http.server --bind 127.0.0.1 --directory "$wheelhouse" "$port" >"$CACHE/wheelhouse-server.log" 2>&1 &
  server_pid=$!
  trap 'kill "$server_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 20); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break; sleep 0.5; done
  build_args+=(--build-arg PIP_NO_INDEX=1 --build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/")
  network=(--network host)
fi

# --- 4. build and smoke test -----------------------------------------------------------------------
log "docker build -f ${DOCKERFILE#"$ROOT"/} -t $IMAGE (base $BASE)"
start=$SECONDS
DOCKER_BUILDKIT=0 docker build "${network[@]}" "${build_args[@]}" -f "$DOCKERFILE" -t "$IMAGE" "$ROOT"
log "built $IMAGE in $((SECONDS - start))s: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"

if [[ $SMOKE == 1 ]]; then
  log "smoke test: ingest digits + 5 training steps + FID (inception-tf) inside $IMAGE (no network)"
  docker run --rm --network none "$IMAGE" bash -c '
    set -euo pipefail
    test "$(id -u)" = 10001
    ganforge ingest digits --output /tmp/smoke/datasets/digits --image-size 32
    ganforge train --dataset /tmp/smoke/datasets/digits --preset digits-tiny --steps 5 \
      --checkpoint-every 5 --sample-every 5 --no-track --device cpu --output /tmp/smoke/runs/tiny
    test -f /tmp/smoke/runs/tiny/ckpt-000005/generator.safetensors
    ganforge evaluate --model /tmp/smoke/runs/tiny --dataset /tmp/smoke/datasets/digits --n 16 --n-real 16 \
      --metrics fid --no-track --device cpu --output /tmp/smoke/eval
    python -c "import torch, ganforge; print(\"torch\", torch.__version__, \"cuda build\", torch.version.cuda)"'
  log "smoke test passed"
fi
