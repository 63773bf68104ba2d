#!/usr/bin/env bash
# The GPU check: everything one lease of a GPU machine should verify, in one call of at
# most 10 minutes. Run from anywhere in the repository on a machine with a CUDA device:
#
#   bash scripts/gpu_check.sh              # everything: build, GPU tests, bench
#   bash scripts/gpu_check.sh tests bench  # only the steps named (always in this order)
#
# Steps, one after another, all inside TOTAL_S = 540 s: with 10 s for killing a step that
# overruns and SUMMARY_S = 20 s at most for the summary, it ends within 570 s of a 600 s
# call.
#   build  muxkernels._C in place with every core (python3 -m pip, offline: --no-deps
#          --no-index --no-build-isolation); at most BUILD_S = 150 s, and never into the
#          tests' time.
#   tests  every test marked gpu (python3 -m pytest -m gpu tests, 4 workers with
#          pytest-xdist when it is installed) with MUXKERNELS_REQUIRE_EXTENSION=1, so a
#          missing extension fails rather than skips; TESTS_S = 180 s are theirs whatever
#          the build takes. They run after a failed build too: the Triton tests still mean
#          something, and the extension's fail saying why.
#   bench  `muxkernels bench` with the time left (not run with under BENCH_MIN_S = 60 s):
#          --budget-s is its limit less BENCH_TAIL_S = 45 s (the measurement in flight,
#          the files, the plot). Every finished (op, N) is on disk at once; a failing
#          implementation, workload or end-to-end run is recorded in results.json (and
#          fails this script), not fatal. BENCH_ARGS adds options, e.g. the rest of the
#          Ns in a later lease: BENCH_ARGS="--n 5 10 20 --resume saved/results.json" (a
#          saved run copied into the tree; its end-to-end rows are kept).
#
# The bench's default set, BENCH_SET = every sequence op at N in {2, 40} and the end-to-end
# run at every N, is sized to end well inside its time. On an H200, per (op, N) (B'=64, L=128,
# d=768, bf16): about 13 timings (3 modes x 3-5 implementations, 3.8 on average, + the
# copy and matmul ceilings), each a warm-up call, a graph capture and do_bench (5 ms
# warm-up + 25 ms measured + 5 estimate calls, each after a 256 MB L2 flush) ~ 35 ms, so
# ~0.5 s; torch.compile of the reference (its caches reset per workload): an inference
# graph and a training graph, 3 inductor compiles at ~2 s with 16 workers, ~6 s. So ~7 s
# per (op, N), 20 of them ~140 s; once per run, inductor's start ~15 s and Triton's JIT
# of our kernels ~20 s (~1 s per specialisation); the end-to-end run ~30 s (3 tasks x 15
# configurations x ~8 passes of <= 40 ms, plus set-up). About 205 s, against a bench
# limit of ~320 s when the build takes ~60 s and the tests ~120 s, and 180 s when both
# use all their time (then the deadline stops it early and lists what it left). The
# bench log gives each (op, N)'s seconds, to check these numbers on the first run.
# The image multiplexer ops run the same kernels at image shapes; measure them in a later
# lease: BENCH_ARGS="--ops image_mux_gaussian image_mux_learnable image_mux_nonlinear_expand
# image_mux_so_n image_mux_learnable_w image_mux_hadamard --no-e2e".
#
# Output, in $OUT when set (the GPU machine returns at most 8 files from it), else
# ./gpu_check_out: summary.txt (one line per step, then the bench's short tables),
# gpu_check.log (everything: environment, build, tests one per line, bench progress) and
# bench/ (results.json, ops.csv, end_to_end.csv, bench.png): 6 files. The script checks
# the count and fails above 8. It exits non-zero if any step failed, timed out or
# recorded a failure. Back on a development machine, `muxkernels bench --report
# <out>/bench/results.json --out docs/bench --readme README.md` turns the run into the
# README's results section.
#
# For testing the orchestration (tests/test_gpu_check.py), every number above can be set
# through GPU_CHECK_<NAME> (GPU_CHECK_TOTAL_S, ...), and each step's command through
# GPU_CHECK_ENV_CMD, GPU_CHECK_BUILD_CMD, GPU_CHECK_TESTS_CMD, GPU_CHECK_BENCH_CMD (bash
# command lines, run with BENCH_DIR and BENCH_BUDGET_S set).
set -euo pipefail

