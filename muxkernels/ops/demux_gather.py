"""The demultiplex core shared by the index and index_pos demux: u = LN(gelu(a[g,i] + c[g,t])).

a (Ga, N, d) is the per-instance term (Ga = B', or 1 when it is the same for every group),
c (B', L', d) the per-position term, both already projected by the small GEMMs of the op
that calls this. Three gathers (design §3): "token" (B', N, L', d), "sequence" at one
position (B', N, d), "selected" with one instance index[g,t] per position (B', L', d).
:class:`DemuxGather` runs the fused kernel of one backend (``demux_gather_{fwd,bwd}``);
:class:`DemuxGatherProject` also applies a small output projection (K <=
``_opdefs.MAX_PROJECTION`` columns, e.g. token classes) inside the kernel, so u is never
written in the forward pass.
"""

from __future__ import annotations

import torch

from .. import _opdefs
from ..reference._common import compute_dtype
from ._precise import records_grad

KERNEL_BACKENDS = ("cuda", "triton", "cpu")
KERNELS = ("demux_gather_fwd", "demux_gather_bwd")
PROJECT_KERNEL = "demux_project_fwd"
# auto's order for a demux with a fusable projection: the backend with the fused kernel
# first, since never writing u saves more than any demux kernel alone can
PROJECT_BACKENDS = ("triton", "cuda", "cpu")


def _gather_args(ctx) -> tuple:
    """(a, c, ln_weight, ln_bias, eps, gather, index, sequence_position) saved by forward."""
    a, c, ln_weight, ln_bias, index = ctx.saved_tensors[:5]
    return a, c, ln_weight, ln_bias, ctx.eps, ctx.gather, index, ctx.position


def _save(ctx, a, c, ln_weight, ln_bias, eps, gather, index, position, backend, *more) -> None:
    ctx.save_for_backward(a, c, ln_weight, ln_bias, index, *more)
    ctx.eps, ctx.gather, ctx.position, ctx.backend = eps, gather, position, backend


def demux_gather(
    a: torch.Tensor,
    c: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    gather: str,
    index: torch.Tensor | None,
    sequence_position: int,
    backend: str,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """:class:`DemuxGather`, or its forward operator alone when no gradient is recorded (an
    autograd node costs more than the whole kernel on a small CPU input)."""
    args = (a, c, ln_weight, ln_bias, eps, gather, index, sequence_position)
    if records_grad(a, c, ln_weight, ln_bias):
        return DemuxGather.apply(*args, backend, out_dtype)
    return _opdefs.kernel("demux_gather_fwd", backend)(
        a.contiguous(), c.contiguous(), ln_weight.contiguous(), ln_bias.contiguous(),
        *args[4:], out_dtype,
    )  # fmt: skip


class DemuxGather(torch.autograd.Function):
    """forward(a, c, ln_weight, ln_bias, eps, gather, index, sequence_position, backend,
    out_dtype) -> u.

    u[g,i,t] = LN(gelu(a[g,i] + c[g,t])) with exact gelu, gathered by ``gather``, in
    out_dtype (the data's; a and c are float32 for half data). backward recomputes the
    activations from a and c and gives da, dc, dγ, dβ in their tensors' dtypes.
    """

    @staticmethod
    def forward(
        ctx,
        a: torch.Tensor,
        c: torch.Tensor,
        ln_weight: torch.Tensor,
        ln_bias: torch.Tensor,
        eps: float,
        gather: str,
        index: torch.Tensor | None,
        sequence_position: int,
        backend: str,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        args = (a.contiguous(), c.contiguous(), ln_weight.contiguous(), ln_bias.contiguous())
        _save(ctx, *args, eps, gather, index, sequence_position, backend)
        return _opdefs.kernel("demux_gather_fwd", backend)(
            *args, eps, gather, index, sequence_position, out_dtype
        )

    @staticmethod
    def backward(ctx, grad_u: torch.Tensor):
        d_a, d_c, d_w, d_b = _opdefs.kernel("demux_gather_bwd", ctx.backend)(
            grad_u.contiguous(), *_gather_args(ctx)
        )
        return d_a, d_c, d_w, d_b, None, None, None, None, None, None


class DemuxGatherProject(torch.autograd.Function):
    """forward(a, c, ln_weight, ln_bias, proj_weight, proj_bias, eps, gather, index,
    sequence_position, backend, out_dtype) -> logits = u @ proj_weightᵀ + proj_bias.

    The projection happens in the ``demux_project_fwd`` kernel of ``backend`` (K <= 64), so
    u is never written; logits are in out_dtype. backward recomputes u once, in the compute
    dtype (float32 for half data), then gives the projection's gradients and da, dc, dγ, dβ
    through ``demux_gather_bwd``.
    """

    @staticmethod
    def forward(
        ctx,
        a: torch.Tensor,
        c: torch.Tensor,
        ln_weight: torch.Tensor,
        ln_bias: torch.Tensor,
        proj_weight: torch.Tensor,
        proj_bias: torch.Tensor | None,
        eps: float,
        gather: str,
        index: torch.Tensor | None,
        sequence_position: int,
        backend: str,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        args = (a.contiguous(), c.contiguous(), ln_weight.contiguous(), ln_bias.contiguous())
        _save(ctx, *args, eps, gather, index, sequence_position, backend, proj_weight, proj_bias)
        return _opdefs.kernel(PROJECT_KERNEL, backend)(
            *args, eps, gather, index, sequence_position, proj_weight.contiguous(), proj_bias,
            out_dtype,
        )  # fmt: skip

    @staticmethod
    def backward(ctx, grad_logits: torch.Tensor):
        proj_weight, proj_bias = ctx.saved_tensors[5:]
        args = _gather_args(ctx)
        ct = compute_dtype(*args[:4], proj_weight)  # fp32 (fp64 for float64)
        u = _opdefs.kernel("demux_gather_fwd", ctx.backend)(*args, ct)
        rows_grad = grad_logits.reshape(-1, proj_weight.shape[0]).to(ct)
        d_proj_weight = (rows_grad.T @ u.reshape(-1, u.shape[-1])).to(proj_weight.dtype)
        d_proj_bias = None if proj_bias is None else rows_grad.sum(0).to(proj_bias.dtype)
        grad_u = (grad_logits.to(ct) @ proj_weight.to(ct)).contiguous()
        d_a, d_c, d_w, d_b = _opdefs.kernel("demux_gather_bwd", ctx.backend)(grad_u, *args)
        return (d_a, d_c, d_w, d_b, d_proj_weight, d_proj_bias, *(None,) * 6)
