#!/usr/bin/env bash
# The GPU check: run from the repository root on a machine with a CUDA device.
#
#   bash scripts/gpu_check.sh                  # build, the full bench, then GPU tests
#   bash scripts/gpu_check.sh build tests      # only the steps named
#
# Steps (in this order, each under a timeout, all within TOTAL_BUDGET_S = 6 minutes):
# - build: muxkernels._C in place with all cores (pip, offline: --no-deps --no-index
#   --no-build-isolation), timed;
# - bench: `muxkernels bench` in full (end to end, then every op x implementation x mode
#   at N in {2,5,10,20,40}, bf16), writing results.json, ops.csv, end_to_end.csv and
#   bench.png to $OUT/bench after every op, so a timeout still leaves what was measured;
#   --budget-s keeps it under 5 minutes, listing anything left unmeasured; BENCH_ARGS
#   adds options, e.g. BENCH_ARGS="--resume bench_partial/results.json" (a saved run
#   copied into the tree) measures only what that run lacks;
# - tests: the public ops on every kernel backend on CUDA (tests marked gpu in
#   test_kernel_backends.py and test_compile.py), then the kernel-level tests (tests/gpu),
#   with MUXKERNELS_REQUIRE_EXTENSION=1 so a missing extension fails instead of skipping.
# Logs go to $OUT (when set) or ./gpu_check_out: env.txt, build.log, bench.log, tests.log
# and summary.txt (one line per step). It exits non-zero if any step failed. Back on a
# development machine, `muxkernels bench --report <out>/bench/results.json --out
# docs/bench --readme README.md` turns the run into the README's results section.
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

STEPS=("$@")
if ((${#STEPS[@]} == 0)); then STEPS=(build bench tests); fi
wants() { [[ " ${STEPS[*]} " == *" $1 "* ]]; }

build_ok=1
if wants build; then
    step build 200 "$LOG_DIR/build.log" \
        env MAX_JOBS="$(nproc)" MUXKERNELS_BUILD_CUDA=1 \
        pip install --no-build-isolation --no-deps --no-index -v -e . || build_ok=0
    grep -E "muxkernels setup:|\[[0-9]+/[0-9]+\]|error" "$LOG_DIR/build.log" | cut -c1-300 |
        tail -n 20 || true
fi

if ((!build_ok)); then
    echo "bench and tests: not run (build failed)" | tee -a "$SUMMARY"
    tail -n 40 "$LOG_DIR/build.log"
else
    if wants bench; then
        # new op measurements stop starting a minute before the step's timeout
        bench_s=$(budget 290)
        # shellcheck disable=SC2086 # BENCH_ARGS is split into options on purpose
        step bench "$bench_s" "$LOG_DIR/bench.log" \
            env MUXKERNELS_REQUIRE_EXTENSION=1 python -m muxkernels.bench \
            --out "$LOG_DIR/bench" --budget-s $((bench_s > 90 ? bench_s - 60 : 30)) \
            ${BENCH_ARGS:-} || true
        cat "$LOG_DIR/bench.log"
    fi
    if wants tests; then
        step public-ops 90 "$LOG_DIR/public_ops.log" \
            env MUXKERNELS_REQUIRE_EXTENSION=1 python -m pytest -m gpu -q -ra \
            -p no:cacheprovider tests/test_kernel_backends.py tests/test_compile.py || true
        tail -n 15 "$LOG_DIR/public_ops.log"
        step gpu-tests 200 "$LOG_DIR/tests.log" \
            env MUXKERNELS_REQUIRE_EXTENSION=1 python -m pytest tests/gpu -q -ra \
            -p no:cacheprovider --durations=10 || true
        tail -n 40 "$LOG_DIR/tests.log"
    fi
fi

echo "=== summary (${SECONDS}s in all; logs in $LOG_DIR) ==="
cat "$SUMMARY"
exit "$STATUS"
