"""Triton kernels for the demux core u[g,i,t] = LN(gelu(a[g,i] + c[g,t])) (docs/design.md §3, §5).

Operators ``demux_gather_fwd``, ``demux_gather_bwd`` and ``demux_project_fwd`` (schemas and
semantics in ``muxkernels._opdefs``). a is (Ga, N, d) with Ga = B' or 1 (then a is shared by
every group), c is (B', L', d). Three gathers:
- "token":    u (B', N, L', d). The hot path: a program owns a block of positions t of one
  group, loads those c rows once and loops over i, writing each u row once.
- "sequence": u (B', N, d) at t = sequence_position; "selected": u (B', L', d) with
  i = index[g,t]. Both map output rows r to (a row, c row) pairs (``_pair_rows``).
Backward recomputes z = a + c and the LayerNorm statistics from the inputs; every
reduction over rows goes through per-program partial sums that torch then adds up, so
results are deterministic (no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._opdefs import MAX_PROJECTION, gather_shape
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
    add_column_sums,
    check_width,
    gelu,
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

GATHER_CODES = {"token": 0, "sequence": 1, "selected": 2}


# --- kernels ------------------------------------------------------------------------------


@triton.jit
def _pair_rows(r, row_mask, idx_ptr, N, L, seq_pos, a_group_rows, GATHER: tl.constexpr):
    """(a row, c row) of output rows r (int64); a row = g·a_group_rows + i (a_group_rows N or 0).

    token: r = (g·N + i)·L + t; sequence: r = g·N + i, t = seq_pos; selected: r = g·L + t,
    i = index[g,t].
    """
    if GATHER == 0:
        gi = r // L
        g = gi // N
        a_row = g * a_group_rows + gi % N
        c_row = g * L + r % L
    elif GATHER == 1:
        g = r // N
        a_row = g * a_group_rows + r % N
        c_row = g * L + seq_pos
    else:
        i = tl.load(idx_ptr + r, mask=row_mask, other=0).to(tl.int64)
        a_row = (r // L) * a_group_rows + i
        c_row = r
    return a_row, c_row


@triton.jit
def _token_fwd_kernel(
    a_ptr, c_ptr, w_ptr, b_ptr, u_ptr,
    N, L, D, n_tiles, a_group_rows, eps,
    BLOCK_T: tl.constexpr, BLOCK_LO: tl.constexpr, BLOCK_HI: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """u[g,i,t] = LN(gelu(a[g,i] + c[g,t])) for BLOCK_T positions t of group g, all i."""
    pid = tl.program_id(0)
    g = (pid // n_tiles).to(tl.int64)
    t = (pid % n_tiles) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_mask = t < L
    lo = tl.arange(0, BLOCK_LO)
    hi = BLOCK_LO + tl.arange(0, BLOCK_HI)
    hi_mask = hi < D
    c_lo, c_hi = load_rows(c_ptr, g * L + t, row_mask, lo, hi, hi_mask, D, ACC)
    for i in range(N):
        a_lo, a_hi = load_broadcast(
            a_ptr + (g * a_group_rows + i) * D, lo, hi, hi_mask, BLOCK_T, ACC
        )
        w_lo, w_hi = load_broadcast(w_ptr, lo, hi, hi_mask, BLOCK_T, ACC)
        b_lo, b_hi = load_broadcast(b_ptr, lo, hi, hi_mask, BLOCK_T, ACC)
        u_lo, u_hi = gelu_layer_norm(
            a_lo + c_lo, a_hi + c_hi, hi_mask, w_lo, w_hi, b_lo, b_hi, D, eps
        )
        store_rows(u_ptr, (g * N + i) * L + t, row_mask, lo, hi, hi_mask, D, u_lo, u_hi)


@triton.jit
def _rows_fwd_kernel(
    a_ptr, c_ptr, idx_ptr, w_ptr, b_ptr, u_ptr,
    R, N, L, D, seq_pos, a_group_rows, eps,
    GATHER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_LO: tl.constexpr,
    BLOCK_HI: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """u[r] = LN(gelu(a[a_row(r)] + c[c_row(r)])) for BLOCK_R output rows r (any gather)."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = r < R
    a_row, c_row = _pair_rows(r, row_mask, idx_ptr, N, L, seq_pos, a_group_rows, GATHER)
    lo = tl.arange(0, BLOCK_LO)
    hi = BLOCK_LO + tl.arange(0, BLOCK_HI)
    hi_mask = hi < D
    a_lo, a_hi = load_rows(a_ptr, a_row, row_mask, lo, hi, hi_mask, D, ACC)
    c_lo, c_hi = load_rows(c_ptr, c_row, row_mask, lo, hi, hi_mask, D, ACC)
    w_lo, w_hi = load_broadcast(w_ptr, lo, hi, hi_mask, BLOCK_R, ACC)
    b_lo, b_hi = load_broadcast(b_ptr, lo, hi, hi_mask, BLOCK_R, ACC)
    u_lo, u_hi = gelu_layer_norm(a_lo + c_lo, a_hi + c_hi, hi_mask, w_lo, w_hi, b_lo, b_hi, D, eps)
    store_rows(u_ptr, r, row_mask, lo, hi, hi_mask, D, u_lo, u_hi)


