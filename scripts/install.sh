#!/usr/bin/env bash
# Set up a fresh machine for muxkernels: torch, triton, the dev tools, and the package itself
# (editable, with the CUDA extension built when torch has CUDA and nvcc is found).
# transformers is a test dependency (tiny random Hugging Face encoders in the published-model
# tests; it needs no torch of its own, so the pinned torch stays); users need it only for
# Hugging Face encoders.
#
# Knobs: PYTHON (default python3), MUXKERNELS_TORCH (default torch==2.14.1, the CUDA 13.0
# build, which also builds the extension on a machine without a GPU), MUXKERNELS_TRITON
# (default triton==3.8.0), and the build variables of setup.py (MUXKERNELS_BUILD_CUDA, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

"$PYTHON" -m pip install --quiet \
    "${MUXKERNELS_TORCH:-torch==2.14.1}" "${MUXKERNELS_TRITON:-triton==3.8.0}" \
    ninja pybind11 numpy pytest pytest-benchmark ruff matplotlib transformers
"$PYTHON" -m pip install --quiet --no-build-isolation --no-deps -e .
"$PYTHON" -m muxkernels info
