"""Triton matrix multiplex (SPEC section 1): dense ``ortho`` and factored ``ortho_lowrank``.

    ortho:    x[g,t] = s Σ_i P[i] E[g,i,t],  s = N^(-1/2)
              dE[g,i,t] = s P[i]ᵀ dx[g,t];   dP[i] = s Σ_{g,t} dx[g,t] E[g,i,t]ᵀ
    lowrank:  c = d // N, S_i = [i·c, (i+1)·c), y[g,t,S_i] = H[:, S_i]ᵀ E[g,i,t],
              x[g,t] = s U[:, :N·c] y[g,t]
              dy = s dx U[:, :N·c];  dE[g,i,t] = H[:, S_i] dy[g,t,S_i]
              dU[:, :N·c] = s Σ_{g,t} dx[g,t] y[g,t]ᵀ;  dH[:, S_i] = Σ_{g,t} E[g,i,t] dy[g,t,S_i]ᵀ

Every product is one launch of ``_gemm_kernel``, a tiled ``tl.dot`` GEMM that reads and
writes its operands in place through strides, so E (B', N, L, d) is never permuted or
copied: a row index r = g·L + t is split per element into (g, t), and the ortho forward's
inner index (i, e) is walked tile by tile (a K tile never straddles two instances). Each
output tile is owned by one program that loops over the whole K range: reductions over
rows (dP, dU, dH) are deterministic, with no split-K and no atomics.

Precision: fp32 accumulation (fp64 for float64 data). Half data runs the dot in the data's
dtype (an fp32 parameter is rounded to it, as under autocast, and the low-rank
intermediates y and dy are stored in it); fp32 data runs exact fp32 dots
(input_precision="ieee", as torch.matmul without TF32); float64 runs fp64 dots.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._host import acc_dtype, check_contiguous, interpreting, multiprocessors, outputs, tl_dtype
from ._registry import triton_op

_HALF = (torch.float16, torch.bfloat16)


@triton.jit
def _inverse_sqrt_scale(acc, scale_root, ACC: tl.constexpr):
    """acc / sqrt(scale_root), the square root correctly rounded in the accumulator's dtype."""
    root = tl.full([], scale_root, ACC)
    # tl.sqrt of fp64 lowers to the correctly rounded sqrt.rn.f64; fp32 needs tl.sqrt_rn. (The
    # test stays inline: a constexpr assigned to a local becomes a runtime value when compiled.)
    return acc / (tl.sqrt(root) if ACC == tl.float64 else tl.sqrt_rn(root))  # noqa: SIM300


