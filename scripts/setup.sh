#!/usr/bin/env bash
# Prepares this machine to build and test Citadel: Debian packages, a running dockerd, and
# node_modules. Idempotent, and quick when everything is already in place.
# Env: CITADEL_REQUIRE_DOCKER=1 makes a Docker engine that cannot start an error, not a warning.
#      CI=true also removes from Docker what earlier Citadel runs left and rebuilds the task
#      image (see "CI meets Docker as a fresh machine would" below); a developer's machine,
#      without CI, keeps both.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(etcd-server docker.io busybox-static iproute2 protobuf-compiler libprotobuf-dev protobuf-compiler-grpc python3-grpcio grpc-proto)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$package")
done

if ((${#missing[@]} > 0)); then
  if ((EUID != 0)); then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: as root, run: apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

docker_problem() {
  if [[ ${CITADEL_REQUIRE_DOCKER:-} == 1 ]]; then
    echo "setup: error: $1" >&2
    exit 1
  fi
  echo "setup: warning: $1 (continuing: set CITADEL_REQUIRE_DOCKER=1 to make this an error)" >&2
}

if ! docker info >/dev/null 2>&1; then
  if ((EUID != 0)); then
    docker_problem "the Docker engine is not reachable and only root can start dockerd here"
  else
    log=$(mktemp -t citadel-dockerd.XXXXXX)
    echo "setup: starting dockerd (log: $log)"
    # Its own session, so it outlives this script and its process group.
    setsid dockerd >"$log" 2>&1 </dev/null &
    dockerd_pid=$!
    ready=0
    for _ in $(seq 120); do
      if docker info >/dev/null 2>&1; then
        ready=1
        break
      fi
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.5
    done
    if ((ready == 0)); then
      tail -n 5 "$log" >&2 || true
      if kill -0 "$dockerd_pid" 2>/dev/null; then
        docker_problem "dockerd is not ready after 60 s; left running (log: $log)"
      else
        docker_problem "dockerd exited at start (log: $log)"
      fi
    fi
  fi
fi

if [[ ! -e node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

# CI meets Docker as a fresh machine would, so that what earlier runs left cannot hide a failure:
# it removes every container labelled by the agent (org.citadel.managed=true, running or not),
# with its anonymous volumes, and the images tests label org.citadel.test=true, and it rebuilds
# the task image rather than trusting one an older script built. It assumes one Citadel build
# at a time on this engine: a concurrent run's containers and test images go too.
# What stays machine state (it may differ on a fresh machine; no test may rely on it):
# - dockerd itself, never restarted here: version, /etc/docker/daemon.json, storage driver,
#   cgroup version, iptables rules.
# - the default bridge: its interface (docker0) and subnet, and whether the engine reports an
#   IPAM gateway for it: a dockerd that created docker0 at its start reports the subnet only,
#   one restarted on a host where docker0 kept its address reports the gateway too.
# - anonymous volumes of containers removed without them (by agents that did not pass `v`):
#   unlabelled, so they cannot be told from anyone else's; `docker volume ls -f dangling=true`.
# - every other image, container, volume and network: Citadel does not use them.
reset_citadel_docker() {
  local containers images
  containers=$(docker ps --all --quiet --filter label=org.citadel.managed=true)
  if [[ -n $containers ]]; then
    echo "setup: CI: removing $(wc -w <<<"$containers") container(s) left by earlier runs, with their volumes"
    # shellcheck disable=SC2086 # one id per word
    docker rm --force --volumes $containers >/dev/null
  fi
  images=$(docker image ls --quiet --filter label=org.citadel.test=true | sort -u)
  if [[ -n $images ]]; then
    echo "setup: CI: removing $(wc -w <<<"$images") test image(s) left by earlier runs"
    # shellcheck disable=SC2086 # one id per word
    docker image rm --force $images >/dev/null
  fi
}

# The default task image, built locally (no registry is reachable); outside CI skipped when it
# exists.
if docker info >/dev/null 2>&1; then
  rebuild=()
  if [[ ${CI:-} == true ]]; then
    reset_citadel_docker
    rebuild=(--force)
  fi
  bash scripts/build-task-image.sh "${rebuild[@]}" || docker_problem "the task image could not be built"
fi

echo "setup: ok"
