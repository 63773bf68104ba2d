"""Hadamard multiplex: x[g,t,:] = (1/N) · Σ_i v[i,:] ⊙ E[g,i,t,:] (SPEC section 1).

Backends: ``reference`` (plain PyTorch autograd) and ``cuda`` (the operator
``muxkernels::hadamard_mux_fwd_cuda``, forward kernel in csrc/; its backward uses the
reference gradient formulas until the compiled backward lands).
"""

from __future__ import annotations

import torch

from .. import _backend, reference
from . import _validate

KERNEL_BACKENDS = ("cuda",)


class HadamardMux(torch.autograd.Function):
    """Autograd Function over the kernel operators of one backend.

    forward(embeddings (B', N, L, d), vectors (N, d), backend) -> x (B', L, d)
    backward: dE = (1/N) v ⊙ dx, and dv = (1/N) Σ_{g,t} E ⊙ dx when vectors need a grad.
    """

    @staticmethod
    def forward(ctx, embeddings: torch.Tensor, vectors: torch.Tensor, backend: str) -> torch.Tensor:
        embeddings, vectors = embeddings.contiguous(), vectors.contiguous()
        ctx.save_for_backward(embeddings, vectors)
        if backend == "cuda":
            return torch.ops.muxkernels.hadamard_mux_fwd_cuda(embeddings, vectors)
        raise NotImplementedError(f"hadamard_mux: no {backend!r} kernel")

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        embeddings, vectors = ctx.saved_tensors
        d_e, d_v = reference.hadamard_mux_backward(
            embeddings, vectors, grad_out, vectors_grad=ctx.needs_input_grad[1]
        )
        return d_e, d_v, None


def hadamard_mux(
    embeddings: torch.Tensor, vectors: torch.Tensor, *, backend: _backend.Backend = "auto"
) -> torch.Tensor:
    """Multiplex N inputs with vector transforms: x = (1/N) Σ_i v_i ⊙ E_i.

    Args:
        embeddings: (B, L, d) with B = B'·N, row g·N+i being instance i of group g;
            or grouped (B', N, L, d).
        vectors: (N, d) transform vectors (``gaussian_vectors``, ``binary_vectors`` or
            learned), in the embeddings' dtype or float32.
        backend: "auto", "reference", "triton" or "cuda".

    Returns:
        x of shape (B', L, d) in the embeddings' dtype (fp32 accumulation).
    """
    _validate.transform("vectors", vectors, embeddings, 2, "(N, d)")
    grouped = _validate.mux_input(embeddings, vectors.shape[0], vectors.shape[1])
    chosen = _backend.resolve("hadamard_mux", backend, grouped.device, KERNEL_BACKENDS)
    if chosen == "reference":
        return reference.hadamard_mux(grouped, vectors)
    return HadamardMux.apply(grouped, vectors, chosen)
