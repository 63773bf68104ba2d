"""The cpu backend's compiled kernels (csrc/cpu/), as autograd ops.

- The demuxes, u[g,i,t] = LN(gelu(W · [p_i; h_t] + b)) (design §3; p_i = k_i for the
  index_pos demux, §4): one operator call forward (``muxkernels::index_demux_fwd_cpu`` or
  ``index_pos_demux_fwd_cpu``: both GEMMs and the fused gelu + LayerNorm pass) and one
  backward (``*_bwd_cpu``).
- The fused front end (design §1), x = LN((1/N) Σ_i v_i ⊙ LN(word + pos + type)_i + pos' +
  type'): ``embed_mux_fwd_cpu`` and ``embed_mux_bwd_cpu``, which recomputes from the ids.
- The image multiplexer's convolution modes (design §7), x = Σ_i conv(E_i, rop_i):
  ``conv_mux_fwd_cpu`` and ``conv_mux_bwd_cpu``.

For float32 and float64 data whose parameters share its dtype; used by ``muxkernels.ops``
when ``runs_kernels`` holds. Without a gradient to record, the forward operator runs alone
(no autograd node: on a small input that costs more than the kernel).
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


class EmbedMux(torch.autograd.Function):
    """forward(input_ids, word, position, token_type, ln_weight, ln_bias, vectors,
    position_ids, token_type_ids, mixed_position_ids, mixed_token_type_ids, eps) -> x;
    backward recomputes every row from the ids (nothing but the inputs is saved)."""

    @staticmethod
    def forward(ctx, ids, word, pos, typ, ln_weight, ln_bias, vectors, pids, tids, mpids,
                mtids, eps):  # fmt: skip
        ctx.save_for_backward(ids, word, pos, typ, ln_weight, ln_bias, vectors, pids, tids,
                              mpids, mtids)  # fmt: skip
        ctx.eps = eps
        return _opdefs.kernel("embed_mux_fwd", "cpu")(
            ids, word, pos, typ, ln_weight, ln_bias, vectors, pids, tids, mpids, mtids, eps
        )

    @staticmethod
    def backward(ctx, grad_x):
        grads = _opdefs.kernel("embed_mux_bwd", "cpu")(
            grad_x.contiguous(), *ctx.saved_tensors, ctx.eps
        )
        return (None, *grads, None, None, None, None, None)


def embed_mux(
    input_ids: torch.Tensor,
    word_embeddings: torch.Tensor,
    position_embeddings: torch.Tensor,
    token_type_embeddings: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    vectors: torch.Tensor,
    position_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    mixed_position_ids: torch.Tensor,
    mixed_token_type_ids: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """x of the fused front end (shapes as ``muxkernels.ops.embed_mux``): int64 ids of
    shape (B', N, L) and (B', L), expanded views included."""
    params = _contiguous(word_embeddings, position_embeddings, token_type_embeddings,
                         ln_weight, ln_bias, vectors)  # fmt: skip
    ids = (input_ids, position_ids, token_type_ids, mixed_position_ids, mixed_token_type_ids)
    if records_grad(*params):
        return EmbedMux.apply(ids[0], *params, *ids[1:], eps)
    return _opdefs.kernel("embed_mux_fwd", "cpu")(ids[0], *params, *ids[1:], eps)


class ConvMux(torch.autograd.Function):
    """forward(images (B', N, C, H, W), rop (N, C_out, C, K, K)) -> x (B', C_out, H, W)."""

    @staticmethod
    def forward(ctx, images, rop):
        ctx.save_for_backward(images, rop)
        return _opdefs.kernel("conv_mux_fwd", "cpu")(images, rop)

    @staticmethod
    def backward(ctx, grad_out):
        images, rop = ctx.saved_tensors
        d_images, d_rop = _opdefs.kernel("conv_mux_bwd", "cpu")(
            grad_out.contiguous(), images, rop, ctx.needs_input_grad[1]
        )
        return d_images, d_rop if ctx.needs_input_grad[1] else None


def conv_mux(images: torch.Tensor, rop: torch.Tensor) -> torch.Tensor:
    """x[g, o] = Σ_i Σ_c conv(E[g, i, c], rop[i, o, c]) (K×K kernels, zero padding K // 2)
    for images (B', N, C, H, W) and rop (N, C_out, C, K, K) of one dtype."""
    images, rop = _contiguous(images, rop)
    if records_grad(images, rop):
        return ConvMux.apply(images, rop)
    return _opdefs.kernel("conv_mux_fwd", "cpu")(images, rop)