@triton.jit
def _token_bwd_kernel(
    du_ptr, a_ptr, c_ptr, w_ptr, dc_ptr, da_part_ptr, dw_part_ptr, db_part_ptr,
    N, L, D, n_tiles, n_split, a_group_rows, eps,
    BLOCK_T: tl.constexpr, BLOCK_LO: tl.constexpr, BLOCK_HI: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Token-gather backward; program p = g·S + s handles the tiles s, s + S, … of group g
    (S = n_split), BLOCK_T positions t each, looping over i.

    dc[g,t] = Σ_i dz[g,i,t] (in registers, per tile); da_part[p,i] += Σ_{t in tile} dz[g,i,t]
    (a zeroed buffer of the program's own, L1/L2-resident, so the partials written to
    memory are S per group, not one per tile); dw_part[p] = Σ du ⊙ x̂ and db_part[p] = Σ du
    over the program's rows and every i.
    """
    pid = tl.program_id(0)
    part = pid.to(tl.int64)
    g = (pid // n_split).to(tl.int64)
    lo = tl.arange(0, BLOCK_LO)
    hi = BLOCK_LO + tl.arange(0, BLOCK_HI)
    hi_mask = hi < D
    dw_lo = tl.zeros([BLOCK_T, BLOCK_LO], ACC)
    dw_hi = tl.zeros([BLOCK_T, BLOCK_HI], ACC)
    db_lo = tl.zeros([BLOCK_T, BLOCK_LO], ACC)
    db_hi = tl.zeros([BLOCK_T, BLOCK_HI], ACC)
    for tile in range(pid % n_split, n_tiles, n_split):
        t = tile * BLOCK_T + tl.arange(0, BLOCK_T)
        row_mask = t < L
        c_lo, c_hi = load_rows(c_ptr, g * L + t, row_mask, lo, hi, hi_mask, D, ACC)
        dc_lo = tl.zeros([BLOCK_T, BLOCK_LO], ACC)
        dc_hi = tl.zeros([BLOCK_T, BLOCK_HI], ACC)
        for i in range(N):
            a_row = a_ptr + (g * a_group_rows + i) * D
            a_lo, a_hi = load_broadcast(a_row, lo, hi, hi_mask, BLOCK_T, ACC)
            w_lo, w_hi = load_broadcast(w_ptr, lo, hi, hi_mask, BLOCK_T, ACC)
            du_rows = (g * N + i) * L + t
            du_lo, du_hi = load_rows(du_ptr, du_rows, row_mask, lo, hi, hi_mask, D, ACC)
            dz_lo, dz_hi, x_lo, x_hi = gelu_layer_norm_bwd(
                a_lo + c_lo, a_hi + c_hi, du_lo, du_hi, hi_mask, w_lo, w_hi, D, eps
            )
            dc_lo += dz_lo
            dc_hi += dz_hi
            dw_lo += du_lo * x_lo
            dw_hi += du_hi * x_hi
            db_lo += du_lo
            db_hi += du_hi
            add_column_sums(da_part_ptr + (part * N + i) * D, lo, hi, hi_mask, dz_lo, dz_hi)
        store_rows(dc_ptr, g * L + t, row_mask, lo, hi, hi_mask, D, dc_lo, dc_hi)
    store_column_sums(dw_part_ptr + part * D, lo, hi, hi_mask, dw_lo, dw_hi)
    store_column_sums(db_part_ptr + part * D, lo, hi, hi_mask, db_lo, db_hi)


@triton.jit
def _rows_bwd_kernel(
    du_ptr, a_ptr, c_ptr, idx_ptr, w_ptr, dz_ptr, dw_part_ptr, db_part_ptr,
    R, N, L, D, seq_pos, a_group_rows, n_tiles, eps,
    GATHER: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_LO: tl.constexpr,
    BLOCK_HI: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """dz[r] for output rows r (sequence / selected gathers), program p looping over tiles
    p, p + P, …; dw_part[p] = Σ du ⊙ x̂ and db_part[p] = Σ du over its rows."""
    pid = tl.program_id(0)
    lo = tl.arange(0, BLOCK_LO)
    hi = BLOCK_LO + tl.arange(0, BLOCK_HI)
    hi_mask = hi < D
    dw_lo = tl.zeros([BLOCK_R, BLOCK_LO], ACC)
    dw_hi = tl.zeros([BLOCK_R, BLOCK_HI], ACC)
    db_lo = tl.zeros([BLOCK_R, BLOCK_LO], ACC)
    db_hi = tl.zeros([BLOCK_R, BLOCK_HI], ACC)
    for tile in range(pid, n_tiles, tl.num_programs(0)):
        r = (tile * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        row_mask = r < R
        a_row, c_row = _pair_rows(r, row_mask, idx_ptr, N, L, seq_pos, a_group_rows, GATHER)
        a_lo, a_hi = load_rows(a_ptr, a_row, row_mask, lo, hi, hi_mask, D, ACC)
        c_lo, c_hi = load_rows(c_ptr, c_row, row_mask, lo, hi, hi_mask, D, ACC)
        du_lo, du_hi = load_rows(du_ptr, r, row_mask, lo, hi, hi_mask, D, ACC)
        w_lo, w_hi = load_broadcast(w_ptr, lo, hi, hi_mask, BLOCK_R, ACC)
        dz_lo, dz_hi, x_lo, x_hi = gelu_layer_norm_bwd(
            a_lo + c_lo, a_hi + c_hi, du_lo, du_hi, hi_mask, w_lo, w_hi, D, eps
        )
        store_rows(dz_ptr, r, row_mask, lo, hi, hi_mask, D, dz_lo, dz_hi)
        dw_lo += du_lo * x_lo
        dw_hi += du_hi * x_hi
        db_lo += du_lo
        db_hi += du_hi
    part = pid.to(tl.int64) * D
    store_column_sums(dw_part_ptr + part, lo, hi, hi_mask, dw_lo, dw_hi)
    store_column_sums(db_part_ptr + part, lo, hi, hi_mask, db_lo, db_hi)


@triton.jit
def _gelu_chunk(a_base, c_base, row_mask, cols, D, ACC: tl.constexpr):
    """(gelu(a + c), mask) on columns ``cols`` of the rows at a_base / c_base (0 off mask)."""
    mask = row_mask[:, None] & (cols < D)[None, :]
    a = tl.load(a_base + cols[None, :], mask=mask, other=0.0).to(ACC)
    c = tl.load(c_base + cols[None, :], mask=mask, other=0.0).to(ACC)
    return gelu(a + c), mask


@triton.jit
def _project_kernel(
    a_ptr, c_ptr, idx_ptr, w_ptr, b_ptr, pw_ptr, pb_ptr, out_ptr,
    R, N, L, D, K, seq_pos, a_group_rows, eps,
    GATHER: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """logits[r] = LN(gelu(a + c))[r] @ pwᵀ + pb for BLOCK_R output rows, u never stored.

    Columns go in chunks of BLOCK_C: a first sweep gets the LayerNorm mean and variance
    (per-chunk mean and M2 merged with Chan's formula), a second recomputes y = gelu(z),
    normalizes it and multiplies it into the (BLOCK_C, K) slice of pwᵀ with tl.dot.
    """
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = r < R
    a_row, c_row = _pair_rows(r, row_mask, idx_ptr, N, L, seq_pos, a_group_rows, GATHER)
    a_base = a_ptr + a_row[:, None] * D
    c_base = c_ptr + c_row[:, None] * D
    chunk = tl.arange(0, BLOCK_C)
    mean = tl.zeros([BLOCK_R], ACC)
    m2 = tl.zeros([BLOCK_R], ACC)
    for start in range(0, D, BLOCK_C):
        y, mask = _gelu_chunk(a_base, c_base, row_mask, start + chunk, D, ACC)
        n_b = tl.minimum(D - start, BLOCK_C).to(ACC)
        mean_b = tl.sum(y, axis=1) / n_b
        dev = tl.where(mask, y - mean_b[:, None], 0.0)
        delta = mean_b - mean
        mean += delta * (n_b / (start + n_b))
        m2 += tl.sum(dev * dev, axis=1) + delta * delta * (start * n_b / (start + n_b))
    rstd = 1.0 / tl.sqrt(m2 / D + eps)
    ks = tl.arange(0, BLOCK_K)
    k_mask = ks < K
    logits = tl.zeros([BLOCK_R, BLOCK_K], ACC)
    for start in range(0, D, BLOCK_C):
        cols = start + chunk
        col_mask = cols < D
        y, mask = _gelu_chunk(a_base, c_base, row_mask, cols, D, ACC)
        gamma = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(ACC)
        beta = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(ACC)
        u = (y - mean[:, None]) * rstd[:, None] * gamma[None, :] + beta[None, :]
        u = tl.where(mask, u, 0.0)
        pw_mask = col_mask[:, None] & k_mask[None, :]
        pw = tl.load(pw_ptr + ks[None, :] * D + cols[:, None], mask=pw_mask, other=0.0)
        logits += tl.dot(u, pw.to(ACC), input_precision=PRECISION)
    if HAS_BIAS:
        logits += tl.load(pb_ptr + ks, mask=k_mask, other=0.0).to(ACC)[None, :]
    out = out_ptr + r[:, None] * K + ks[None, :]
    tl.store(out, logits.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & k_mask[None, :])


# --- launchers ----------------------------------------------------------------------------


def _check_args(
    a: torch.Tensor,
    c: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    gather: str,
    index: torch.Tensor | None,
    sequence_position: int,
) -> None:
    """What the kernels rely on: shapes, float dtypes, contiguity, gather and its arguments."""
    if gather not in GATHER_CODES:
        raise ValueError(f"gather must be one of {tuple(GATHER_CODES)}, got {gather!r}")
    if c.dim() != 3:
        raise ValueError(f"c must be (B', L', d), got shape {tuple(c.shape)}")
    groups, length, d = c.shape
    if a.dim() != 3 or a.shape[0] not in (1, groups) or a.shape[2] != d:
        raise ValueError(f"a must be (B' or 1, N, d={d}) with B'={groups}, got {tuple(a.shape)}")
    for name, t in (("a", a), ("c", c), ("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        if t.dtype not in FLOATS:
            raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    for name, t in (("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        if tuple(t.shape) != (d,):
            raise ValueError(f"{name} must have shape ({d},), got {tuple(t.shape)}")
    check_width("c", d)
    _check_position(gather, index, sequence_position, groups, length)
    used_index = index if gather == "selected" else None
    check_contiguous(a=a, c=c, ln_weight=ln_weight, ln_bias=ln_bias, index=used_index)


def _check_position(
    gather: str, index: torch.Tensor | None, sequence_position: int, groups: int, length: int
) -> None:
    """selected: an integer index of shape (B', L'); sequence: 0 <= position < L'.

    Index values are not read (that would sync with the device); the public ops check them.
    """
    if gather == "selected":
        if index is None or tuple(index.shape) != (groups, length):
            got = None if index is None else tuple(index.shape)
            want = (groups, length)
            raise ValueError(f'gather="selected" needs index of shape {want}, got {got}')
        if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
            raise ValueError(f"index must be an integer tensor, got {index.dtype}")
    if gather == "sequence" and not 0 <= sequence_position < length:
        raise ValueError(f"sequence_position must lie in [0, {length}), got {sequence_position}")


def _pair_args(
    a: torch.Tensor, c: torch.Tensor, index: torch.Tensor | None, gather: str, seq_pos: int
) -> tuple:
    """_pair_rows's inputs (index pointer, N, L, D, seq_pos, a_group_rows); c stands in for
    the index pointer when the gather reads none."""
    _, length, d = c.shape
    n = a.shape[1]
    a_group_rows = n if a.shape[0] > 1 else 0
    return (index if gather == "selected" else c), n, length, d, seq_pos, a_group_rows


def demux_gather_fwd(
    a: torch.Tensor,
    c: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    gather: str,
    index: torch.Tensor | None,
    sequence_position: int,
    out_dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """u = LN(gelu(a[g,i] + c[g,t])) gathered by ``gather``, in out_dtype (into ``out`` if given).

    token: grid B'·⌈L'/BLOCK_T⌉, each program loads its c rows once and loops over i.
    sequence / selected: grid ⌈rows/BLOCK_R⌉ over the output rows.
    """
    _check_args(a, c, ln_weight, ln_bias, gather, index, sequence_position)
    if out is None:
        out = c.new_empty(gather_shape(a, c, gather, c.shape[2]), dtype=out_dtype)
    if out.numel() == 0:
        return out
    idx, n, length, d, seq_pos, a_group_rows = _pair_args(a, c, index, gather, sequence_position)
    acc = acc_dtype(a, c, ln_weight, ln_bias, out)
    if gather == "token":
        block_lo, block_hi, block_t, num_warps = row_tiles(d, length, acc)
        n_tiles = triton.cdiv(length, block_t)
        _token_fwd_kernel[(c.shape[0] * n_tiles,)](
            a, c, ln_weight, ln_bias, out, n, length, d, n_tiles, a_group_rows, eps,
            BLOCK_T=block_t, BLOCK_LO=block_lo, BLOCK_HI=block_hi, ACC=tl_dtype(acc),
            num_warps=num_warps,
        )  # fmt: skip
    else:
        rows = out.numel() // d
        block_lo, block_hi, block_r, num_warps = row_tiles(d, rows, acc)
        _rows_fwd_kernel[(triton.cdiv(rows, block_r),)](
            a, c, idx, ln_weight, ln_bias, out,
            rows, n, length, d, seq_pos, a_group_rows, eps,
            GATHER=GATHER_CODES[gather], BLOCK_R=block_r, BLOCK_LO=block_lo,
            BLOCK_HI=block_hi, ACC=tl_dtype(acc), num_warps=num_warps,
        )  # fmt: skip
    return out


def demux_gather_bwd(
    grad_u: torch.Tensor,
    a: torch.Tensor,
    c: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    gather: str,
    index: torch.Tensor | None,
    sequence_position: int,
    da: torch.Tensor | None = None,
    dc: torch.Tensor | None = None,
    d_ln_weight: torch.Tensor | None = None,
    d_ln_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(da, dc, dγ, dβ) of u = LN(gelu(a + c)) gathered by ``gather``, recomputed from a, c.

    dz = (LN ∘ gelu)ᵀ du per row; da[g,i] = Σ_t dz[g,i,t] (also over g when Ga = 1),
    dc[g,t] = Σ_i dz[g,i,t] (0 where the gather reads no c), dγ = Σ du ⊙ x̂, dβ = Σ du.
    Each gradient has the dtype of its tensor (written into the given outputs if any).
    """
    _check_args(a, c, ln_weight, ln_bias, gather, index, sequence_position)
    check_grad("grad_u", grad_u, gather_shape(a, c, gather, c.shape[2]))
    grads = outputs((da, dc, d_ln_weight, d_ln_bias), (a, c, ln_weight, ln_bias))
    if grad_u.numel() == 0:
        return zeroed(grads)
    if gather == "token":
        _token_bwd(grad_u, a, c, ln_weight, eps, *grads)
    else:
        _rows_bwd(grad_u, a, c, ln_weight, eps, gather, index, sequence_position, *grads)
    return grads


def _token_bwd(grad_u, a, c, ln_weight, eps, da, dc, d_ln_weight, d_ln_bias) -> None:
    """Token gather: S programs per group, each looping over its tiles of positions and
    over i; dc is written by the kernel, da / dγ / dβ are sums of the S·B' partials."""
    _, n, length, d, _, a_group_rows = _pair_args(a, c, None, "token", 0)
    groups = c.shape[0]
    acc = acc_dtype(grad_u, a, c, ln_weight)
    block_lo, block_hi, block_t, num_warps = row_tiles(d, length, acc, backward=True)
    n_tiles = triton.cdiv(length, block_t)
    # about 2 programs per SM: each one's partials (N·d values) are written to memory once
    n_split = min(n_tiles, triton.cdiv(program_cap(c.device) // 2, groups))
    parts = groups * n_split
    da_part = c.new_zeros((groups, n_split, n, d), dtype=acc)
    dw_part = c.new_empty((parts, d), dtype=acc)
    db_part = torch.empty_like(dw_part)
    _token_bwd_kernel[(parts,)](
        grad_u, a, c, ln_weight, dc, da_part, dw_part, db_part,
        n, length, d, n_tiles, n_split, a_group_rows, eps,
        BLOCK_T=block_t, BLOCK_LO=block_lo, BLOCK_HI=block_hi, ACC=tl_dtype(acc),
        num_warps=num_warps,
    )  # fmt: skip
    da_sum = da_part.sum(1)
    da.copy_(da_sum if a.shape[0] == groups else da_sum.sum(0, keepdim=True))
    d_ln_weight.copy_(dw_part.sum(0))
    d_ln_bias.copy_(db_part.sum(0))


def _rows_bwd(
    grad_u, a, c, ln_weight, eps, gather, index, sequence_position, da, dc, d_ln_weight, d_ln_bias
) -> None:
    """Sequence / selected gathers: the kernel writes dz per output row (fp32, fp64 for
    float64) and dγ / dβ partials; torch sums dz into da and dc (selected: da is the
    one-hot bmm onehot(index[g])ᵀ @ dz[g], deterministic, unlike index_add_ on CUDA)."""
    idx, n, length, d, seq_pos, a_group_rows = _pair_args(a, c, index, gather, sequence_position)
    groups = c.shape[0]
    rows = grad_u.numel() // d
    acc = acc_dtype(grad_u, a, c, ln_weight)
    block_lo, block_hi, block_r, num_warps = row_tiles(d, rows, acc, backward=True)
    n_tiles = triton.cdiv(rows, block_r)
    programs = min(n_tiles, program_cap(c.device))
    dz = c.new_empty((rows, d), dtype=acc)
    dw_part = c.new_empty((programs, d), dtype=acc)
    db_part = torch.empty_like(dw_part)
    _rows_bwd_kernel[(programs,)](
        grad_u, a, c, idx, ln_weight, dz, dw_part, db_part,
        rows, n, length, d, seq_pos, a_group_rows, n_tiles, eps,
        GATHER=GATHER_CODES[gather], BLOCK_R=block_r, BLOCK_LO=block_lo, BLOCK_HI=block_hi,
        ACC=tl_dtype(acc), num_warps=num_warps,
    )  # fmt: skip
    if gather == "sequence":
        dz = dz.view(groups, n, d)
        dc.zero_()
        dc[:, sequence_position].copy_(dz.sum(1))
        da_groups = dz
    else:
        dz = dz.view(groups, length, d)
        dc.copy_(dz)
        instances = torch.arange(n, device=index.device)
        onehot = (instances[:, None] == index[:, None, :]).to(acc)  # (B', N, L'), no sync
        da_groups = torch.bmm(onehot, dz)
    da.copy_(da_groups if a.shape[0] == groups else da_groups.sum(0, keepdim=True))
    d_ln_weight.copy_(dw_part.sum(0))
    d_ln_bias.copy_(db_part.sum(0))


def demux_project_fwd(
    a: torch.Tensor,
    c: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    gather: str,
    index: torch.Tensor | None,
    sequence_position: int,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """logits = u @ proj_weightᵀ + proj_bias with u = LN(gelu(a + c)) never written; K <= 64.

    Grid ⌈rows/BLOCK_R⌉ over output rows; u is built in registers in BLOCK_C-column chunks
    and fed to tl.dot in the accumulator's dtype (TF32 tensor cores for half outputs).
    """
    _check_args(a, c, ln_weight, ln_bias, gather, index, sequence_position)
    d = c.shape[2]
    if proj_weight.dim() != 2 or proj_weight.shape[1] != d:
        raise ValueError(f"proj_weight must be (K, d={d}), got {tuple(proj_weight.shape)}")
    k = proj_weight.shape[0]
    if not 1 <= k <= MAX_PROJECTION:
        raise ValueError(
            f"proj_weight has K={k} rows; the fused projection takes 1 <= K <= {MAX_PROJECTION} "
            "(project u from demux_gather_fwd instead)"
        )
    if proj_bias is not None and tuple(proj_bias.shape) != (k,):
        raise ValueError(f"proj_bias must have shape ({k},), got {tuple(proj_bias.shape)}")
    for name, t in (("proj_weight", proj_weight), ("proj_bias", proj_bias)):
        if t is not None and t.dtype not in FLOATS:
            raise ValueError(f"{name} must be a float tensor, got {t.dtype}")
    check_contiguous(proj_weight=proj_weight, proj_bias=proj_bias)
    if out is None:
        out = c.new_empty(gather_shape(a, c, gather, k), dtype=out_dtype)
    if out.numel() == 0:
        return out
    idx, n, length, _, seq_pos, a_group_rows = _pair_args(a, c, index, gather, sequence_position)
    rows = out.numel() // k
    block_r = max(16, min(32, triton.next_power_of_2(rows)))
    acc = acc_dtype(a, c, ln_weight, ln_bias, proj_weight, proj_bias, out)
    # u (fp32) meets the projection on TF32 tensor cores for half outputs: u loses less
    # than the logits' own rounding; exact fp32 / fp64 dots otherwise
    precision = "tf32" if out_dtype in (torch.float16, torch.bfloat16) else "ieee"
    _project_kernel[(triton.cdiv(rows, block_r),)](
        a, c, idx, ln_weight, ln_bias, proj_weight,
        proj_weight if proj_bias is None else proj_bias, out,
        rows, n, length, d, k, seq_pos, a_group_rows, eps,
        GATHER=GATHER_CODES[gather], HAS_BIAS=proj_bias is not None, BLOCK_R=block_r,
        BLOCK_C=max(16, min(32, triton.next_power_of_2(d))),
        BLOCK_K=max(16, triton.next_power_of_2(k)),
        ACC=tl_dtype(acc), PRECISION=precision, num_warps=8,
    )  # fmt: skip
    return out


# The operators muxkernels::<name>_triton call the launchers without preallocated outputs.
demux_gather_fwd_op = triton_op("demux_gather_fwd")(demux_gather_fwd)
demux_gather_bwd_op = triton_op("demux_gather_bwd")(demux_gather_bwd)
demux_project_fwd_op = triton_op("demux_project_fwd")(demux_project_fwd)
