"""Triton hadamard multiplex, forward and backward (docs/design.md §1).

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

from ._host import (
    acc_dtype,
    check_contiguous,
    interpreting,
    multiprocessors,
    outputs,
    tl_dtype,
    zeroed,
)
from ._math import TILE_ELEMENTS, broadcast_rows
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
    v_tile = v_ptr + broadcast_rows(k, BLOCK_R)
    acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=ACC)
    for _ in range(num):
        v = tl.load(v_tile, mask=mask, other=0.0).to(ACC)
        acc += v * tl.load(e_tile, mask=mask, other=0.0).to(ACC)
        e_tile += plane
        v_tile += d
    x = acc / num
    tl.store(x_ptr + r[:, None] * d + k[None, :], x.to(x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _hadamard_mux_bwd_kernel(
    dx_ptr,
    v_ptr,
    de_ptr,
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
    """dE[g,i,t,k] = (1/N) v[i,k] dx[r,k] for a block of rows r = g·L + t and features k,
    reading dx once and looping over the N instances."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    k = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (r < rows)[:, None] & (k < d)[None, :]
    dx = tl.load(dx_ptr + r[:, None] * d + k[None, :], mask=mask, other=0.0).to(ACC)
    de_tile = de_ptr + ((r // length) * group_stride + (r % length) * d)[:, None] + k[None, :]
    v_tile = v_ptr + broadcast_rows(k, BLOCK_R)
    for _ in range(num):
        v = tl.load(v_tile, mask=mask, other=0.0).to(ACC)
        tl.store(de_tile, (v * dx / num).to(de_ptr.dtype.element_ty), mask=mask)
        de_tile += plane
        v_tile += d


@triton.jit
def _hadamard_mux_bwd_dv_kernel(
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
    chunk_rows,
    ACC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """dE of instance i over the rows r of chunk c, and partial[c,i,k] = Σ_r E[g,i,t,k] dx[r,k].

    Program (c, i) = (program_id(0) // N, program_id(0) % N), i fastest, so the N programs
    of a chunk run together and read its dx from L2. Each accumulates E ⊙ dx in a register
    tile over its row blocks and reduces it over rows once, at the end.
    """
    pid = tl.program_id(0)
    chunk = (pid // num).to(tl.int64)
    i = pid % num
    k = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    k_mask = k < d
    v = tl.load(v_ptr + i * d + broadcast_rows(k, BLOCK_R), mask=k_mask[None, :], other=0.0)
    v = v.to(ACC)
    acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=ACC)
    end = tl.minimum((chunk + 1) * chunk_rows, rows)
    for start in range(chunk * chunk_rows, end, BLOCK_R):
        r = start + tl.arange(0, BLOCK_R)
        mask = (r < end)[:, None] & k_mask[None, :]
        dx = tl.load(dx_ptr + r[:, None] * d + k[None, :], mask=mask, other=0.0).to(ACC)
        offsets = ((r // length) * group_stride + (r % length) * d + i * plane)[:, None] + k[
            None, :
        ]
        e = tl.load(e_ptr + offsets, mask=mask, other=0.0).to(ACC)
        tl.store(de_ptr + offsets, (v * dx / num).to(de_ptr.dtype.element_ty), mask=mask)
        acc += e * dx
    tl.store(partial_ptr + (chunk * num + i) * d + k, tl.sum(acc, axis=0), mask=k_mask)


def _chunk_rows(rows: int, programs_per_chunk: int, block_r: int, device: torch.device) -> int:
    """Rows per chunk of the dv backward: enough chunks for about 8 programs per SM (GPU)
    or 2 row blocks per chunk (interpreter), a multiple of the row block."""
    if interpreting(device):
        return 2 * block_r
    chunks = max(1, 8 * multiprocessors(device) // programs_per_chunk)
    return block_r * max(1, triton.cdiv(triton.cdiv(rows, chunks), block_r))


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
    meta = {"ACC": tl_dtype(acc), "BLOCK_R": block_r, "BLOCK_D": block_d, "num_warps": warps}
    if not vectors_grad:
        grid = (triton.cdiv(rows, block_r), triton.cdiv(d, block_d))
        _hadamard_mux_bwd_kernel[grid](grad_out, vectors, d_embeddings, **layout, **meta)
        return d_embeddings, d_vectors
    columns = triton.cdiv(d, block_d)
    chunk_rows = _chunk_rows(rows, num * columns, block_r, embeddings.device)
    chunks = triton.cdiv(rows, chunk_rows)
    partials = embeddings.new_empty((chunks, num, d), dtype=acc)
    _hadamard_mux_bwd_dv_kernel[(chunks * num, columns)](
        grad_out, embeddings, vectors, d_embeddings, partials, **layout,
        chunk_rows=chunk_rows, **meta,
    )  # fmt: skip
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
