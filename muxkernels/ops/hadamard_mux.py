"""Hadamard multiplex: x[g,t,:] = (1/N) · Σ_i v[i,:] ⊙ E[g,i,t,:] (design §1).

Backends: ``reference`` (plain PyTorch autograd), ``cuda``, ``triton`` and ``cpu`` (the
operators ``muxkernels::hadamard_mux_{fwd,bwd}_<backend>``, called by :class:`HadamardMux`;
the cpu backend's for float32 and float64 data where ``muxkernels._C_cpu`` is built, its
ATen form otherwise).
"""

from __future__ import annotations

import torch

from .. import _backend, _cpu, _opdefs, reference
from . import _validate
from ._precise import records_grad

KERNEL_BACKENDS = ("cuda", "triton", "cpu")
KERNELS = ("hadamard_mux_fwd", "hadamard_mux_bwd")


class HadamardMux(torch.autograd.Function):
    """Autograd Function over the kernel operators of one backend.

    forward(embeddings (B', N, L, d), vectors (N, d), backend) -> x (B', L, d)
    backward: dE = (1/N) v ⊙ dx, and dv = (1/N) Σ_{g,t} E ⊙ dx when vectors need a grad,
    both from one ``hadamard_mux_bwd`` call.
    """

    @staticmethod
    def forward(ctx, embeddings: torch.Tensor, vectors: torch.Tensor, backend: str) -> torch.Tensor:
        embeddings, vectors = embeddings.contiguous(), vectors.contiguous()
        ctx.save_for_backward(embeddings, vectors)
        ctx.backend = backend
        return _opdefs.kernel("hadamard_mux_fwd", backend)(embeddings, vectors)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        embeddings, vectors = ctx.saved_tensors
        vectors_grad = ctx.needs_input_grad[1]
        d_e, d_v = _opdefs.kernel("hadamard_mux_bwd", ctx.backend)(
            grad_out.contiguous(), embeddings, vectors, vectors_grad
        )
        return d_e, (d_v if vectors_grad else None), None


def hadamard_mux(
    embeddings: torch.Tensor, vectors: torch.Tensor, *, backend: _backend.Backend = "auto"
) -> torch.Tensor:
    """Multiplex N inputs with vector transforms: x = (1/N) Σ_i v_i ⊙ E_i.

    Args:
        embeddings: (B, L, d) with B = B'·N, row g·N+i being instance i of group g;
            or grouped (B', N, L, d).
        vectors: (N, d) transform vectors (``gaussian_vectors``, ``binary_vectors`` or
            learned), in the embeddings' dtype or float32.
        backend: "auto", "reference", "cpu", "triton" or "cuda".

    Returns:
        x of shape (B', L, d) in the embeddings' dtype (fp32 accumulation).
    """
    _validate.transform("vectors", vectors, embeddings, 2, "(N, d)")
    grouped = _validate.mux_input(embeddings, vectors.shape[0], vectors.shape[1])
    chosen = _backend.resolve("hadamard_mux", backend, grouped.device, KERNEL_BACKENDS, KERNELS)
    if chosen == "reference":
        return reference.hadamard_mux(grouped, vectors)
    if chosen == "cpu":
        if not _cpu.runs_kernels(grouped):
            return _cpu.hadamard_mux(grouped, vectors)
        # the vectors share the data's dtype (float32 or float64: checked above)
        grouped, vectors = grouped.contiguous(), vectors.contiguous()
        if not records_grad(grouped, vectors):  # no autograd node: it costs more than the op
            return _opdefs.kernel("hadamard_mux_fwd", "cpu")(grouped, vectors)
    return HadamardMux.apply(grouped, vectors, chosen)
