"""Which kernel backends each public op has, and whether one can run on this CPU.

"triton" runs under the interpreter (TRITON_INTERPRET=1), "cuda" through the CPU
implementations of the compiled operators of muxkernels._C.
"""

from __future__ import annotations

import importlib

import torch

from muxkernels import _backend, _opdefs

CPU = torch.device("cpu")

# The op modules (the package re-exports functions of the same names).
demux_gather, embed_mux, hadamard_mux, mlp_demux, ortho_mux = (
    importlib.import_module(f"muxkernels.ops.{name}")
    for name in ("demux_gather", "embed_mux", "hadamard_mux", "mlp_demux", "ortho_mux")
)

KERNELS = {
    "hadamard_mux": hadamard_mux.KERNELS,
    "ortho_mux": ortho_mux.ORTHO_KERNELS,
    "lowrank_ortho_mux": ortho_mux.LOWRANK_KERNELS,
    "index_demux": demux_gather.KERNELS,
    "index_demux_logits": demux_gather.KERNELS,
    "index_pos_demux": demux_gather.KERNELS,
    "mlp_demux": mlp_demux.KERNELS,
    "embed_mux": embed_mux.KERNELS,
}
BACKENDS_OF = {
    "hadamard_mux": hadamard_mux.KERNEL_BACKENDS,
    "ortho_mux": ortho_mux.KERNEL_BACKENDS,
    "lowrank_ortho_mux": ortho_mux.KERNEL_BACKENDS,
    "index_demux": demux_gather.KERNEL_BACKENDS,
    "index_demux_logits": demux_gather.KERNEL_BACKENDS,
    "index_pos_demux": demux_gather.KERNEL_BACKENDS,
    "mlp_demux": mlp_demux.KERNEL_BACKENDS,
    "embed_mux": embed_mux.KERNEL_BACKENDS,
}


def runnable(op: str, backend: str, device: torch.device = CPU) -> bool:
    """Whether ``backend`` can run ``op`` on ``device`` tensors here."""
    return _backend.usable(backend, device)[0] and all(
        _opdefs.has_operator(name, backend) for name in KERNELS[op]
    )
