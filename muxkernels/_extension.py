"""The optional compiled extension ``muxkernels._C`` (CUDA C++ kernels, csrc/).

Importing ``muxkernels._C`` registers the ``muxkernels::`` operators (schemas, CPU and CUDA
implementations) with PyTorch; this module adds their fake (meta) implementations, so
that ``torch.compile`` and ``torch.library.opcheck`` can trace them. The package works
without the extension: ``load()`` then returns False and the other backends are used.

Operators (call through ``torch.ops.muxkernels``, after ``load()`` returned True):

``hadamard_mux_fwd_cuda(Tensor embeddings, Tensor vectors) -> Tensor``
    embeddings (B', N, L, d) and vectors (N, d), both contiguous and on one device;
    embeddings float16, bfloat16, float32 or float64; vectors in the dtype of embeddings
    or float32. Returns x (B', L, d) in the dtype of embeddings,
    x[g, t, :] = (1/N) Σ_i vectors[i, :] ⊙ embeddings[g, i, t, :], accumulated in fp32
    (fp64 for float64). Runs on CUDA (the kernel) and on CPU (ATen ops, for testing).

Set ``MUXKERNELS_REQUIRE_EXTENSION=1`` to make a missing or broken extension an error
(``ImportError``) instead of a silent fallback, e.g. in CI on GPU machines.
"""

from __future__ import annotations

import importlib
import os
import threading

import torch

__all__ = ["REQUIRE_ENV_VAR", "cuda_kernels_available", "load", "load_error"]

REQUIRE_ENV_VAR = "MUXKERNELS_REQUIRE_EXTENSION"
_MODULE = "muxkernels._C"

_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried yet
_error: BaseException | None = None


def load() -> bool:
    """Imports ``muxkernels._C`` once (the result is cached) and says whether it loaded.

    On success the fake implementations of its operators are registered. A missing or
    unloadable extension returns False, unless ``MUXKERNELS_REQUIRE_EXTENSION=1`` is set:
    then ``ImportError`` is raised, chained to the original error.
    """
    global _loaded, _error
    if _loaded is None:
        with _lock:
            if _loaded is None:
                try:
                    importlib.import_module(_MODULE)
                except (ImportError, OSError) as err:
                    _error = err
                    _loaded = False
                else:
                    _register_fakes()
                    _loaded = True
    if not _loaded and os.environ.get(REQUIRE_ENV_VAR) == "1":
        raise ImportError(
            f"{REQUIRE_ENV_VAR}=1 but the compiled extension {_MODULE} cannot be imported: "
            f"{_error!r} (build it with MUXKERNELS_BUILD_CUDA=1 pip install "
            "--no-build-isolation -e .)"
        ) from _error
    return _loaded


def load_error() -> BaseException | None:
    """The error that made ``load()`` fail, or None (loaded, or not tried yet)."""
    return _error


def cuda_kernels_available() -> bool:
    """Whether the compiled CUDA kernels can run here: extension loaded and a GPU present."""
    return load() and torch.cuda.is_available()


def _register_fakes() -> None:
    """Registers the fake (meta) implementation of every operator of ``muxkernels._C``."""

    @torch.library.register_fake("muxkernels::hadamard_mux_fwd_cuda")
    def _hadamard_mux_fwd_fake(embeddings: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        op = "muxkernels::hadamard_mux_fwd_cuda"
        torch._check(
            embeddings.dim() == 4,
            lambda: f"{op}: embeddings must have rank 4 (B', N, L, d), got {embeddings.shape}",
        )
        torch._check(
            vectors.dim() == 2,
            lambda: f"{op}: vectors must have rank 2 (N, d), got {vectors.shape}",
        )
        torch._check(
            vectors.shape[0] == embeddings.shape[1],
            lambda: (
                f"{op}: vectors.size(0) must equal embeddings.size(1) (N), got vectors "
                f"shape {vectors.shape} and embeddings shape {embeddings.shape}"
            ),
        )
        torch._check(
            vectors.shape[1] == embeddings.shape[3],
            lambda: (
                f"{op}: vectors.size(1) must equal embeddings.size(3) (d), got vectors "
                f"shape {vectors.shape} and embeddings shape {embeddings.shape}"
            ),
        )
        torch._check(
            embeddings.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64),
            lambda: (
                f"{op}: embeddings must be float16, bfloat16, float32 or float64, "
                f"got {embeddings.dtype}"
            ),
        )
        torch._check(
            vectors.dtype in (embeddings.dtype, torch.float32),
            lambda: (
                f"{op}: vectors must have the dtype of embeddings ({embeddings.dtype}) "
                f"or float32, got {vectors.dtype}"
            ),
        )
        groups, _, length, d = embeddings.shape
        return embeddings.new_empty((groups, length, d))
