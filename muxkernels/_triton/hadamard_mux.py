"""Triton hadamard multiplex, forward and backward (SPEC section 1).

    x[g,t,:]  = (1/N) Σ_i v[i,:] ⊙ E[g,i,t,:]
    dE[g,i,t] = (1/N) v_i ⊙ dx[g,t];   dv_i = (1/N) Σ_{g,t} E[g,i,t] ⊙ dx[g,t]

E is (B', N, L, d) contiguous and read in place: row r = g·L + t of the (B'·L, d) output
reads E[g,i,t,:] at g·N·L·d + i·L·d + t·d. Each program owns a block of rows × a block of
features and loops over the N instances, accumulating in fp32 (fp64 for float64 data), so
E is read once and x written once. The dv reduction over rows is deterministic: each
program writes its per-instance column sums to a (row programs, N, d) buffer that
``torch.sum`` then reduces.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._host import acc_dtype, check_contiguous, interpreting, outputs, tl_dtype, zeroed
from ._math import TILE_ELEMENTS
from ._registry import triton_op


def _blocks(rows: int, d: int, device: torch.device, narrow: bool) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_D, num_warps) for a (rows, d) sweep.

    GPU: TILE_ELEMENTS-element tiles, 256 features wide (128 when ``narrow``, which doubles the rows
    per program and so halves the dv partial buffer), 8 warps: 16 elements per thread,
    i.e. 16-byte loads of half data. Interpreter: small tiles, so that tests with a few
    rows and d < 100 still cover several programs in both directions.
    """
    if interpreting(device):
        return min(4, triton.next_power_of_2(rows)), min(64, triton.next_power_of_2(d)), 1
    block_d = min(128 if narrow else 256, triton.next_power_of_2(d))
    block_r = min(TILE_ELEMENTS // block_d, triton.next_power_of_2(rows))
    return block_r, block_d, 8 if block_r * block_d >= TILE_ELEMENTS else 4


@triton.jit
def _hadamard_mux_fwd_kernel(
    e_ptr,
    v_ptr,
    x_ptr,
    rows,
    length,
    d,
    num,
    plane,
    group_stride,
    ACC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """x[r,k] = (1/N) Σ_i v[i,k] E[g,i,t,k] for a block of rows r = g·L + t and features k.

    plane = L·d (the stride of i in E), group_stride = N·L·d (the stride of g).
    """
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (r < rows)[:, None] & (k < d)[None, :]
    e_tile = e_ptr + ((r // length) * group_stride + (r % length) * d)[:, None] + k[None, :]
    v_row = v_ptr + k
    acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=ACC)
    for _ in range(num):
        v = tl.load(v_row, mask=k < d, other=0.0).to(ACC)
        acc += v[None, :] * tl.load(e_tile, mask=mask, other=0.0).to(ACC)
        e_tile += plane
        v_row += d
    x = acc / num
    tl.store(x_ptr + r[:, None] * d + k[None, :], x.to(x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _hadamard_mux_bwd_kernel(
    dx_ptr,
    e_ptr,
    v_ptr,
    de_ptr,
    partial_ptr,
    rows,
    length,
    d,
    num,
    plane,
    group_stride,
    VECTORS_GRAD: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """dE[g,i,t,k] = (1/N) v[i,k] dx[r,k] for a block of rows r = g·L + t and features k,
    reading dx once; with VECTORS_GRAD also partial[p,i,k] = Σ_{r in block p} E[g,i,t,k] dx[r,k].
    """
    pid_r = tl.program_id(0)
    r = pid_r.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (r < rows)[:, None] & (k < d)[None, :]
    dx = tl.load(dx_ptr + r[:, None] * d + k[None, :], mask=mask, other=0.0).to(ACC)
    offsets = ((r // length) * group_stride + (r % length) * d)[:, None] + k[None, :]
    e_tile = e_ptr + offsets
    de_tile = de_ptr + offsets
    v_row = v_ptr + k
    partial_row = partial_ptr + pid_r.to(tl.int64) * num * d + k
    for _ in range(num):
        v = tl.load(v_row, mask=k < d, other=0.0).to(ACC)
        de = v[None, :] * dx / num
        tl.store(de_tile, de.to(de_ptr.dtype.element_ty), mask=mask)
        if VECTORS_GRAD:
            e = tl.load(e_tile, mask=mask, other=0.0).to(ACC)
            tl.store(partial_row, tl.sum(e * dx, axis=0), mask=k < d)
            e_tile += plane
            partial_row += d
        de_tile += plane
        v_row += d


def _layout(embeddings: torch.Tensor) -> dict[str, int]:
    """Sizes and strides the kernels use to read E (B', N, L, d) in place."""
    groups, num, length, d = embeddings.shape
    return {
        "rows": groups * length,
        "length": length,
        "d": d,
        "num": num,
        "plane": length * d,
        "group_stride": num * length * d,
    }


def hadamard_mux_fwd(
    embeddings: torch.Tensor, vectors: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x[g,t,:] = (1/N) Σ_i v[i,:] ⊙ E[g,i,t,:]; E (B',N,L,d), v (N,d) → x (B',L,d).

    ``out``: optional preallocated (B',L,d) output in E's dtype (every element is written).
    """
    check_contiguous(embeddings=embeddings, vectors=vectors)
    groups, _, length, d = embeddings.shape
    if out is None:
        out = embeddings.new_empty((groups, length, d))
    if out.numel() == 0:
        return out
    layout = _layout(embeddings)
    block_r, block_d, warps = _blocks(layout["rows"], d, embeddings.device, narrow=False)
    grid = (triton.cdiv(layout["rows"], block_r), triton.cdiv(d, block_d))
    _hadamard_mux_fwd_kernel[grid](
        embeddings,
        vectors,
        out,
        **layout,
        ACC=tl_dtype(acc_dtype(embeddings, vectors)),
        BLOCK_R=block_r,
        BLOCK_D=block_d,
        num_warps=warps,
    )
    return out


def hadamard_mux_bwd(
    grad_out: torch.Tensor,
    embeddings: torch.Tensor,
    vectors: torch.Tensor,
    vectors_grad: bool,
    d_embeddings: torch.Tensor | None = None,
    d_vectors: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dE[g,i,t] = (1/N) v_i ⊙ dx[g,t]; dv_i = (1/N) Σ_{g,t} E[g,i,t] ⊙ dx[g,t] if vectors_grad.

    Returns (dE in E's dtype, dv in the vectors' dtype, or an empty (0,) tensor when not
    asked). ``d_embeddings``/``d_vectors``: optional preallocated outputs.
    """
    check_contiguous(grad_out=grad_out, embeddings=embeddings, vectors=vectors)
    d_embeddings, d_vectors = outputs(
        (d_embeddings, d_vectors), (embeddings, vectors), asked=(True, vectors_grad)
    )
    if d_embeddings.numel() == 0:
        return zeroed((d_embeddings, d_vectors))
    layout = _layout(embeddings)
    rows, d, num = layout["rows"], layout["d"], layout["num"]
    acc = acc_dtype(grad_out, embeddings, vectors)
    block_r, block_d, warps = _blocks(rows, d, embeddings.device, narrow=vectors_grad)
    grid = (triton.cdiv(rows, block_r), triton.cdiv(d, block_d))
    partials = embeddings.new_empty((grid[0] if vectors_grad else 0, num, d), dtype=acc)
    _hadamard_mux_bwd_kernel[grid](
        grad_out,
        embeddings,
        vectors,
        d_embeddings,
        partials,
        **layout,
        VECTORS_GRAD=vectors_grad,
        ACC=tl_dtype(acc),
        BLOCK_R=block_r,
        BLOCK_D=block_d,
        num_warps=warps,
    )
    if vectors_grad:
        d_vectors.copy_(partials.sum(dim=0) / num)
    return d_embeddings, d_vectors


@triton_op("hadamard_mux_fwd")
def _hadamard_mux_fwd_op(embeddings: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    return hadamard_mux_fwd(embeddings, vectors)


@triton_op("hadamard_mux_bwd")
def _hadamard_mux_bwd_op(
    grad_out: torch.Tensor, embeddings: torch.Tensor, vectors: torch.Tensor, vectors_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    return hadamard_mux_bwd(grad_out, embeddings, vectors, vectors_grad)
