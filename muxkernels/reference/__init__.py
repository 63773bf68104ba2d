"""The plain-PyTorch reference of every muxkernels op: the CPU path and the oracle of the tests.

Written from docs/design.md's formulas, readable, and never changed to match a kernel.
Inputs are already grouped (B', N, …) and validated; the public functional API in
``muxkernels`` validates and groups before calling these.
"""

from .demultiplex import (
    GATHERS,
    Gather,
    demux_gather,
    index_demux,
    index_pos_demux,
    mlp_demux,
)
from .multiplex import (
    embed_mux,
    hadamard_mux,
    hadamard_mux_backward,
    lowrank_dense,
    lowrank_ortho_mux,
    ortho_mux,
    ortho_mux_backward,
)

__all__ = [
    "GATHERS",
    "Gather",
    "demux_gather",
    "embed_mux",
    "hadamard_mux",
    "hadamard_mux_backward",
    "index_demux",
    "index_pos_demux",
    "lowrank_dense",
    "lowrank_ortho_mux",
    "mlp_demux",
    "ortho_mux",
    "ortho_mux_backward",
]
