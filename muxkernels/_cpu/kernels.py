"""The cpu backend's compiled demuxes (csrc/cpu/index_demux.cpp), as autograd ops.

u[g,i,t] = LN(gelu(W · [p_i; h_t] + b)) (design §3; p_i = k_i for the index_pos demux,
§4) in one operator call forward (``muxkernels::index_demux_fwd_cpu`` or
``index_pos_demux_fwd_cpu``: both GEMMs and the fused gelu + LayerNorm pass) and one
backward (``*_bwd_cpu``), for float32 and float64 data whose parameters share its dtype.
Used by ``muxkernels.ops`` when ``runs_kernels`` holds. Without a gradient to record, the
forward operator runs alone (no autograd node: on a small input that costs more than the
kernel).
"""

from __future__ import annotations

import torch

from .. import _opdefs
from ..ops._precise import records_grad


class IndexDemux(torch.autograd.Function):
    """forward(hidden, weight, bias, ln_weight, ln_bias, num_instances, eps, gather, index)
    -> u; backward recomputes the row statistics from the saved GEMM terms a and c."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, ln_weight, ln_bias, n, eps, gather, index):
        u, a, c = _opdefs.kernel("index_demux_fwd", "cpu")(
            hidden, weight, bias, ln_weight, ln_bias, n, eps, gather, index
        )
        ctx.save_for_backward(hidden, weight, a, c, ln_weight, ln_bias, index)
        ctx.n, ctx.eps, ctx.gather = n, eps, gather
        return u

    @staticmethod
    def backward(ctx, grad_u):
        hidden, weight, a, c, ln_weight, ln_bias, index = ctx.saved_tensors
        grads = _opdefs.kernel("index_demux_bwd", "cpu")(
            grad_u.contiguous(), hidden, weight, a, c, ln_weight, ln_bias, ctx.n, ctx.eps,
            ctx.gather, index,
        )  # fmt: skip
        return (*grads, None, None, None, None)


def _contiguous(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.contiguous() for t in tensors)


def index_demux(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    num_instances: int,
    eps: float,
    gather: str,
    index: torch.Tensor | None,
) -> torch.Tensor:
    """u of the index demux (shapes as ``muxkernels.ops.index_demux``); int64 index."""
    params = _contiguous(hidden, weight, bias, ln_weight, ln_bias)
    if records_grad(*params):
        return IndexDemux.apply(*params, num_instances, eps, gather, index)
    u, _, _ = _opdefs.kernel("index_demux_fwd", "cpu")(*params, num_instances, eps, gather, index)
    return u


class IndexPosDemux(torch.autograd.Function):
    """forward(hidden, keys, weight, bias, ln_weight, ln_bias, eps, gather, index) -> u."""

    @staticmethod
    def forward(ctx, hidden, keys, weight, bias, ln_weight, ln_bias, eps, gather, index):
        u, a, c = _opdefs.kernel("index_pos_demux_fwd", "cpu")(
            hidden, keys, weight, bias, ln_weight, ln_bias, eps, gather, index
        )
        ctx.save_for_backward(hidden, keys, weight, a, c, ln_weight, ln_bias, index)
        ctx.eps, ctx.gather = eps, gather
        return u

    @staticmethod
    def backward(ctx, grad_u):
        hidden, keys, weight, a, c, ln_weight, ln_bias, index = ctx.saved_tensors
        grads = _opdefs.kernel("index_pos_demux_bwd", "cpu")(
            grad_u.contiguous(), hidden, keys, weight, a, c, ln_weight, ln_bias, ctx.eps,
            ctx.gather, index,
        )  # fmt: skip
        return (*grads, None, None, None)


def index_pos_demux(
    hidden: torch.Tensor,
    keys: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    gather: str,
    index: torch.Tensor | None,
) -> torch.Tensor:
    """u of the index_pos demux (shapes as ``muxkernels.ops.index_pos_demux``); int64 index."""
    params = _contiguous(hidden, keys, weight, bias, ln_weight, ln_bias)
    if records_grad(*params):
        return IndexPosDemux.apply(*params, eps, gather, index)
    u, _, _ = _opdefs.kernel("index_pos_demux_fwd", "cpu")(*params, eps, gather, index)
    return u
