"""Pieces shared by the demux kernels: exact gelu, LayerNorm forward/backward, launch sizes.

A row of d values is held as two power-of-two column blocks:
- lo = columns [0, BLOCK_LO), BLOCK_LO <= d, always inside the row, so it needs only a row
  mask;
- hi = columns [BLOCK_LO, BLOCK_LO + BLOCK_HI), masked to d (``hi_mask``).
Forward kernels split so that common widths waste no lanes (768 = 512 + 256, 3072 = 2048 +
1024, 4097 = 4096 + 1: ``split_width``), backward kernels in equal halves (``row_tiles``).
Row tiles are 2D (rows, columns); values at masked positions are loaded as 0 and every
helper keeps them at 0. Arithmetic is in ``ACC`` (float32, or float64 for float64 data).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._host import multiprocessors

# Elements of one (rows × d) tile a program holds per live tensor.
TILE_ELEMENTS = 4096
# The widest row the register-tile kernels take (one row per program at this width).
MAX_WIDTH = 65536


def split_width(d: int) -> tuple[int, int]:
    """(BLOCK_LO, BLOCK_HI): d = BLOCK_LO + (d - BLOCK_LO) with both blocks powers of two."""
    lo = 1 if d == 1 else triton.next_power_of_2(d) // 2
    return lo, triton.next_power_of_2(max(d - lo, 1))


def row_block(width: int, rows: int, elements: int = TILE_ELEMENTS) -> int:
    """Rows per tile: about ``elements`` values per tile, at most next_pow2(rows)."""
    per_tile = max(1, elements // width)
    return min(1 << (per_tile.bit_length() - 1), triton.next_power_of_2(max(rows, 1)))


def row_tiles(
    d: int, rows: int, acc: torch.dtype, backward: bool = False
) -> tuple[int, int, int, int]:
    """(BLOCK_LO, BLOCK_HI, rows per tile, num_warps) of a kernel over (rows, d) tiles.

    A tile holds about TILE_ELEMENTS values (half that in float64) and at most
    next_pow2(rows) rows; a thread gets about 24 of them forward and 16 backward (which
    keeps more tensors live), half that in float64. Forward rows are split as
    ``split_width`` (768 = 512 + 256: no idle lanes). Backward rows are split in two equal
    halves of next_pow2(d), the second masked (768 = 512 + 512): with the fewer values a
    thread can hold there, an uneven split leaves the short block too few values per thread
    for 16-byte vectors, and Triton would load it 8 bytes at a time. On sm_90 at d = 768
    this gives the token kernels 4 rows, 4 warps and 119 registers forward, 8 warps and 229
    registers backward, 128-bit loads and stores and no spills (``muxkernels gate``).
    """
    lo, hi = split_width(d)
    if backward and d > 1:
        lo = hi = triton.next_power_of_2(d) // 2
    wide = 2 if acc == torch.float64 else 1
    block_rows = row_block(lo + hi, rows, TILE_ELEMENTS // wide)
    per_thread = (16 if backward else 24) // wide
    tile = block_rows * (lo + hi)
    return lo, hi, block_rows, min(16, triton.next_power_of_2(triton.cdiv(tile, 32 * per_thread)))


def program_cap(device: torch.device) -> int:
    """How many programs a persistent (looping) kernel launches: 4 per SM, 4 on CPU."""
    if device.type == "cuda":
        return 4 * multiprocessors(device)
    return 4


def check_width(name: str, d: int) -> None:
    """The kernels hold a whole row in registers: 1 <= d <= MAX_WIDTH."""
    if not 1 <= d <= MAX_WIDTH:
        raise ValueError(f"{name} has width d={d}; the Triton kernels take 1 <= d <= {MAX_WIDTH}")


@triton.jit
def broadcast_rows(cols, ROWS: tl.constexpr):
    """(ROWS, len(cols)) offsets whose every row is ``cols``.

    Loading a parameter row through them gives every thread its own copy, already in the
    2-D tile's layout (contiguous along the columns, so vector loads; the repeats hit L1).
    A 1-D load broadcast with ``[None, :]`` would instead be moved into the tile's layout
    through shared memory, with a barrier, every time it is loaded.
    """
    return tl.zeros([ROWS, 1], dtype=cols.dtype) + cols[None, :]


@triton.jit
def load_rows(ptr, rows, row_mask, lo, hi, hi_mask, D, ACC: tl.constexpr):
    """The (lo, hi) blocks of rows ``rows`` of a row-major (·, D) tensor, in ACC."""
    base = ptr + rows.to(tl.int64)[:, None] * D
    x_lo = tl.load(base + lo[None, :], mask=row_mask[:, None], other=0.0)
    x_hi = tl.load(base + hi[None, :], mask=row_mask[:, None] & hi_mask[None, :], other=0.0)
    return x_lo.to(ACC), x_hi.to(ACC)


@triton.jit
def store_rows(ptr, rows, row_mask, lo, hi, hi_mask, D, x_lo, x_hi):
    """Stores the (lo, hi) blocks into rows ``rows`` of a row-major (·, D) tensor."""
    base = ptr + rows.to(tl.int64)[:, None] * D
    ty = ptr.dtype.element_ty
    tl.store(base + lo[None, :], x_lo.to(ty), mask=row_mask[:, None])
    tl.store(base + hi[None, :], x_hi.to(ty), mask=row_mask[:, None] & hi_mask[None, :])


@triton.jit
def load_broadcast(ptr, lo, hi, hi_mask, ROWS: tl.constexpr, ACC: tl.constexpr):
    """The (lo, hi) blocks of one length-D vector at ``ptr``, repeated over ROWS rows, in ACC:
    loaded straight into the row tiles' layout (see ``broadcast_rows``)."""
    v_lo = tl.load(ptr + broadcast_rows(lo, ROWS))
    v_hi = tl.load(ptr + broadcast_rows(hi, ROWS), mask=hi_mask[None, :], other=0.0)
    return v_lo.to(ACC), v_hi.to(ACC)


