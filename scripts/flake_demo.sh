#!/usr/bin/env bash
# By hand, not CI: the demo suite N times in a row with a CPU hog beside each run, one shared history, so
# the regression gate compares every run with the earlier ones. Prints each run's exit code, duration and
# KV-cache accelerations; exits non-zero if any run failed.
#   bash scripts/flake_demo.sh [N=20] [OUTDIR=/tmp/pytest-vllm-flake] [extra pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}; OUT=${2:-/tmp/pytest-vllm-flake}; shift $(( $# < 2 ? $# : 2 ))
mkdir -p "$OUT"
bash scripts/setup.sh > "$OUT/setup.log" 2>&1 || { echo "setup failed: $OUT/setup.log"; exit 1; }
failed=0
for i in $(seq 1 "$N"); do
  yes > /dev/null & hog=$!  # the load: one core busy for the whole run
  start=$(date +%s)
  .venv/bin/pytest suites/medium --profile=cpu_tiny --reports-dir="$OUT/reports" -p no:cacheprovider -q "$@" \
    > "$OUT/run-$i.log" 2>&1
  rc=$?
  kill "$hog"; wait "$hog" 2>/dev/null
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
  .venv/bin/python - "$OUT/reports/latest.json" "$i" "$rc" "$(( $(date +%s) - start ))" <<'PY' | tee -a "$OUT/runs.txt"
import json, sys
path, run, rc, seconds = sys.argv[1:]
try:
    m = json.loads(open(path).read())["measurements"]["cpu_tiny"]
    acc = " ".join(f"{w} x{m[f'kv_cache/{w}']['acceleration']:.2f}" for w in ("long_prefix", "agent_conversation")
                   if f"kv_cache/{w}" in m)
except (OSError, KeyError, ValueError) as e:
    acc = f"no measurements ({e})"
print(f"run {run}: exit {rc}, {seconds} s, {acc}")
PY
done
echo "$failed of $N runs failed (logs: $OUT)"
[ "$failed" -eq 0 ]
