#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (torch, triton and transformers there; no
# vLLM, no package registry; at most ~10 minutes). From the repository root:
#   OUT=/path/for/results bash bench/gpu_check.sh
# Writes each check's output and a summary under $OUT; copy the numbers into
# bench/RESULTS.md with the device name (device.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/vsteer-gpu}
mkdir -p "$OUT"
# vsteer is not installed there: a package directory laid out as the wheel lays it out
SHIM=$(mktemp -d)
cp -r vsteer "$SHIM/vsteer"
for sub in kernels plugins server; do ln -s "$PWD/$sub" "$SHIM/vsteer/$sub"; done
export PYTHONPATH="$SHIM"
PY=${PYTHON:-python3}
{ nvidia-smi -L; "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$OUT/device.txt" 2>&1
: > "$OUT/summary.txt"
run() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: exit $?" | tee -a "$OUT/summary.txt"
}
run graph_replay 120 "$PY" bench/graph_replay.py                # capture once, replay new tables
run kernels 180 "$PY" bench/kernels.py                          # bandwidth vs copy, speed-ups
run decode_overhead 180 "$PY" bench/decode_overhead.py          # 8B-shaped stack, CUDA graphs
run triton_compile 120 "$PY" bench/triton_compile.py            # registers/spills, same compiler
cat "$OUT/device.txt" "$OUT/summary.txt"
