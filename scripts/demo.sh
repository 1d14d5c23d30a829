#!/usr/bin/env bash
# The main job on the embedded default: real vLLM on CPU with the tiny model, health suite, no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest suites/medium/test_health.py --profile=cpu_tiny "$@"