@triton.jit
def _gemm_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    M_INNER,
    K_INNER,
    a_mo,
    a_mi,
    a_ko,
    a_ki,
    a_z,
    b_ko,
    b_ki,
    b_n,
    b_z,
    c_mo,
    c_mi,
    c_n,
    c_z,
    scale_root,
    ACC: tl.constexpr,
    DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    K_ROWS: tl.constexpr,
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """C[z,m,n] = (Σ_k A[z,m,k] B[z,k,n]) / sqrt(scale_root) for one (BLOCK_M, BLOCK_N) tile.

    Indices are split as m = (mo, mi) = (m // M_INNER, m % M_INNER) and likewise k by
    K_INNER; each part has its own stride, e.g. A[z,m,k] is at
    z·a_z + mo·a_mo + mi·a_mi + ko·a_ko + ki·a_ki. The split of m (and of k when K_ROWS,
    where k is a row index (g, t)) is computed per element; otherwise K is walked as
    K // K_INNER outer steps of ceil(K_INNER / BLOCK_K) tiles, so that a tile is contiguous
    in ki. Out-of-range rows and columns are clamped for the loads and masked at the store.
    """
    pid = tl.program_id(0)
    z = tl.program_id(1).to(tl.int64)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    # Grouped ordering: GROUP_M row tiles share each column tile while it is in L2.
    group_size = tl.minimum(grid_m - (pid // (GROUP_M * grid_n)) * GROUP_M, GROUP_M)
    pid_m = (pid // (GROUP_M * grid_n)) * GROUP_M + (pid % group_size)
    pid_n = (pid % (GROUP_M * grid_n)) // group_size

    m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_in, n_in = m % M, n % N
    a_rows = a_ptr + z * a_z + (m_in // M_INNER) * a_mo + (m_in % M_INNER) * a_mi
    b_cols = b_ptr + z * b_z + n_in * b_n
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    if K_ROWS:
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
            k_mask = k < K
            ko, ki = k // K_INNER, k % K_INNER
            a = tl.load(
                a_rows[:, None] + (ko * a_ko + ki * a_ki)[None, :], mask=k_mask[None, :], other=0.0
            )
            b = tl.load(
                b_cols[None, :] + (ko * b_ko + ki * b_ki)[:, None], mask=k_mask[:, None], other=0.0
            )
            acc = tl.dot(a.to(DOT), b.to(DOT), acc, input_precision=PRECISION, out_dtype=ACC)
    else:
        k_tiles = tl.cdiv(K_INNER, BLOCK_K)
        for step in range(0, (K // K_INNER) * k_tiles):
            ko = (step // k_tiles).to(tl.int64)
            ki = ((step % k_tiles) * BLOCK_K + tl.arange(0, BLOCK_K)).to(tl.int64)
            a_tile = a_rows[:, None] + ko * a_ko + ki[None, :] * a_ki
            b_tile = b_cols[None, :] + ko * b_ko + ki[:, None] * b_ki
            if EVEN_K:
                a = tl.load(a_tile)
                b = tl.load(b_tile)
            else:
                a = tl.load(a_tile, mask=ki[None, :] < K_INNER, other=0.0)
                b = tl.load(b_tile, mask=ki[:, None] < K_INNER, other=0.0)
            acc = tl.dot(a.to(DOT), b.to(DOT), acc, input_precision=PRECISION, out_dtype=ACC)
    acc = _inverse_sqrt_scale(acc, scale_root, ACC)
    c_rows = c_ptr + z * c_z + (m // M_INNER) * c_mo + (m % M_INNER) * c_mi
    tl.store(
        c_rows[:, None] + n[None, :] * c_n,
        acc.to(c_ptr.dtype.element_ty),
        mask=(m < M)[:, None] & (n < N)[None, :],
    )


def _fit(size: int, largest: int) -> int:
    """The tile edge for a dimension of ``size``: a power of two in [16, largest]."""
    return max(16, min(largest, triton.next_power_of_2(size)))


def _tiles(
    m: int, n: int, k: int, batch: int, dot: torch.dtype, device: torch.device
) -> dict[str, int]:
    """Tile sizes, warps and pipeline stages for an (m × k) @ (k × n) GEMM, batch times.

    Half dots: 128×128×64 tiles, 8 warps, 3 stages (tensor cores); when that gives fewer
    tiles than the GPU has SMs, 128×64 tiles (up to 3 programs share an SM). Exact fp32
    dots run on FMA units (64×64×32), fp64 on fp64 MMA (32×32×16). Interpreter: tiles of
    16-32, so that test shapes span several tiles.
    """
    if interpreting(device):
        tile, warps, stages = (_fit(m, 32), _fit(n, 32), _fit(k, 32)), 1, 1
    elif dot in _HALF:
        tile, warps, stages = (128, 128, 64), 8, 3
        if triton.cdiv(m, 128) * triton.cdiv(n, 128) * batch < multiprocessors(device):
            tile = (128, 64, 64)
    elif dot == torch.float32:
        tile, warps, stages = (64, 64, 32), 4, 3
    else:
        tile, warps, stages = (32, 32, 16), 4, 2
    block_m, block_n, block_k = (
        _fit(size, edge) for size, edge in zip((m, n, k), tile, strict=True)
    )
    return {
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "BLOCK_K": block_k,
        "num_warps": warps,
        "num_stages": stages,
    }


def _dot_dtype(data: torch.Tensor, *params: torch.Tensor) -> torch.dtype:
    """The dot's operand dtype: half data's own dtype, else the accumulator's."""
    acc = acc_dtype(data, *params)
    return data.dtype if data.dtype in _HALF and acc == torch.float32 else acc


def _gemm(
    a: tuple[torch.Tensor, tuple[int, int, int, int, int]],
    b: tuple[torch.Tensor, tuple[int, int, int, int]],
    c: tuple[torch.Tensor, tuple[int, int, int, int]],
    *,
    size: tuple[int, int, int],
    inner: tuple[int, int],
    dot: torch.dtype,
    scale_root: int = 1,
    batch: int = 1,
    k_rows: bool = False,
) -> None:
    """C[z] = (A[z] @ B[z]) / sqrt(scale_root) for z < batch, each operand read in place.

    a = (tensor, (mo, mi, ko, ki, z) strides), b = (tensor, (ko, ki, n, z)),
    c = (tensor, (mo, mi, n, z)); size = (M, N, K); inner = (M_INNER, K_INNER), the
    splits of m and k (see ``_gemm_kernel``); k_rows: K is a row index split per element.
    """
    m, n, k = size
    if m * n * batch == 0:
        return
    m_inner, k_inner = (max(1, part) for part in inner)
    tiles = _tiles(m, n, k if k_rows else k_inner, batch, dot, c[0].device)
    grid = (triton.cdiv(m, tiles["BLOCK_M"]) * triton.cdiv(n, tiles["BLOCK_N"]), batch)
    _gemm_kernel[grid](
        a[0],
        b[0],
        c[0],
        m,
        n,
        k,
        m_inner,
        k_inner,
        *a[1],
        *b[1],
        *c[1],
        scale_root,
        ACC=tl_dtype(torch.float64 if dot == torch.float64 else torch.float32),
        DOT=tl_dtype(dot),
        PRECISION="tf32" if dot in _HALF else "ieee",
        K_ROWS=k_rows,
        EVEN_K=k_inner % tiles["BLOCK_K"] == 0,
        GROUP_M=8,
        **tiles,
    )


def ortho_mux_fwd(
    embeddings: torch.Tensor, matrices: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x[g,t] = N^(-1/2) Σ_i P[i] E[g,i,t]: one GEMM x = E' @ [P_1ᵀ; …; P_Nᵀ], inner dim N·d.

    E' is E (B',N,L,d) read in place as (B'·L, N·d); ``out``: optional (B',L,d) output.
    """
    check_contiguous(embeddings=embeddings, matrices=matrices)
    groups, num, length, d = embeddings.shape
    if out is None:
        out = embeddings.new_empty((groups, length, d))
    _gemm(
        (embeddings, (num * length * d, d, length * d, 1, 0)),  # E[g,i,t,e]: m=(g,t), k=(i,e)
        (matrices, (d * d, 1, d, 0)),  # B[(i,e), j] = P[i,j,e]
        (out, (length * d, d, 1, 0)),  # x[g,t,j]
        size=(groups * length, d, num * d),
        inner=(length, d),
        dot=_dot_dtype(embeddings, matrices),
        scale_root=num,
    )
    return out


def ortho_mux_bwd(
    grad_out: torch.Tensor,
    embeddings: torch.Tensor,
    matrices: torch.Tensor,
    matrices_grad: bool,
    d_embeddings: torch.Tensor | None = None,
    d_matrices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dE[g,i,t] = N^(-1/2) P[i]ᵀ dx[g,t]; dP[i] = N^(-1/2) Σ_{g,t} dx[g,t] E[g,i,t]ᵀ.

    dE is N GEMMs dx (B'·L × d) @ P[i] written into E's layout; dP (when matrices_grad,
    else an empty (0,) tensor) is N GEMMs dxᵀ @ E_i with inner dimension B'·L.
    """
    check_contiguous(grad_out=grad_out, embeddings=embeddings, matrices=matrices)
    groups, num, length, d = embeddings.shape
    d_embeddings, d_matrices = outputs(
        (d_embeddings, d_matrices), (embeddings, matrices), asked=(True, matrices_grad)
    )
    dot = _dot_dtype(embeddings, matrices)
    _gemm(
        (grad_out, (length * d, d, 0, 1, 0)),  # dx[g,t,j]: m=(g,t), k=j
        (matrices, (0, d, 1, d * d)),  # P[i,j,e]: k=j, n=e, z=i
        (d_embeddings, (num * length * d, d, 1, length * d)),  # dE[g,i,t,e]
        size=(groups * length, d, d),
        inner=(length, d),
        dot=dot,
        scale_root=num,
        batch=num,
    )
    if matrices_grad:
        _gemm(
            (grad_out, (0, 1, length * d, d, 0)),  # dx[g,t,j]: m=j, k=(g,t)
            (embeddings, (num * length * d, d, 1, length * d)),  # E[g,i,t,e]: k=(g,t), n=e
            (d_matrices, (0, d, 1, d * d)),  # dP[i,j,e]
            size=(d, d, groups * length),
            inner=(d, length),
            dot=dot,
            scale_root=num,
            batch=num,
            k_rows=True,
        )
    return d_embeddings, d_matrices


def _lowrank_y(
    embeddings: torch.Tensor, h: torch.Tensor, dot: torch.dtype, y: torch.Tensor
) -> torch.Tensor:
    """y[g,t, i·c + j] = Σ_e E[g,i,t,e] H[e, i·c + j]: a grouped GEMM over the instances i."""
    groups, num, length, d = embeddings.shape
    width = d // num
    _gemm(
        (embeddings, (num * length * d, d, 0, 1, length * d)),  # E[g,i,t,e]: m=(g,t), k=e, z=i
        (h, (0, d, 1, width)),  # H[e, i·c + j]: k=e, n=j, z=i
        (y, (length * num * width, num * width, 1, width)),  # y[(g,t), i·c + j]
        size=(groups * length, width, d),
        inner=(length, d),
        dot=dot,
        batch=num,
    )
    return y


def _intermediate(embeddings: torch.Tensor, dot: torch.dtype) -> torch.Tensor:
    """An empty (B'·L, N·c) buffer for y or dy, in the dot's dtype."""
    groups, num, length, d = embeddings.shape
    return embeddings.new_empty((groups * length, num * (d // num)), dtype=dot)


def lowrank_ortho_mux_fwd(
    embeddings: torch.Tensor, u: torch.Tensor, h: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x[g,t] = N^(-1/2) U[:, :N·c] y[g,t] with y[g,t,S_i] = H[:, S_i]ᵀ E[g,i,t], c = d // N.

    Two GEMMs of d² per row (the grouped one reads E in place); ``out``: optional (B',L,d).
    """
    check_contiguous(embeddings=embeddings, u=u, h=h)
    groups, num, length, d = embeddings.shape
    if out is None:
        out = embeddings.new_empty((groups, length, d))
    dot = _dot_dtype(embeddings, u, h)
    y = _lowrank_y(embeddings, h, dot, _intermediate(embeddings, dot))
    _gemm(
        (y, (0, y.shape[1], 0, 1, 0)),  # y[r, k]
        (u, (0, 1, d, 0)),  # B[k, j] = U[j, k]
        (out, (0, d, 1, 0)),  # x[r, j]
        size=(groups * length, d, y.shape[1]),
        inner=(groups * length, y.shape[1]),
        dot=dot,
        scale_root=num,
    )
    return out


def lowrank_ortho_mux_bwd(
    grad_out: torch.Tensor,
    embeddings: torch.Tensor,
    u: torch.Tensor,
    h: torch.Tensor,
    factors_grad: bool,
    d_embeddings: torch.Tensor | None = None,
    d_u: torch.Tensor | None = None,
    d_h: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dy = N^(-1/2) dx U[:, :N·c]; dE[g,i,t] = H[:, S_i] dy[g,t,S_i]; when factors_grad,
    dU[:, :N·c] = N^(-1/2) Σ_{g,t} dx[g,t] y[g,t]ᵀ and dH[:, S_i] = Σ_{g,t} E[g,i,t] dy[g,t,S_i]ᵀ
    (y recomputed), with zero columns from N·c on; else dU, dH are empty (0,) tensors.
    """
    check_contiguous(grad_out=grad_out, embeddings=embeddings, u=u, h=h)
    groups, num, length, d = embeddings.shape
    rows, width = groups * length, d // num
    d_embeddings, d_u, d_h = outputs(
        (d_embeddings, d_u, d_h), (embeddings, u, h), asked=(True, factors_grad, factors_grad)
    )
    dot = _dot_dtype(embeddings, u, h)
    dy = _intermediate(embeddings, dot)
    _gemm(
        (grad_out, (0, d, 0, 1, 0)),  # dx[r, k]
        (u, (0, d, 1, 0)),  # U[k, j], j < N·c
        (dy, (0, num * width, 1, 0)),  # dy[r, j]
        size=(rows, num * width, d),
        inner=(rows, d),
        dot=dot,
        scale_root=num,
    )
    _gemm(
        (dy, (length * num * width, num * width, 0, 1, width)),  # dy[(g,t), i·c + j]: k=j, z=i
        (h, (0, 1, d, width)),  # B[j, e] = H[e, i·c + j]
        (d_embeddings, (num * length * d, d, 1, length * d)),  # dE[g,i,t,e]
        size=(rows, d, width),
        inner=(length, width),
        dot=dot,
        batch=num,
    )
    if factors_grad:
        y = _lowrank_y(embeddings, h, dot, _intermediate(embeddings, dot))
        _gemm(
            (grad_out, (0, 1, 0, d, 0)),  # A[a, r] = dx[r, a]
            (y, (0, num * width, 1, 0)),  # y[r, j]
            (d_u, (0, d, 1, 0)),  # dU[a, j], j < N·c
            size=(d, num * width, rows),
            inner=(d, rows),
            dot=dot,
            scale_root=num,
        )
        _gemm(
            (embeddings, (0, 1, num * length * d, d, length * d)),  # A[e, (g,t)] = E[g,i,t,e]
            (dy, (length * num * width, num * width, 1, width)),  # dy[(g,t), i·c + j]
            (d_h, (0, d, 1, width)),  # dH[e, i·c + j]
            size=(d, width, rows),
            inner=(d, length),
            dot=dot,
            batch=num,
            k_rows=True,
        )
        d_u[:, num * width :].zero_()
        d_h[:, num * width :].zero_()
    return d_embeddings, d_u, d_h


@triton_op("ortho_mux_fwd")
def _ortho_mux_fwd_op(embeddings: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    return ortho_mux_fwd(embeddings, matrices)


@triton_op("ortho_mux_bwd")
def _ortho_mux_bwd_op(
    grad_out: torch.Tensor, embeddings: torch.Tensor, matrices: torch.Tensor, matrices_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    return ortho_mux_bwd(grad_out, embeddings, matrices, matrices_grad)


@triton_op("lowrank_ortho_mux_fwd")
def _lowrank_ortho_mux_fwd_op(
    embeddings: torch.Tensor, u: torch.Tensor, h: torch.Tensor
) -> torch.Tensor:
    return lowrank_ortho_mux_fwd(embeddings, u, h)


@triton_op("lowrank_ortho_mux_bwd")
def _lowrank_ortho_mux_bwd_op(
    grad_out: torch.Tensor,
    embeddings: torch.Tensor,
    u: torch.Tensor,
    h: torch.Tensor,
    factors_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return lowrank_ortho_mux_bwd(grad_out, embeddings, u, h, factors_grad)
