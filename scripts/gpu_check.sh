#!/usr/bin/env bash
# The GPU check: run from the repository root on a machine with a CUDA device.
#
#   bash scripts/gpu_check.sh
#
# 1. prints the device (nvidia-smi), nvcc and the python/torch/triton versions;
# 2. builds muxkernels._C in place with all cores (pip, offline: --no-deps --no-index
#    --no-build-isolation), timing the build;
# 3. runs `pytest -m "gpu or extension" tests` with MUXKERNELS_REQUIRE_EXTENSION=1, so a
#    missing extension fails instead of skipping;
# 4. runs benchmarks/bench_ops.py on the ops and N of the targets, printing each op's table
#    as soon as it is measured, so a timeout still leaves the tables finished by then.
# Logs go to $OUT (when set) or ./gpu_check_out: build.log, tests.log, bench.txt, and
# summary.txt (one line per step). Every step has a timeout and the whole script stays
# under 6 minutes; it exits non-zero if any step failed.
set -euo pipefail

cd "$(dirname "$0")/.."
LOG_DIR="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$LOG_DIR"
SUMMARY="$LOG_DIR/summary.txt"
: >"$SUMMARY"

TOTAL_BUDGET_S=350 # seconds for the whole script (under 6 minutes)
STATUS=0

# Seconds a step may take: its own cap, but never past the total budget.
budget() {
    local cap=$1 left=$((TOTAL_BUDGET_S - SECONDS))
    if ((left < 5)); then left=5; fi
    if ((cap < left)); then echo "$cap"; else echo "$left"; fi
}

# step NAME CAP_S LOG COMMAND...: runs COMMAND under a timeout, output to LOG (and the
# console), and records the exit status and duration in summary.txt.
step() {
    local name=$1 cap=$2 log=$3
    shift 3
    local limit start rc=0
    limit=$(budget "$cap")
    start=$SECONDS
    echo "=== $name (timeout ${limit}s) ==="
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || rc=$?
    local took=$((SECONDS - start))
    if ((rc == 124 || rc == 137)); then
        echo "$name: TIMEOUT after ${took}s (limit ${limit}s)" | tee -a "$SUMMARY"
    elif ((rc != 0)); then
        echo "$name: FAILED rc=$rc in ${took}s" | tee -a "$SUMMARY"
    else
        echo "$name: ok in ${took}s" | tee -a "$SUMMARY"
    fi
    if ((rc != 0)); then STATUS=1; fi
    return "$rc"
}

echo "=== environment ==="
{
    date -u
    timeout 30 nvidia-smi || echo "nvidia-smi failed"
    command -v nvcc >/dev/null && nvcc --version | tail -n 2 || echo "nvcc not on PATH"
    echo "CUDA_HOME=${CUDA_HOME:-<unset>} nproc=$(nproc)"
    timeout 60 python - <<'EOF' || echo "python version check failed"
import sys

import torch

print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    print("device 0:", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
try:
    import triton

    print("triton", triton.__version__)
except ImportError as err:
    print("triton: not importable:", err)
EOF
} 2>&1 | tee "$LOG_DIR/env.txt"

build_ok=1
step build 200 "$LOG_DIR/build.log" \
    env MAX_JOBS="$(nproc)" MUXKERNELS_BUILD_CUDA=1 \
    pip install --no-build-isolation --no-deps --no-index -v -e . || build_ok=0
grep -E "muxkernels setup:|\[[0-9]+/[0-9]+\]|error" "$LOG_DIR/build.log" | cut -c1-300 | tail -n 20 || true

if ((build_ok)); then
    step tests 200 "$LOG_DIR/tests.log" \
        env MUXKERNELS_REQUIRE_EXTENSION=1 \
        python -m pytest -m "gpu or extension" tests -q -ra --durations=10 -p no:cacheprovider ||
        true
    tail -n 40 "$LOG_DIR/tests.log"
else
    echo "tests: not run (build failed)" | tee -a "$SUMMARY"
    tail -n 40 "$LOG_DIR/build.log"
fi

BENCH_ARGS=(--n 10 40 --ops hadamard_mux index_demux index_demux_logits ortho_mux embed_mux
    mlp_demux lowrank_ortho_mux index_pos_demux)
if ((build_ok)); then
    step bench 300 "$LOG_DIR/bench.txt" python benchmarks/bench_ops.py "${BENCH_ARGS[@]}" || true
    tail -n 80 "$LOG_DIR/bench.txt"
else
    echo "bench: not run (build failed)" | tee -a "$SUMMARY"
fi

echo "=== summary (${SECONDS}s in all; logs in $LOG_DIR) ==="
cat "$SUMMARY"
exit "$STATUS"