@triton.jit
def store_column_sums(ptr, lo, hi, hi_mask, x_lo, x_hi):
    """Stores the sums over rows of the (lo, hi) tiles, a length-D vector, at ``ptr``.

    The sums are broadcast back over the tile and stored by its first row, so they stay in
    the tile's layout (a 1-D store would move them through shared memory first).
    """
    ty = ptr.dtype.element_ty
    first = (tl.arange(0, x_lo.shape[0]) == 0)[:, None]
    s_lo = tl.sum(x_lo, axis=0)[None, :] + tl.zeros_like(x_lo)
    s_hi = tl.sum(x_hi, axis=0)[None, :] + tl.zeros_like(x_hi)
    tl.store(ptr + broadcast_rows(lo, x_lo.shape[0]), s_lo.to(ty), mask=first)
    tl.store(ptr + broadcast_rows(hi, x_hi.shape[0]), s_hi.to(ty), mask=first & hi_mask[None, :])


@triton.jit
def add_column_sums(ptr, lo, hi, hi_mask, x_lo, x_hi):
    """Adds the sums over rows of the (lo, hi) tiles to the length-D vector at ``ptr``.

    The first row's threads read, add and write back the columns they own, so a program
    accumulating into a buffer of its own needs no barrier between two calls.
    """
    first = (tl.arange(0, x_lo.shape[0]) == 0)[:, None]
    p_lo = ptr + broadcast_rows(lo, x_lo.shape[0])
    p_hi = ptr + broadcast_rows(hi, x_hi.shape[0])
    m_hi = first & hi_mask[None, :]
    s_lo = tl.load(p_lo, mask=first, other=0.0) + tl.sum(x_lo, axis=0)[None, :]
    s_hi = tl.load(p_hi, mask=m_hi, other=0.0) + tl.sum(x_hi, axis=0)[None, :]
    tl.store(p_lo, s_lo, mask=first)
    tl.store(p_hi, s_hi, mask=m_hi)


@triton.jit
def upper_tail(z):
    """Q(|z|) = 1 − Φ(|z|) = 0.5·erfc(|z|/√2) for float32 z, without erf.

    Q = 2^R(u), u = min(|z|, 6), with R a degree-9 minimax fit of log2 Q on [0, 6]
    (Q(6) ≈ 1e-9): 9 FMAs and one exp2 instead of erf's two coefficient sets and branch.
    """
    u = tl.minimum(tl.abs(z), 6.0)
    r = u * 4.989817981027045e-08 - 1.3546205082093365e-06
    r = r * u + 1.3443679563351907e-05
    r = r * u - 3.0989987862994894e-05
    r = r * u - 0.0006050298106856644
    r = r * u + 0.007839720696210861
    r = r * u - 0.05319555848836899
    r = r * u - 0.4588980972766876
    r = r * u - 1.1511576175689697
    return tl.exp2(r * u - 0.9999985694885254)


