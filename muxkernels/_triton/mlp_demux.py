"""Triton kernels for the MLP demultiplexer's activation (docs/design.md §4).

Operators ``mlp_demux_fwd`` and ``mlp_demux_bwd`` (schemas in ``muxkernels._opdefs``).
pre (B', L, N·d) = h @ [W_1; …; W_N]ᵀ is one GEMM done outside; branch i reads the
column slice i·d … (i+1)·d of each row:
    u[g,i,t] = LN_i(gelu(pre[g,t,i·d:(i+1)·d] + b_i)),   u: (B', N, L, d)
with per-branch bias and LayerNorm affine (N, d). A program handles one branch i and
a block of rows q = g·L + t, so the branch's parameters are loaded once per program.
Backward recomputes from pre; d_bias, dγ, dβ are per-program partial sums added up by
torch (deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._host import (
    FLOATS,
    acc_dtype,
    check_contiguous,
    check_grad,
    outputs,
    tl_dtype,
    zeroed,
)
from ._math import (
    check_width,
    gelu_layer_norm,
    gelu_layer_norm_bwd,
    load_broadcast,
    load_rows,
    program_cap,
    row_tiles,
    store_column_sums,
    store_rows,
)
from ._registry import triton_op


@triton.jit
def _mlp_fwd_kernel(
    pre_ptr, bias_ptr, w_ptr, b_ptr, u_ptr,
    Q, N, L, D, eps,
    BLOCK_R: tl.constexpr, BLOCK_LO: tl.constexpr, BLOCK_HI: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """u[g,i,t] for branch i = program_id(1) and BLOCK_R rows q = g·L + t."""
    q = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    i = tl.program_id(1).to(tl.int64)
    row_mask = q < Q
    lo = tl.arange(0, BLOCK_LO)
    hi = BLOCK_LO + tl.arange(0, BLOCK_HI)
    hi_mask = hi < D
    p_lo, p_hi = load_rows(pre_ptr, q * N + i, row_mask, lo, hi, hi_mask, D, ACC)
    bias_lo, bias_hi = load_broadcast(bias_ptr + i * D, lo, hi, hi_mask, BLOCK_R, ACC)
    w_lo, w_hi = load_broadcast(w_ptr + i * D, lo, hi, hi_mask, BLOCK_R, ACC)
    b_lo, b_hi = load_broadcast(b_ptr + i * D, lo, hi, hi_mask, BLOCK_R, ACC)
    u_lo, u_hi = gelu_layer_norm(
        p_lo + bias_lo, p_hi + bias_hi, hi_mask, w_lo, w_hi, b_lo, b_hi, D, eps
    )
    u_rows = ((q // L) * N + i) * L + q % L
    store_rows(u_ptr, u_rows, row_mask, lo, hi, hi_mask, D, u_lo, u_hi)


@triton.jit
def _mlp_bwd_kernel(
    du_ptr, pre_ptr, bias_ptr, w_ptr, dpre_ptr, dbias_part_ptr, dw_part_ptr, db_part_ptr,
    Q, N, L, D, n_tiles, eps,
    BLOCK_R: tl.constexpr, BLOCK_LO: tl.constexpr, BLOCK_HI: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Branch i = program_id(1); program p = program_id(0) loops over row tiles p, p + P, ….

    d_pre[g,t,i] = dz; partials at (p, i): Σ dz (d_bias), Σ du ⊙ x̂ (dγ), Σ du (dβ).
    """
    pid = tl.program_id(0)
    i = tl.program_id(1).to(tl.int64)
    lo = tl.arange(0, BLOCK_LO)
    hi = BLOCK_LO + tl.arange(0, BLOCK_HI)
    hi_mask = hi < D
    dbias_lo = tl.zeros([BLOCK_R, BLOCK_LO], ACC)
    dbias_hi = tl.zeros([BLOCK_R, BLOCK_HI], ACC)
    dw_lo = tl.zeros([BLOCK_R, BLOCK_LO], ACC)
    dw_hi = tl.zeros([BLOCK_R, BLOCK_HI], ACC)
    db_lo = tl.zeros([BLOCK_R, BLOCK_LO], ACC)
    db_hi = tl.zeros([BLOCK_R, BLOCK_HI], ACC)
    for tile in range(pid, n_tiles, tl.num_programs(0)):
        q = (tile * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        row_mask = q < Q
        p_lo, p_hi = load_rows(pre_ptr, q * N + i, row_mask, lo, hi, hi_mask, D, ACC)
        u_rows = ((q // L) * N + i) * L + q % L
        du_lo, du_hi = load_rows(du_ptr, u_rows, row_mask, lo, hi, hi_mask, D, ACC)
        bias_lo, bias_hi = load_broadcast(bias_ptr + i * D, lo, hi, hi_mask, BLOCK_R, ACC)
        w_lo, w_hi = load_broadcast(w_ptr + i * D, lo, hi, hi_mask, BLOCK_R, ACC)
        dz_lo, dz_hi, x_lo, x_hi = gelu_layer_norm_bwd(
            p_lo + bias_lo, p_hi + bias_hi, du_lo, du_hi, hi_mask, w_lo, w_hi, D, eps
        )
        store_rows(dpre_ptr, q * N + i, row_mask, lo, hi, hi_mask, D, dz_lo, dz_hi)
        dbias_lo += dz_lo
        dbias_hi += dz_hi
        dw_lo += du_lo * x_lo
        dw_hi += du_hi * x_hi
        db_lo += du_lo
        db_hi += du_hi
    part = (pid.to(tl.int64) * N + i) * D
    store_column_sums(dbias_part_ptr + part, lo, hi, hi_mask, dbias_lo, dbias_hi)
    store_column_sums(dw_part_ptr + part, lo, hi, hi_mask, dw_lo, dw_hi)
    store_column_sums(db_part_ptr + part, lo, hi, hi_mask, db_lo, db_hi)


def _check_args(
    pre: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor
) -> tuple[int, int]:
    """What the kernels rely on: pre (B', L, N·d), parameters (N, d), float, contiguous.

    Returns (N, d).
    """
    if bias.dim() != 2:
        raise ValueError(f"bias must be (N, d), got shape {tuple(bias.shape)}")
    n, d = bias.shape
    if pre.dim() != 3 or pre.shape[2] != n * d:
        raise ValueError(f"pre must be (B', L, N·d) with N·d={n * d}, got {tuple(pre.shape)}")
    for name, t in (("pre", pre), ("bias", bias), ("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        if t.dtype not in FLOATS:
            raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    for name, t in (("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        if tuple(t.shape) != (n, d):
            raise ValueError(f"{name} must have shape {(n, d)}, got {tuple(t.shape)}")
    check_width("bias", d)
    check_contiguous(pre=pre, bias=bias, ln_weight=ln_weight, ln_bias=ln_bias)
    return n, d


def mlp_demux_fwd(
    pre: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """u[g,i,t] = LN_i(gelu(pre[g,t,i·d:(i+1)·d] + bias[i])), (B', N, L, d) in out_dtype.

    Grid (⌈B'·L/BLOCK_R⌉, N); written into ``out`` if given.
    """
    n, d = _check_args(pre, bias, ln_weight, ln_bias)
    groups, length, _ = pre.shape
    if out is None:
        out = pre.new_empty((groups, n, length, d), dtype=out_dtype)
    if out.numel() == 0:
        return out
    rows = groups * length
    acc = acc_dtype(pre, bias, ln_weight, ln_bias, out)
    block_lo, block_hi, block_r, num_warps = row_tiles(d, rows, acc)
    _mlp_fwd_kernel[(triton.cdiv(rows, block_r), n)](
        pre, bias, ln_weight, ln_bias, out, rows, n, length, d, eps,
        BLOCK_R=block_r, BLOCK_LO=block_lo, BLOCK_HI=block_hi, ACC=tl_dtype(acc),
        num_warps=num_warps,
    )  # fmt: skip
    return out


def mlp_demux_bwd(
    grad_u: torch.Tensor,
    pre: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    d_pre: torch.Tensor | None = None,
    d_bias: torch.Tensor | None = None,
    d_ln_weight: torch.Tensor | None = None,
    d_ln_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d_pre, d_bias, dγ, dβ), recomputed from pre; each in its tensor's dtype.

    d_pre[g,t,i] = dz[g,i,t]; d_bias[i] = Σ_{g,t} dz; dγ[i] = Σ du ⊙ x̂; dβ[i] = Σ du.
    Grid (P, N) with P <= 4 per SM programs per branch looping over row tiles.
    """
    n, d = _check_args(pre, bias, ln_weight, ln_bias)
    groups, length, _ = pre.shape
    check_grad("grad_u", grad_u, (groups, n, length, d))
    grads = outputs((d_pre, d_bias, d_ln_weight, d_ln_bias), (pre, bias, ln_weight, ln_bias))
    if grad_u.numel() == 0:
        return zeroed(grads)
    rows = groups * length
    acc = acc_dtype(grad_u, pre, bias, ln_weight, ln_bias)
    block_lo, block_hi, block_r, num_warps = row_tiles(d, rows, acc, backward=True)
    n_tiles = triton.cdiv(rows, block_r)
    programs = min(n_tiles, max(1, program_cap(pre.device) // n))
    parts = [pre.new_empty((programs, n, d), dtype=acc) for _ in range(3)]
    _mlp_bwd_kernel[(programs, n)](
        grad_u, pre, bias, ln_weight, grads[0], *parts, rows, n, length, d, n_tiles, eps,
        BLOCK_R=block_r, BLOCK_LO=block_lo, BLOCK_HI=block_hi, ACC=tl_dtype(acc),
        num_warps=num_warps,
    )  # fmt: skip
    for grad, part in zip(grads[1:], parts, strict=True):
        grad.copy_(part.sum(0))
    return grads


# The operators muxkernels::<name>_triton call the launchers without preallocated outputs.
mlp_demux_fwd_op = triton_op("mlp_demux_fwd")(mlp_demux_fwd)
mlp_demux_bwd_op = triton_op("mlp_demux_bwd")(mlp_demux_bwd)
