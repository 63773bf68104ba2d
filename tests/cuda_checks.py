"""Shared by the GPU tests of the compiled CUDA kernels (muxkernels._C)."""

from __future__ import annotations

import pytest
import torch

from muxkernels import _extension


def require_cuda_extension() -> None:
    """Skips the calling test module (call it at module level) without a CUDA device or
    without the extension; with MUXKERNELS_REQUIRE_EXTENSION=1 a missing extension raises
    ImportError instead (a collection error)."""
    have_extension = _extension.load()
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device", allow_module_level=True)
    if not have_extension:
        pytest.skip(
            f"muxkernels._C is not built ({_extension.load_error()!r})", allow_module_level=True
        )
