"""The functional ops: validation, backend choice, and the autograd Functions of the kernels."""

from .embed_mux import embed_mux
from .hadamard_mux import HadamardMux, hadamard_mux
from .index_demux import index_demux
from .index_pos_demux import index_pos_demux
from .mlp_demux import mlp_demux
from .ortho_mux import lowrank_ortho_mux, ortho_mux

__all__ = [
    "HadamardMux",
    "embed_mux",
    "hadamard_mux",
    "index_demux",
    "index_pos_demux",
    "lowrank_ortho_mux",
    "mlp_demux",
    "ortho_mux",
]