@triton.jit
def normal_cdf(z):
    """Φ(z) = 0.5·(1 + erf(z/√2)): libdevice erf in float64; 1 − Q(|z|) or Q(|z|) in float32
    (no cancellation in the negative tail)."""
    if z.dtype == tl.float64:
        return 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
    q = upper_tail(z)
    return tl.where(z >= 0, 1.0 - q, q)


@triton.jit
def gelu(z):
    """Exact (erf) gelu: z·Φ(z); in float32 max(z, 0) − |z|·Q(|z|), the same value.

    Float32 error: within 1.5e-7·(1 + |z|) of the exact gelu (torch's float32 gelu is within
    3e-7·(1 + |z|)).
    """
    if z.dtype == tl.float64:
        return z * normal_cdf(z)
    return tl.maximum(z, 0.0) - tl.abs(z) * upper_tail(z)


@triton.jit
def gelu_with_grad(z):
    """(gelu(z), gelu'(z)) with gelu'(z) = Φ(z) + z·φ(z), φ(z) = exp(-z²/2)/√(2π)."""
    cdf = normal_cdf(z)
    pdf = tl.exp2(-0.7213475204444817 * z * z - 1.3257480647361593)
    return z * cdf, cdf + z * pdf


@triton.jit
def normalize(y_lo, y_hi, hi_mask, D, eps):
    """(x̂_lo, x̂_hi, rstd): x̂ = (y - μ)·rstd per row, μ = mean(y), rstd = 1/√(var(y) + eps).

    y must be 0 at masked columns; x̂ is 0 there. Two-pass variance (no E[y²] - μ²).
    """
    mean = (tl.sum(y_lo, axis=1) + tl.sum(y_hi, axis=1)) / D
    x_lo = y_lo - mean[:, None]
    x_hi = tl.where(hi_mask[None, :], y_hi - mean[:, None], 0.0)
    var = (tl.sum(x_lo * x_lo, axis=1) + tl.sum(x_hi * x_hi, axis=1)) / D
    rstd = 1.0 / tl.sqrt(var + eps)
    return x_lo * rstd[:, None], x_hi * rstd[:, None], rstd


@triton.jit
def gelu_layer_norm(z_lo, z_hi, hi_mask, w_lo, w_hi, b_lo, b_hi, D, eps):
    """u = LN(gelu(z)) = x̂ ⊙ γ + β over each row, for a (rows, d) tile held as (lo, hi);
    γ and β are tiles too (``load_broadcast``)."""
    y_hi = tl.where(hi_mask[None, :], gelu(z_hi), 0.0)
    x_lo, x_hi, _ = normalize(gelu(z_lo), y_hi, hi_mask, D, eps)
    return x_lo * w_lo + b_lo, x_hi * w_hi + b_hi


@triton.jit
def gelu_layer_norm_bwd(z_lo, z_hi, du_lo, du_hi, hi_mask, w_lo, w_hi, D, eps):
    """(dz_lo, dz_hi, x̂_lo, x̂_hi) for u = LN(gelu(z)), recomputing y = gelu(z) and x̂;
    γ is a tile (``load_broadcast``).

    With gᵤ = γ ⊙ du:  dy = rstd·(gᵤ − mean(gᵤ) − x̂·mean(gᵤ ⊙ x̂)),  dz = dy ⊙ gelu'(z).
    du and γ must be 0 at masked columns; dz is 0 there. dγ = Σ du ⊙ x̂ and dβ = Σ du are
    left to the caller (x̂ is returned for that).
    """
    y_lo, dg_lo = gelu_with_grad(z_lo)
    y_hi, dg_hi = gelu_with_grad(z_hi)
    x_lo, x_hi, rstd = normalize(y_lo, tl.where(hi_mask[None, :], y_hi, 0.0), hi_mask, D, eps)
    g_lo = du_lo * w_lo
    g_hi = du_hi * w_hi
    m1 = (tl.sum(g_lo, axis=1) + tl.sum(g_hi, axis=1)) / D
    m2 = (tl.sum(g_lo * x_lo, axis=1) + tl.sum(g_hi * x_hi, axis=1)) / D
    dy_lo = rstd[:, None] * (g_lo - m1[:, None] - x_lo * m2[:, None])
    dy_hi = rstd[:, None] * (g_hi - m1[:, None] - x_hi * m2[:, None])
    return dy_lo * dg_lo, tl.where(hi_mask[None, :], dy_hi * dg_hi, 0.0), x_lo, x_hi
