"""The optional compiled extension ``muxkernels._C`` (CUDA C++ kernels, csrc/).

Importing ``muxkernels._C`` registers the CPU and CUDA implementations of the
``muxkernels::<name>_cuda`` operators (csrc/bindings/) and defines nothing; ``load()`` then
defines each implemented operator with its schema from ``muxkernels._opdefs`` (the one
place schemas are written; the dispatcher checks the compiled implementations' types
against them) and adds its fake (meta) implementation, so that ``torch.compile`` and
``torch.library.opcheck`` can trace it. The package works without the extension:
``load()`` then returns False and the other backends are used.

Operators (call through ``torch.ops.muxkernels``, after ``load()`` returned True); each
has the schema ``muxkernels._opdefs.SCHEMAS[<name>]`` and the semantics given in that
module's docstring:

``hadamard_mux_fwd_cuda``, ``hadamard_mux_bwd_cuda``
    x = (1/N) Σ_i v_i ⊙ E_i and its gradients (dv summed deterministically).
``embed_mux_fwd_cuda``
    the fused front end: token ids → embeddings + LayerNorm per instance → hadamard mux
    → position/type add + LayerNorm, without writing the N per-instance embeddings.
``demux_gather_fwd_cuda``, ``demux_gather_bwd_cuda``
    u = LN(gelu(a[g,i] + c[g,t])) for the token, sequence and selected gathers, and its
    gradients recomputed from a and c (reductions deterministic).

Floating data is float16, bfloat16, float32 or float64 (parameters in the data's dtype or
float32), accumulated in fp32 (fp64 for float64). The CUDA implementations run the
kernels on the current stream; float64 runs the kernel for the hadamard ops and ATen ops
for the others. The CPU implementations use ATen ops, for testing without a GPU.

Set ``MUXKERNELS_REQUIRE_EXTENSION=1`` to make a missing or broken extension an error
(``ImportError``) instead of a silent fallback, e.g. in CI on GPU machines.
"""

from __future__ import annotations

import importlib
import os
import threading

import torch

from . import _install, _opdefs

__all__ = ["REQUIRE_ENV_VAR", "cuda_kernels_available", "load", "load_error"]

REQUIRE_ENV_VAR = "MUXKERNELS_REQUIRE_EXTENSION"
_MODULE = "muxkernels._C"

_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried yet
_error: BaseException | None = None


def load() -> bool:
    """Imports ``muxkernels._C`` once (the result is cached) and says whether it loaded.

    On success its operators are defined and their fake implementations registered. A
    missing or unloadable extension, or one whose implementations do not match the schemas
    (built from other sources), returns False, unless ``MUXKERNELS_REQUIRE_EXTENSION=1`` is
    set: then ``ImportError`` is raised, chained to the original error.
    """
    global _loaded, _error
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _error = import_operators(_MODULE, "cuda")
                _loaded = _error is None
    if not _loaded:
        fail_if_required(f"the compiled extension {_MODULE}", _install.explain(_error), _error)
    return _loaded


def import_operators(module: str, backend: str) -> BaseException | None:
    """Imports the compiled extension ``module``, defines the ``muxkernels::<name>_<backend>``
    operators it implements and registers their fakes. Returns the error that stopped it
    (missing, unloadable, or implementations whose types differ from the schemas), or None.
    """
    try:
        importlib.import_module(module)
        try:
            _opdefs.define_implemented(backend)
        except RuntimeError as err:
            raise ImportError(
                f"{module} does not implement the operator schemas of muxkernels._opdefs "
                f"(built from other sources? rebuild it): {err}"
            ) from err
    except (ImportError, OSError) as err:
        return err
    _opdefs.register_fakes(backend)
    return None


def fail_if_required(what: str, why: str, error: BaseException | None) -> None:
    """ImportError (chained to ``error``) when ``MUXKERNELS_REQUIRE_EXTENSION=1``: ``what``
    cannot be imported, because ``why``."""
    if os.environ.get(REQUIRE_ENV_VAR) == "1":
        raise ImportError(f"{REQUIRE_ENV_VAR}=1 but {what} cannot be imported: {why}") from error


def load_error() -> BaseException | None:
    """The error that made ``load()`` fail, or None (loaded, or not tried yet)."""
    return _error


def cuda_kernels_available() -> bool:
    """Whether the compiled CUDA kernels can run here: extension loaded and a GPU present."""
    return load() and torch.cuda.is_available()
