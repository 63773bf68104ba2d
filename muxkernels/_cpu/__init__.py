"""The ``cpu`` backend: every op in plain PyTorch, arranged for speed on CPU tensors.

The reference (``muxkernels.reference``) is written for reading and stays the oracle; this
backend computes the same formulas (docs/design.md) the way a CPU runs them fastest, and is
tested against the reference like the kernel backends:

- float32 and float64 data are computed in their own dtype (no copies); float16 and
  bfloat16 data in float32, as every backend accumulates;
- each gather of a table is one ``F.embedding`` call, and ids that are the same for every
  row (positions, token types) are looked up once and broadcast;
- tensors of B'·N·L·d elements are built a few groups at a time (``group_chunks``), so the
  chain of elementwise steps that follows runs in cache instead of main memory;
- sums over the N instances of a large input run one instance at a time into the sum,
  each instance read once, never writing a (B', N, L, d) product;
- the demultiplexers use the split form of design §3 (two d×d GEMMs, never the 2d
  concatenation), and the MLP branches one stacked GEMM for small inputs, the published
  branch-by-branch loop (each branch in cache) for large ones.

The index and index_pos demuxes, the hadamard and low-rank multiplexers, the fused front
end and the image multiplexer's convolutions have compiled kernels besides
(csrc/cpu/, the ``muxkernels::<op>_{fwd,bwd}_cpu`` operators of ``muxkernels._C_cpu``): one
operator call each way, each row computed in cache, where ATen takes a dozen calls and
their intermediates. Where they are built (``runs_kernels``), ``muxkernels.ops`` runs them
like the GPU backends run theirs (``kernels``); the functions here are the ATen form, used
without them and for half data. Everything else is ATen ops, which autograd differentiates and
torch.compile traces as they are.
"""

import torch

from . import kernels
from ._chunks import OWN_DTYPES
from ._compiled import available as _kernels_available
from .demultiplex import index_demux, index_pos_demux, mlp_demux, projects_in_chunks
from .multiplex import embed_mux, hadamard_mux, lowrank_ortho_mux, ortho_mux


def runs_kernels(data: torch.Tensor) -> bool:
    """Whether the cpu backend runs its compiled kernels on ``data``: float32 or
    float64 (half data is computed in float32 by the ATen form) and the kernels built."""
    return data.dtype in OWN_DTYPES and _kernels_available()


__all__ = [
    "embed_mux",
    "hadamard_mux",
    "index_demux",
    "index_pos_demux",
    "kernels",
    "lowrank_ortho_mux",
    "mlp_demux",
    "ortho_mux",
    "projects_in_chunks",
    "runs_kernels",
]
