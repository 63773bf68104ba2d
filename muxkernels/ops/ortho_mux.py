"""Matrix multiplex (design §1): dense ``ortho`` and factored ``ortho_lowrank``.

ortho:          x[g,t,:] = N^(-1/2) · Σ_i P[i] @ E[g,i,t,:]
ortho_lowrank:  P[i] = U[:, S_i] @ H[:, S_i]ᵀ, computed as N^(-1/2) · U · concat_i(H[:, S_i]ᵀ E_i)
Backends: ``reference``, ``cpu`` and ``triton`` (GEMM kernels that read E in place, no
permute copy). The cpu backend runs ortho as ATen GEMMs and ortho_lowrank as its compiled
operators (BLAS GEMMs on blocks of E and H in place, csrc/cpu/lowrank_ortho_mux.cpp) for
float32 and float64 data where they are built, as ATen GEMMs otherwise.
"""

from __future__ import annotations

import torch

from .. import _backend, _cpu, _opdefs, reference
from . import _validate
from ._precise import records_grad

KERNEL_BACKENDS = ("triton", "cpu")
ORTHO_KERNELS = ("ortho_mux_fwd", "ortho_mux_bwd")
LOWRANK_KERNELS = ("lowrank_ortho_mux_fwd", "lowrank_ortho_mux_bwd")


class OrthoMux(torch.autograd.Function):
    """forward(embeddings (B', N, L, d), matrices (N, d, d), backend) -> x (B', L, d).

    backward: dE[g,i,t] = N^(-1/2) P[i]ᵀ dx[g,t]; dP[i] = N^(-1/2) Σ_{g,t} dx[g,t] E[g,i,t]ᵀ
    when the matrices need a grad.
    """

    @staticmethod
    def forward(ctx, embeddings: torch.Tensor, matrices: torch.Tensor, backend: str):
        embeddings, matrices = embeddings.contiguous(), matrices.contiguous()
        ctx.save_for_backward(embeddings, matrices)
        ctx.backend = backend
        return _opdefs.kernel("ortho_mux_fwd", backend)(embeddings, matrices)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        embeddings, matrices = ctx.saved_tensors
        matrices_grad = ctx.needs_input_grad[1]
        d_e, d_p = _opdefs.kernel("ortho_mux_bwd", ctx.backend)(
            grad_out.contiguous(), embeddings, matrices, matrices_grad
        )
        return d_e, (d_p if matrices_grad else None), None


class LowRankOrthoMux(torch.autograd.Function):
    """forward(embeddings (B', N, L, d), u (d, d), h (d, d), backend) -> x (B', L, d).

    x = N^(-1/2) U[:, :N·c] concat_i(H[:, S_i]ᵀ E_i) with c = d // N; backward gives dE and,
    when either factor needs a grad, dU and dH (zero in the columns past N·c).
    """

    @staticmethod
    def forward(ctx, embeddings: torch.Tensor, u: torch.Tensor, h: torch.Tensor, backend: str):
        embeddings = embeddings.contiguous()
        if backend != "cpu":  # the cpu operators read either memory order of U and H
            u, h = u.contiguous(), h.contiguous()
        ctx.save_for_backward(embeddings, u, h)
        ctx.backend = backend
        return _opdefs.kernel("lowrank_ortho_mux_fwd", backend)(embeddings, u, h)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        embeddings, u, h = ctx.saved_tensors
        factors_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        d_e, d_u, d_h = _opdefs.kernel("lowrank_ortho_mux_bwd", ctx.backend)(
            grad_out.contiguous(), embeddings, u, h, factors_grad
        )
        return (
            d_e,
            d_u if ctx.needs_input_grad[1] else None,
            d_h if ctx.needs_input_grad[2] else None,
            None,
        )


def ortho_mux(
    embeddings: torch.Tensor, matrices: torch.Tensor, *, backend: _backend.Backend = "auto"
) -> torch.Tensor:
    """Multiplex N inputs with matrix transforms: x = N^(-1/2) Σ_i P[i] @ E_i.

    Args:
        embeddings: (B, L, d) with B = B'·N, or grouped (B', N, L, d).
        matrices: (N, d, d), e.g. ``ortho_matrices`` (Haar-random orthogonal).
        backend: "auto", "reference", "cpu", "triton" or "cuda".

    Returns:
        x of shape (B', L, d) in the embeddings' dtype.
    """
    _validate.transform("matrices", matrices, embeddings, 3, "(N, d, d)")
    n, d, d2 = matrices.shape
    if d != d2:
        raise ValueError(f"matrices must be square (N, d, d), got shape {tuple(matrices.shape)}")
    grouped = _validate.mux_input(embeddings, n, d)
    chosen = _backend.resolve("ortho_mux", backend, grouped.device, KERNEL_BACKENDS, ORTHO_KERNELS)
    if chosen == "reference":
        return reference.ortho_mux(grouped, matrices)
    if chosen == "cpu":
        return _cpu.ortho_mux(grouped, matrices)
    return OrthoMux.apply(grouped, matrices, chosen)


def lowrank_ortho_mux(
    embeddings: torch.Tensor,
    u: torch.Tensor,
    h: torch.Tensor,
    *,
    num_instances: int | None = None,
    backend: _backend.Backend = "auto",
) -> torch.Tensor:
    """Multiplex with low-rank orthogonal transforms, in factored form (two d² GEMMs).

    Args:
        embeddings: grouped (B', N, L, d), or (B, L, d) together with ``num_instances``.
        u, h: (d, d) orthogonal factors (``lowrank_factors``); block S_i of d // N columns
            belongs to instance i.
        num_instances: N; required for (B, L, d) input, checked against grouped input.
        backend: "auto", "reference", "cpu", "triton" or "cuda".

    Returns:
        x of shape (B', L, d) in the embeddings' dtype.
    """
    _validate.transform("u", u, embeddings, 2, "(d, d)")
    _validate.transform("h", h, embeddings, 2, "(d, d)")
    d = u.shape[0]
    for name, t in (("u", u), ("h", h)):
        if tuple(t.shape) != (d, d):
            raise ValueError(f"{name} must be square (d, d) with d={d}, got {tuple(t.shape)}")
    if num_instances is None:
        if embeddings.dim() != 4:
            raise ValueError(
                "lowrank_ortho_mux needs num_instances for (B, L, d) embeddings, got shape "
                f"{tuple(embeddings.shape)}"
            )
        num_instances = embeddings.shape[1]
    grouped = _validate.mux_input(embeddings, num_instances, d)
    if d < grouped.shape[1]:
        raise ValueError(f"low-rank transforms need d >= N, got d={d} and N={grouped.shape[1]}")
    chosen = _backend.resolve(
        "lowrank_ortho_mux", backend, grouped.device, KERNEL_BACKENDS, LOWRANK_KERNELS
    )
    if chosen == "reference":
        return reference.lowrank_ortho_mux(grouped, u, h)
    if chosen == "cpu":
        if not _cpu.runs_kernels(grouped):
            return _cpu.lowrank_ortho_mux(grouped, u, h)
        grouped = grouped.contiguous()  # u and h share its dtype (float32 or float64)
        if not records_grad(grouped, u, h):  # no autograd node: it costs more than the op
            return _opdefs.kernel("lowrank_ortho_mux_fwd", "cpu")(grouped, u, h)
    return LowRankOrthoMux.apply(grouped, u, h, chosen)
