"""Group chunks that keep a chain of elementwise steps in cache, and the compute dtype."""

from __future__ import annotations

import torch

CHUNK_BYTES = 1 << 20  # working set of one chunk: about a core's L2 cache


def group_chunks(groups: int, bytes_per_group: int) -> list[slice]:
    """Slices of [0, groups), each at most ``CHUNK_BYTES`` of intermediates (one group at
    least); a single slice when everything fits, and while torch.compile traces."""
    per_chunk = max(1, CHUNK_BYTES // max(1, bytes_per_group))
    if per_chunk >= groups or torch.compiler.is_compiling():
        return [slice(0, groups)]
    return [slice(start, min(start + per_chunk, groups)) for start in range(0, groups, per_chunk)]


def compute_dtype(data: torch.Tensor) -> torch.dtype:
    """float64 and float32 data compute in their own dtype, half precision in float32."""
    return data.dtype if data.dtype in (torch.float32, torch.float64) else torch.float32


def cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype``, without a call when it already is."""
    return t if t.dtype == dtype else t.to(dtype)
