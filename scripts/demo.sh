#!/usr/bin/env bash
# The main job on the embedded default: real vLLM on CPU with the tiny model, the medium suites, no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest suites/medium --profile=cpu_tiny "$@"
