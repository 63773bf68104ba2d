"""The functional ops: validation, backend choice, and the autograd Functions of the kernels."""

from .demux_gather import DemuxGather, DemuxGatherProject
from .embed_mux import EmbedMux, embed_mux
from .hadamard_mux import HadamardMux, hadamard_mux
from .index_demux import index_demux, index_demux_logits
from .index_pos_demux import index_pos_demux
from .mlp_demux import MLPDemux, mlp_demux
from .ortho_mux import LowRankOrthoMux, OrthoMux, lowrank_ortho_mux, ortho_mux

__all__ = [
    "DemuxGather",
    "DemuxGatherProject",
    "EmbedMux",
    "HadamardMux",
    "LowRankOrthoMux",
    "MLPDemux",
    "OrthoMux",
    "embed_mux",
    "hadamard_mux",
    "index_demux",
    "index_demux_logits",
    "index_pos_demux",
    "lowrank_ortho_mux",
    "mlp_demux",
    "ortho_mux",
]