cd "$(dirname "$0")/.."
TOTAL_S=${GPU_CHECK_TOTAL_S:-540}
ENV_S=${GPU_CHECK_ENV_S:-30}
BUILD_S=${GPU_CHECK_BUILD_S:-150}
TESTS_S=${GPU_CHECK_TESTS_S:-180}
BENCH_MIN_S=${GPU_CHECK_BENCH_MIN_S:-60}
BENCH_TAIL_S=${GPU_CHECK_BENCH_TAIL_S:-45}
SUMMARY_S=${GPU_CHECK_SUMMARY_S:-20} # reading the bench's results for the summary
KILL_AFTER_S=10 # a step that ignores the timeout's TERM is killed this much later
MAX_FILES=8     # the GPU machine returns at most 8 files, at most two folders deep
MAX_LOG_BYTES=$((15 * 1024 * 1024)) # and each file at most 16 MiB
BENCH_SET="--n 2 40 --ops hadamard_mux index_demux index_demux_logits embed_mux ortho_mux \
lowrank_ortho_mux index_demux_sequence index_demux_selected index_pos_demux mlp_demux"

OUT_DIR="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/summary.txt"
LOG="$OUT_DIR/gpu_check.log"
: >"$SUMMARY"
: >"$LOG"
export BENCH_DIR="$OUT_DIR/bench"

