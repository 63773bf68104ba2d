#!/usr/bin/env bash
# Set up a fresh machine for muxkernels: torch, triton, the dev tools, and the package itself
# (editable, with the CUDA extension built when torch has CUDA and nvcc is found).
# transformers is a test dependency (tiny random Hugging Face encoders in the published-model
# tests; it needs no torch of its own, so the pinned torch stays); users need it only for
# Hugging Face encoders. scikit-learn supplies the digits data set of `muxkernels demo --task
# digits` and its tests (users install it only for that demo: the 'vision' extra).
#
# torch: the CUDA 13.0 build torch==2.14.1 where a CUDA toolkit is found (nvcc under
# CUDA_HOME or on PATH: the extension is built against it, with or without a GPU), else the
# CPU build torch==2.13.0 (no 5 GB of CUDA libraries that nothing here could use; a pip
# configured with a local wheel directory takes it from there).
#
# Knobs: PYTHON (default python3), MUXKERNELS_TORCH (overrides the choice above),
# MUXKERNELS_TRITON (default triton==3.8.0), and the build variables of setup.py
# (MUXKERNELS_BUILD_CUDA, MUXKERNELS_CUDA_ARCH, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
if [ -x "$CUDA_HOME/bin/nvcc" ] || command -v nvcc >/dev/null 2>&1; then
    default_torch="torch==2.14.1"
    echo "install.sh: CUDA toolkit found: $default_torch (CUDA build); the extension is built"
else
    default_torch="torch==2.13.0"
    echo "install.sh: no CUDA toolkit (no nvcc): $default_torch (CPU build), pure Python"
fi

"$PYTHON" -m pip install --quiet \
    "${MUXKERNELS_TORCH:-$default_torch}" "${MUXKERNELS_TRITON:-triton==3.8.0}" \
    ninja pybind11 numpy pytest pytest-benchmark ruff matplotlib transformers scikit-learn
"$PYTHON" -m pip install --quiet --no-build-isolation --no-deps -e .
"$PYTHON" -m muxkernels info
