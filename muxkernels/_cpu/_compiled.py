"""The cpu backend's compiled kernels, ``muxkernels._C_cpu`` (csrc/cpu/), when built.

Importing the module registers the CPU implementations of the ``muxkernels::<name>_cpu``
operators; ``load()`` then defines them with their schemas (``muxkernels._opdefs``) and
registers their fakes, as ``muxkernels._extension`` does for the CUDA ones. setup.py
builds the module on every install that can import torch (CPU-only torch included), so
without it (a source tree never built, a plain ``pip install .`` under build isolation, a
failed compile) the cpu backend runs its ATen form instead; ``muxkernels info`` says which
and why. ``MUXKERNELS_REQUIRE_EXTENSION=1`` makes a missing module an ImportError.
"""

from __future__ import annotations

import importlib

from .. import _extension, _install, _opdefs

MODULE = "muxkernels._C_cpu"
# The ops whose operators muxkernels::<op>_{fwd,bwd}_cpu the module implements (csrc/cpu/);
# a module built from older sources that lacks one is not used (``load`` says which and
# how to rebuild).
OPS = ("hadamard_mux", "lowrank_ortho_mux", "embed_mux", "conv_mux", "demux_gather",
       "index_demux", "index_pos_demux")  # fmt: skip
OPERATORS = tuple(f"{op}_{way}" for op in OPS for way in ("fwd", "bwd"))

_loaded: bool | None = None  # None: not tried yet
_error: BaseException | None = None


def load() -> bool:
    """Imports ``muxkernels._C_cpu`` once and says whether its operators are defined."""
    global _loaded, _error
    if _loaded is None:
        _error = _extension.import_operators(MODULE, "cpu") or _missing_operators()
        _loaded = _error is None
    if not _loaded:
        why = f"{type(_error).__name__}: {_error}"
        _extension.fail_if_required(f"the compiled cpu kernels {MODULE}", why, _error)
    return _loaded


def _missing_operators() -> ImportError | None:
    missing = [name for name in OPERATORS if not _opdefs.has_operator(name, "cpu")]
    if not missing:
        return None
    return ImportError(
        f"{MODULE} lacks the operators {', '.join(missing)} (built from older sources): "
        f"rebuild it with {_install.cpu_build_command()}"
    )


def blas_linked() -> bool:
    """Whether the compiled kernels call PyTorch's BLAS (sgemm_/dgemm_) directly; without
    it their GEMMs go through ATen's addmm (same results, a dispatcher call each)."""
    return available() and importlib.import_module(MODULE).blas_linked()


def load_error() -> BaseException | None:
    """Why ``load()`` failed, or None."""
    return _error


def available() -> bool:
    """Whether the cpu backend runs its compiled kernels (the module loaded)."""
    return _loaded if _loaded is not None else load()