# The steps' commands (bash command lines; "\" joins lines as in a script).
ENV_CMD=${GPU_CHECK_ENV_CMD:-'date -u
timeout 20 nvidia-smi || echo "nvidia-smi failed"
(command -v nvcc >/dev/null && nvcc --version | tail -n 2) || echo "nvcc not on PATH"
echo "CUDA_HOME=${CUDA_HOME:-<unset>} nproc=$(nproc)"
python3 -c "import sys, torch, triton; print(\"python\", sys.version.split()[0], \"torch\", \
torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__, \"device\", \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"'}
BUILD_CMD=${GPU_CHECK_BUILD_CMD:-'MAX_JOBS=$(nproc) MUXKERNELS_BUILD_CUDA=1 \
python3 -m pip install --no-build-isolation --no-deps --no-index -v -e .'}
TESTS_CMD=${GPU_CHECK_TESTS_CMD:-'workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 4")
MUXKERNELS_REQUIRE_EXTENSION=1 python3 -m pytest -m gpu -v -ra -p no:cacheprovider \
--durations=15 $workers tests'}
BENCH_CMD=${GPU_CHECK_BENCH_CMD:-'python3 -m muxkernels.bench --out "$BENCH_DIR" \
--budget-s "$BENCH_BUDGET_S" '"$BENCH_SET ${BENCH_ARGS:-}"}

STEPS=(build tests bench)
if (($# > 0)); then
    for name in "$@"; do
        if [[ " ${STEPS[*]} " != *" $name "* ]]; then
            echo "gpu_check.sh: unknown step '$name'; choose from: ${STEPS[*]}" >&2
            exit 2
        fi
    done
    STEPS=("$@")
fi
wants() { [[ " ${STEPS[*]} " == *" $1 "* ]]; }

STATUS=0
note() { echo "$1" | tee -a "$SUMMARY"; }

# step NAME LIMIT_S COMMAND [show]: runs the bash command line under a timeout (its
# process group is killed at the limit), output appended to the log; one summary line;
# the output's tail on the console when it failed (or with "show").
step() {
    local name=$1 limit=$2 command=$3 show=${4:-} rc=0 start=$SECONDS offset
    echo "=== $name (limit ${limit}s) ===" | tee -a "$LOG"
    offset=$(($(stat -c %s "$LOG") + 1))
    timeout --kill-after="$KILL_AFTER_S" "$limit" bash -c "$command" >>"$LOG" 2>&1 </dev/null ||
        rc=$?
    local took=$((SECONDS - start))
    if ((rc == 124 || rc == 137)); then
        note "$name: TIMEOUT after ${took}s (limit ${limit}s)"
    elif ((rc != 0)); then
        note "$name: FAILED (exit $rc) in ${took}s (limit ${limit}s)"
    else
        note "$name: ok in ${took}s (limit ${limit}s)"
    fi
    if ((rc != 0)); then STATUS=1; fi
    if ((rc != 0)) || [[ -n $show ]]; then
        tail -c +"$offset" "$LOG" | tail -n 30 | cut -c1-300
    fi
}

left() { echo $((TOTAL_S - SECONDS)); }
min() { if (($1 < $2)); then echo "$1"; else echo "$2"; fi; }

step environment "$(min "$ENV_S" "$(left)")" "$ENV_CMD" show

if wants build; then
    reserve=0
    if wants tests; then reserve=$TESTS_S; fi
    limit=$(min "$BUILD_S" $(($(left) - reserve)))
    if ((limit > 0)); then
        step build "$limit" "$BUILD_CMD"
    else
        note "build: not run (no time left)"
    fi
fi
if wants tests; then
    limit=$(min "$TESTS_S" "$(left)")
    if ((limit > 0)); then
        step tests "$limit" "$TESTS_CMD"
    else
        note "tests: not run (no time left)"
    fi
fi
if wants bench; then
    limit=$(left)
    if ((limit < BENCH_MIN_S)); then
        note "bench: not run (${limit}s left, it needs ${BENCH_MIN_S}s)"
        STATUS=1
    else
        export BENCH_BUDGET_S=$((limit - BENCH_TAIL_S))
        step bench "$limit" "$BENCH_CMD"
        bench_ran=1
    fi
fi

# The bench's short tables and recorded failures, from its results, into the summary.
if [[ -n ${bench_ran:-} && -f "$BENCH_DIR/results.json" ]]; then
    timeout "$SUMMARY_S" python3 - "$BENCH_DIR/results.json" >>"$SUMMARY" 2>&1 <<'EOF' || STATUS=1
import sys

from muxkernels.bench import report

results = report.read_json(sys.argv[1])
print("\nEnd to end\n\n" + report.end_to_end_summary(results))
for mode in ("fwd", "fwd+bwd"):
    print(f"\nOps, {mode}\n\n" + report.ops_summary(results, mode))
if results["meta"].get("unmeasured"):
    print("\nNot measured (time budget): " + ", ".join(results["meta"]["unmeasured"]))
failures = report.failed(results)
print(f"\n{len(failures)} bench failure(s)" + "".join(f"\n- {line}" for line in failures))
sys.exit(1 if failures else 0)
EOF
fi

# What comes back from the GPU machine: at most MAX_FILES files, two folders deep, each
# under 16 MiB (the log is cut in the middle if it grew past that).
if (($(stat -c %s "$LOG") > MAX_LOG_BYTES)); then
    {
        head -c $((MAX_LOG_BYTES / 8)) "$LOG"
        printf '\n[... the middle of this log is cut: it grew past 15 MiB ...]\n'
        tail -c $((MAX_LOG_BYTES / 2)) "$LOG"
    } >"$LOG.cut"
    mv "$LOG.cut" "$LOG"
fi
files=$(find "$OUT_DIR" -type f | wc -l)
deep=$(find "$OUT_DIR" -mindepth 4 -type f | wc -l)
if ((files > MAX_FILES || deep > 0)); then
    note "output: $files files ($deep more than two folders down) in $OUT_DIR; the GPU \
machine returns at most $MAX_FILES, two folders deep"
    STATUS=1
fi

echo "=== summary (${SECONDS}s in all; everything in $OUT_DIR) ==="
cat "$SUMMARY"
exit "$STATUS"
