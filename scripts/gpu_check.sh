#!/usr/bin/env bash
# The GPU check: run from the repository root on a machine with a CUDA device.
#
#   bash scripts/gpu_check.sh
#
# 1. prints the device (nvidia-smi), nvcc and the python/torch/triton versions;
# 2. builds muxkernels._C in place with all cores (pip, offline: --no-deps --no-index
#    --no-build-isolation), timing the build;
# 3. runs the public ops on every kernel backend on CUDA (tests marked gpu in
#    test_kernel_backends.py and test_compile.py), with MUXKERNELS_REQUIRE_EXTENSION=1 so a
#    missing extension fails instead of skipping;
# 4. runs benchmarks/bench_ops.py on the ops, N and modes of the targets, printing each
#    table as soon as it is measured, so a timeout still leaves the tables finished by then;
# 5. runs the kernel-level GPU tests (tests/gpu) with the time that is left.
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
    # 1. every public op x kernel backend on CUDA (fwd and grads) and inductor: quick, first
    step public-ops 90 "$LOG_DIR/public_ops.log" \
        env MUXKERNELS_REQUIRE_EXTENSION=1 python -m pytest -m gpu -q -ra -p no:cacheprovider \
        tests/test_kernel_backends.py tests/test_compile.py || true
    tail -n 15 "$LOG_DIR/public_ops.log"
    # 2. the targets, one table each (bf16): copy-bound mux, GEMM-bound ortho, the demux
    #    write floor and its fwd+bwd against torch.compile, the fused front end
    step bench-hadamard 60 "$LOG_DIR/bench_hadamard.txt" \
        python benchmarks/bench_ops.py --ops hadamard_mux --n 10 40 --modes fwd || true
    step bench-index-demux 60 "$LOG_DIR/bench_index_demux.txt" \
        python benchmarks/bench_ops.py --ops index_demux --n 40 --modes fwd fwd+bwd || true
    step bench-ortho 40 "$LOG_DIR/bench_ortho.txt" \
        python benchmarks/bench_ops.py --ops ortho_mux --n 10 --modes fwd || true
    step bench-embed 40 "$LOG_DIR/bench_embed.txt" \
        python benchmarks/bench_ops.py --ops embed_mux --n 40 --modes fwd || true
    cat "$LOG_DIR"/bench_*.txt
    # 3. the kernel-level GPU tests with what time is left
    step gpu-tests 200 "$LOG_DIR/tests.log" \
        env MUXKERNELS_REQUIRE_EXTENSION=1 python -m pytest tests/gpu -q -ra -p no:cacheprovider \
        --durations=10 || true
    tail -n 40 "$LOG_DIR/tests.log"
else
    echo "tests and bench: not run (build failed)" | tee -a "$SUMMARY"
    tail -n 40 "$LOG_DIR/build.log"
fi

echo "=== summary (${SECONDS}s in all; logs in $LOG_DIR) ==="
cat "$SUMMARY"
exit "$STATUS"
