"""MLP demultiplex (design §4): N branches u_i = LN_i(gelu(W_i h + b_i)).

One GEMM with the stacked (N·d × d) weight (torch), then gelu and a per-branch LayerNorm
in one fused kernel (:class:`MLPDemux`).
"""

from __future__ import annotations

import torch

from .. import _backend, _cpu, _opdefs, reference
from . import _validate
from ._precise import Linear

KERNEL_BACKENDS = ("triton", "cpu")
KERNELS = ("mlp_demux_fwd", "mlp_demux_bwd")


class MLPDemux(torch.autograd.Function):
    """forward(pre (B', L, N·d), bias (N, d), ln_weight (N, d), ln_bias (N, d), eps, backend,
    out_dtype) -> u (B', N, L, d) in out_dtype, u[g,i,t] = LN_i(gelu(pre[g,t,i·d:(i+1)·d] + b_i)).

    backward recomputes from pre and gives d_pre, d_bias, d_ln_weight, d_ln_bias.
    """

    @staticmethod
    def forward(
        ctx,
        pre: torch.Tensor,
        bias: torch.Tensor,
        ln_weight: torch.Tensor,
        ln_bias: torch.Tensor,
        eps: float,
        backend: str,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        args = tuple(t.contiguous() for t in (pre, bias, ln_weight, ln_bias))
        ctx.save_for_backward(*args)
        ctx.eps, ctx.backend = eps, backend
        return _opdefs.kernel("mlp_demux_fwd", backend)(*args, eps, out_dtype)

    @staticmethod
    def backward(ctx, grad_u: torch.Tensor):
        grads = _opdefs.kernel("mlp_demux_bwd", ctx.backend)(
            grad_u.contiguous(), *ctx.saved_tensors, ctx.eps
        )
        return (*grads, None, None, None)


def mlp_demux(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    *,
    eps: float = 1e-5,
    backend: _backend.Backend = "auto",
) -> torch.Tensor:
    """Demultiplex with N independent MLP branches.

    Args:
        hidden: (B', L, d) encoder output.
        weight: (N, d, d) stacked ``dense_{i}.weight``; bias: (N, d) stacked ``dense_{i}.bias``.
        ln_weight, ln_bias: (N, d) stacked ``layer_norm_{i}`` parameters; eps: LayerNorm eps.
        backend: "auto", "reference", "cpu", "triton" or "cuda".

    Returns:
        u of shape (B', N, L, d) in the hidden dtype.
    """
    _validate.demux_hidden(hidden, 1, "mlp demux")
    d = hidden.shape[-1]
    _validate.transform("weight", weight, hidden, 3, "(N, d, d)", "hidden")
    n = weight.shape[0]
    _validate.demux_params(
        hidden,
        {
            "weight": (weight, (n, d, d)),
            "bias": (bias, (n, d)),
            "ln_weight": (ln_weight, (n, d)),
            "ln_bias": (ln_bias, (n, d)),
        },
    )
    eps = _validate.eps_arg(eps)
    chosen = _backend.resolve("mlp_demux", backend, hidden.device, KERNEL_BACKENDS, KERNELS)
    if chosen == "reference":
        return reference.mlp_demux(hidden, weight, bias, ln_weight, ln_bias, eps)
    if chosen == "cpu":
        return _cpu.mlp_demux(hidden, weight, bias, ln_weight, ln_bias, eps)
    pre = Linear.apply(hidden, weight.reshape(n * d, d), None)  # float32 for half data
    return MLPDemux.apply(pre, bias, ln_weight, ln_bias, eps, chosen, hidden.dtype)
