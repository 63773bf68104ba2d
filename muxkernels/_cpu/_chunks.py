"""What every cpu-backend function shares: the dtypes it computes in, the sizes that pick a
form, and group chunks that keep a chain of elementwise steps in cache."""

from __future__ import annotations

import torch

OWN_DTYPES = (torch.float32, torch.float64)  # computed in their own dtype; others in float32
# Working set of one chunk. Each chunk costs its ATen calls again, so chunks smaller than
# the data gain nothing while it fits in the last-level cache: on the CPU machine (1 MiB
# L2 a core, 32 MiB L3), 1 MiB chunks made the bench's embed_mux 5-15 % slower than one
# piece at N = 2 and 5, and 4 MiB chunks were as fast as one piece there, and faster at
# N = 20 and 40.
CHUNK_BYTES = 4 << 20
# About half the CPU machine's 32 MiB last-level cache: an intermediate larger than this
# is written to and read back from main memory by every elementwise pass over it.
LAST_LEVEL_BYTES = 16 << 20
# Below this many elements in the op's largest input, the cost of a call is mostly the
# number of ATen calls it makes, not its arithmetic, so the forms with fewer calls win.
SMALL_ELEMENTS = 1 << 14
# Above this many elements per instance (B'·L·d), a sum over the N instances runs as a
# running sum (each instance read once) instead of an (B', N, L, d) product and a
# reduction: at B'=8, L=128, d=768 that made hadamard_mux 2-5x faster (N = 2…40); at
# 2·16·64 elements it was 1.3-4x slower (N + 1 calls instead of 2); the two crossed near
# 2¹⁵.
RUNNING_SUM_ELEMENTS = 1 << 15


def to_float32(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """The tensors in float32 (None stays None): half-precision inputs compute in float32."""
    return tuple(None if t is None else t.float() for t in tensors)


def group_chunks(groups: int, bytes_per_group: int) -> list[slice]:
    """Slices of [0, groups), each at most ``CHUNK_BYTES`` of intermediates (one group at
    least); a single slice when everything fits, and while torch.compile traces."""
    per_chunk = max(1, CHUNK_BYTES // max(1, bytes_per_group))
    if per_chunk >= groups or torch.compiler.is_compiling():
        return [slice(0, groups)]
    return [slice(start, min(start + per_chunk, groups)) for start in range(0, groups, per_chunk)]
