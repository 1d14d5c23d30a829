#!/usr/bin/env bash
# The project's own tests, all tiers: unit, plugin (pytester), emulator, and real vLLM CPU through the
# process backend and through Docker Compose. Installs what it needs first. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --docker
.venv/bin/ruff check .
exec .venv/bin/pytest tests -p no:cacheprovider -rfEs --junitxml=reports/junit-tests.xml "$@"
