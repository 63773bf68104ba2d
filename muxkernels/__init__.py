"""muxkernels: fused kernels for data multiplexing (DataMUX).

Functional ops (each takes ``backend=``: "auto", "reference", "cpu", "triton", "cuda"):
``embed_mux``, ``hadamard_mux``, ``ortho_mux``, ``lowrank_ortho_mux``, ``index_demux``,
``index_demux_logits``, ``index_pos_demux``, ``mlp_demux``. Each differentiable op has a
public ``torch.autograd.Function`` (``HadamardMux``, ``OrthoMux``, ``LowRankOrthoMux``,
``DemuxGather``, ``DemuxGatherProject``, ``MLPDemux``, ``EmbedMux``) over the kernel
operators ``muxkernels::<op>_{fwd,bwd}_<backend>`` (contract: ``muxkernels._opdefs``).
Layers live in ``muxkernels.nn``, the plain-PyTorch oracle in ``muxkernels.reference``,
transform initialisers in ``muxkernels.transforms``.
"""

from . import nn, reference, transforms
from ._backend import BACKENDS, ENV_VAR
from ._extension import cuda_kernels_available
from .ops import (
    DemuxGather,
    DemuxGatherProject,
    EmbedMux,
    HadamardMux,
    LowRankOrthoMux,
    MLPDemux,
    OrthoMux,
    embed_mux,
    hadamard_mux,
    index_demux,
    index_demux_logits,
    index_pos_demux,
    lowrank_ortho_mux,
    mlp_demux,
    ortho_mux,
)
from .prefix import (
    ROBERTA_CLS_ID,
    ROBERTA_FILLER_ID,
    add_index_prefix,
    index_prefix,
    pad_batch,
    roberta_index_ids,
)

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "ROBERTA_CLS_ID",
    "ROBERTA_FILLER_ID",
    "DemuxGather",
    "DemuxGatherProject",
    "EmbedMux",
    "HadamardMux",
    "LowRankOrthoMux",
    "MLPDemux",
    "OrthoMux",
    "__version__",
    "add_index_prefix",
    "cuda_kernels_available",
    "embed_mux",
    "hadamard_mux",
    "index_demux",
    "index_demux_logits",
    "index_pos_demux",
    "index_prefix",
    "lowrank_ortho_mux",
    "mlp_demux",
    "nn",
    "ortho_mux",
    "pad_batch",
    "reference",
    "roberta_index_ids",
    "transforms",
]
