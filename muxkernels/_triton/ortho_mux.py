"""Triton matrix multiplex (docs/design.md §1): dense ``ortho`` and factored ``ortho_lowrank``.

    ortho:    x[g,t] = s Σ_i P[i] E[g,i,t],  s = N^(-1/2)
              dE[g,i,t] = s P[i]ᵀ dx[g,t];   dP[i] = s Σ_{g,t} dx[g,t] E[g,i,t]ᵀ
    lowrank:  c = d // N, S_i = [i·c, (i+1)·c), y[g,t,S_i] = H[:, S_i]ᵀ E[g,i,t],
              x[g,t] = s U[:, :N·c] y[g,t]
              dy = s dx U[:, :N·c];  dE[g,i,t] = H[:, S_i] dy[g,t,S_i]
              dU[:, :N·c] = s Σ_{g,t} dx[g,t] y[g,t]ᵀ;  dH[:, S_i] = Σ_{g,t} E[g,i,t] dy[g,t,S_i]ᵀ

Every product is one launch of ``_gemm_kernel``, a tiled ``tl.dot`` GEMM that reads and
writes its operands in place through strides, so E (B', N, L, d) is never permuted or
copied. A row index r = g·L + t of E is split into (g, t) once per tile row (``SPLIT_M``);
the inner index of a product over instances (i, e) or over rows (g, t) is walked tile by
tile, so a K tile never straddles two instances or two groups and stays contiguous. No
index is wrapped with a modulo: out-of-range rows are masked, so Triton sees which axis of
each operand is contiguous and moves 128-bit vectors (cp.async into shared memory). Each
output tile is owned by one program that loops over the whole K range: reductions over
rows (dP, dU, dH) are deterministic, with no split-K and no atomics.

Low rank: each instance's block of c columns is padded to cp = c rounded up to 16
(``_padded``), in small repacked copies of U and H (N·d·cp values each) and in the
intermediates y and dy, so that every GEMM tile starts 16-aligned (c = 153, 76, 38, 19 at
d = 768, N = 5…40 are not); the padding columns are zero and drop out.

Precision: fp32 accumulation (fp64 for float64 data). When both operands are half (the
data's dtype) the dot runs in it, exactly as torch.matmul with fp32 accumulation. When
half data meets a float32 operand (fp32 parameters, or the fp32 intermediates y and dy
of the low-rank path, which are never rounded to half) the dot runs on TF32 tensor cores:
half values are exact in TF32 and fp32 ones lose less than half data's own rounding.
fp32 data runs exact fp32 dots (input_precision="ieee", as torch.matmul without TF32);
float64 runs fp64 dots.
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
    a_ptr, b_ptr, c_ptr,
    M, N, K, M_INNER, K_INNER,
    a_mo, a_mi, a_ko, a_ki, a_z,
    b_ko, b_ki, b_n, b_z,
    c_mo, c_mi, c_n, c_z,
    scale_root,
    ACC: tl.constexpr, DOT: tl.constexpr, PRECISION: tl.constexpr, SPLIT_M: tl.constexpr,
    EVEN_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    """C[z,m,n] = (Σ_k A[z,m,k] B[z,k,n]) / sqrt(scale_root) for one (BLOCK_M, BLOCK_N) tile.

    With SPLIT_M, row m is (mo, mi) = (m // M_INNER, m % M_INNER), each part with its own
    stride (A[z,m,k] at z·a_z + mo·a_mo + mi·a_mi + …), computed once per tile; otherwise
    m·a_mi. K is walked as K // K_INNER outer steps (ko) of ceil(K_INNER / BLOCK_K) tiles
    (ki contiguous within a tile); every offset inside the loop is a scalar added to the
    tile's base pointers.
    """
    pid = tl.program_id(0)
    z = tl.program_id(1).to(tl.int64)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    # Grouped ordering: GROUP_M row tiles share each column tile while it is in L2.
    group_size = tl.minimum(grid_m - (pid // (GROUP_M * grid_n)) * GROUP_M, GROUP_M)
    pid_m = (pid // (GROUP_M * grid_n)) * GROUP_M + (pid % group_size)
    pid_n = (pid % (GROUP_M * grid_n)) // group_size

    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    kk = tl.arange(0, BLOCK_K)
    m_mask = m < M
    n_mask = n < N
    m64 = m.to(tl.int64)
    if SPLIT_M:
        a_rows = (m64 // M_INNER) * a_mo + (m64 % M_INNER) * a_mi
        c_rows = (m64 // M_INNER) * c_mo + (m64 % M_INNER) * c_mi
    else:
        a_rows = m64 * a_mi
        c_rows = m64 * c_mi
    a_tile = a_ptr + z * a_z + a_rows[:, None] + (kk * a_ki)[None, :]
    b_tile = b_ptr + z * b_z + (kk * b_ki)[:, None] + (n.to(tl.int64) * b_n)[None, :]
    k_tiles = tl.cdiv(K_INNER, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for step in range(0, (K // K_INNER) * k_tiles):
        ko = (step // k_tiles).to(tl.int64)
        k0 = (step % k_tiles) * BLOCK_K
        a_at = a_tile + (ko * a_ko + k0 * a_ki)
        b_at = b_tile + (ko * b_ko + k0 * b_ki)
        if EVEN_K:
            a = tl.load(a_at, mask=m_mask[:, None], other=0.0)
            b = tl.load(b_at, mask=n_mask[None, :], other=0.0)
        else:
            k_mask = k0 + kk < K_INNER
            a = tl.load(a_at, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
            b = tl.load(b_at, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        acc = tl.dot(a.to(DOT), b.to(DOT), acc, input_precision=PRECISION, out_dtype=ACC)
    acc = _inverse_sqrt_scale(acc, scale_root, ACC)
    c_at = c_ptr + z * c_z + c_rows[:, None] + (n.to(tl.int64) * c_n)[None, :]
    tl.store(c_at, acc.to(c_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def _fit(size: int, largest: int) -> int:
    """The tile edge for a dimension of ``size``: a power of two in [16, largest]."""
    return max(16, min(largest, triton.next_power_of_2(size)))


def _tiles(
    m: int, n: int, k: int, batch: int, dot: torch.dtype, precision: str, device: torch.device
) -> dict[str, int]:
    """Tile sizes, warps and pipeline stages for an (m × k) @ (k × n) GEMM, batch times.

    Half dots: 128×128×64 tiles, 8 warps, 3 stages (tensor cores); when that gives fewer
    tiles than the GPU has SMs, 128×64 tiles (up to 3 programs share an SM). TF32 dots: the
    same with 32-deep K tiles (fp32 operands take twice the shared memory). Exact fp32 dots
    run on FMA units (64×64×32), fp64 on fp64 MMA (32×32×16). Interpreter: tiles of 16-32,
    so that test shapes span several tiles.
    """
    if interpreting(device):
        tile, warps, stages = (_fit(m, 32), _fit(n, 32), _fit(k, 32)), 1, 1
    elif dot in _HALF or precision == "tf32":
        tile, warps, stages = (128, 128, 64 if dot in _HALF else 32), 8, 3
        if triton.cdiv(m, 128) * triton.cdiv(n, 128) * batch < multiprocessors(device):
            tile = (128, 64, tile[2])
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


def _dot_mode(data: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.dtype, str]:
    """(operand dtype, input_precision) of one product of ``data``'s op (module docstring)."""
    if torch.float64 in (data.dtype, a.dtype, b.dtype):
        return torch.float64, "ieee"
    if data.dtype == torch.float32:
        return torch.float32, "ieee"
    if a.dtype == b.dtype == data.dtype:
        return data.dtype, "tf32"  # a half dot: the precision argument does not apply
    return torch.float32, "tf32"


def _gemm(
    a: tuple[torch.Tensor, tuple[int, int, int, int, int]],
    b: tuple[torch.Tensor, tuple[int, int, int, int]],
    c: tuple[torch.Tensor, tuple[int, int, int, int]],
    *,
    size: tuple[int, int, int],
    inner: tuple[int, int],
    data: torch.Tensor,
    scale_root: int = 1,
    batch: int = 1,
) -> None:
    """C[z] = (A[z] @ B[z]) / sqrt(scale_root) for z < batch, each operand read in place.

    a = (tensor, (mo, mi, ko, ki, z) strides), b = (tensor, (ko, ki, n, z)),
    c = (tensor, (mo, mi, n, z)); size = (M, N, K); inner = (M_INNER, K_INNER), the
    splits of m and k (see ``_gemm_kernel``); ``data`` is the op's data (E or dx), which
    decides the dot's precision with the operands' dtypes.
    """
    m, n, k = size
    if m * n * batch == 0:
        return
    m_inner, k_inner = (max(1, part) for part in inner)
    dot, precision = _dot_mode(data, a[0], b[0])
    tiles = _tiles(m, n, k_inner, batch, dot, precision, c[0].device)
    grid = (triton.cdiv(m, tiles["BLOCK_M"]) * triton.cdiv(n, tiles["BLOCK_N"]), batch)
    _gemm_kernel[grid](
        a[0], b[0], c[0], m, n, k, m_inner, k_inner, *a[1], *b[1], *c[1], scale_root,
        ACC=tl_dtype(torch.float64 if dot == torch.float64 else torch.float32),
        DOT=tl_dtype(dot), PRECISION=precision, SPLIT_M=m_inner < m,
        EVEN_K=k_inner % tiles["BLOCK_K"] == 0, GROUP_M=8, **tiles,
    )  # fmt: skip


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
        data=embeddings,
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
    else an empty (0,) tensor) is N GEMMs dxᵀ @ E_i with inner dimension B'·L, walked group
    by group (L rows at a time).
    """
    check_contiguous(grad_out=grad_out, embeddings=embeddings, matrices=matrices)
    groups, num, length, d = embeddings.shape
    d_embeddings, d_matrices = outputs(
        (d_embeddings, d_matrices), (embeddings, matrices), asked=(True, matrices_grad)
    )
    _gemm(
        (grad_out, (length * d, d, 0, 1, 0)),  # dx[g,t,j]: m=(g,t), k=j
        (matrices, (0, d, 1, d * d)),  # P[i,j,e]: k=j, n=e, z=i
        (d_embeddings, (num * length * d, d, 1, length * d)),  # dE[g,i,t,e]
        size=(groups * length, d, d),
        inner=(length, d),
        data=grad_out,
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
            data=grad_out,
            scale_root=num,
            batch=num,
        )
    return d_embeddings, d_matrices


def _padded(d: int, num: int) -> tuple[int, int]:
    """(c, cp): the low-rank block width c = d // N and c rounded up to 16."""
    c = d // num
    return c, -(-c // 16) * 16


def _packed_h(h: torch.Tensor, num: int, dtype: torch.dtype) -> torch.Tensor:
    """Hp (N, d, cp): Hp[i, :, :c] = H[:, S_i], zero past c."""
    d = h.shape[0]
    c, cp = _padded(d, num)
    hp = h.new_zeros((num, d, cp), dtype=dtype)
    hp[:, :, :c] = h[:, : num * c].reshape(d, num, c).transpose(0, 1)
    return hp


def _packed_u(u: torch.Tensor, num: int, dtype: torch.dtype) -> torch.Tensor:
    """Up (d, N·cp): Up[:, i·cp : i·cp + c] = U[:, S_i], zero in the padding columns."""
    d = u.shape[0]
    c, cp = _padded(d, num)
    up = u.new_zeros((d, num, cp), dtype=dtype)
    up[:, :, :c] = u[:, : num * c].reshape(d, num, c)
    return up.reshape(d, num * cp)


def _lowrank_y(embeddings: torch.Tensor, hp_t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y[(g,t), i·cp + j] = Σ_e E[g,i,t,e] Hp[i,e,j]: a grouped GEMM over the instances i,
    reading Hp through its transpose hp_t (N, cp, d), so both operands are contiguous along
    e (TF32 tensor cores take fp32 operands only that way)."""
    groups, num, length, d = embeddings.shape
    cp = hp_t.shape[1]
    _gemm(
        (embeddings, (num * length * d, d, 0, 1, length * d)),  # E[g,i,t,e]: m=(g,t), k=e, z=i
        (hp_t, (0, 1, d, cp * d)),  # Hp[i,e,j] = hp_t[i,j,e]: k=e, n=j, z=i
        (y, (length * num * cp, num * cp, 1, cp)),  # y[(g,t), i·cp + j]
        size=(groups * length, cp, d),
        inner=(length, d),
        data=embeddings,
        batch=num,
    )
    return y


def lowrank_ortho_mux_fwd(
    embeddings: torch.Tensor, u: torch.Tensor, h: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x[g,t] = N^(-1/2) U[:, :N·c] y[g,t] with y[g,t,S_i] = H[:, S_i]ᵀ E[g,i,t], c = d // N.

    Two GEMMs of d² per row (the grouped one reads E in place) over 16-aligned padded
    blocks; ``out``: optional (B',L,d).
    """
    check_contiguous(embeddings=embeddings, u=u, h=h)
    groups, num, length, d = embeddings.shape
    if out is None:
        out = embeddings.new_empty((groups, length, d))
    rows, width = groups * length, num * _padded(d, num)[1]
    inter = acc_dtype(embeddings, u, h)  # y and dy: float32 for half data, never rounded
    hp_t = _packed_h(h, num, inter).transpose(1, 2).contiguous()
    y = _lowrank_y(embeddings, hp_t, embeddings.new_empty((rows, width), dtype=inter))
    up = _packed_u(u, num, inter)
    _gemm(
        (y, (0, width, 0, 1, 0)),  # y[r, k]
        (up, (0, 1, width, 0)),  # B[k, j] = Up[j, k]
        (out, (0, d, 1, 0)),  # x[r, j]
        size=(rows, d, width),
        inner=(rows, width),
        data=embeddings,
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
    c, cp = _padded(d, num)
    rows, width = groups * length, num * cp
    d_embeddings, d_u, d_h = outputs(
        (d_embeddings, d_u, d_h), (embeddings, u, h), asked=(True, factors_grad, factors_grad)
    )
    inter = acc_dtype(embeddings, u, h)  # y and dy: float32 for half data, never rounded
    up_t, hp = _packed_u(u, num, inter).t().contiguous(), _packed_h(h, num, inter)
    dy = embeddings.new_empty((rows, width), dtype=inter)
    _gemm(
        (grad_out, (0, d, 0, 1, 0)),  # dx[r, k]
        (up_t, (0, 1, d, 0)),  # Up[k, j] = up_t[j, k]
        (dy, (0, width, 1, 0)),  # dy[r, j]
        size=(rows, width, d),
        inner=(rows, d),
        data=grad_out,
        scale_root=num,
    )
    _gemm(
        (dy, (length * width, width, 0, 1, cp)),  # dy[(g,t), i·cp + j]: k=j, z=i
        (hp, (0, 1, cp, d * cp)),  # B[j, e] = Hp[i,e,j]
        (d_embeddings, (num * length * d, d, 1, length * d)),  # dE[g,i,t,e]
        size=(rows, d, cp),
        inner=(length, cp),
        data=grad_out,
        batch=num,
    )
    if factors_grad:
        hp_t = hp.transpose(1, 2).contiguous()
        y = _lowrank_y(embeddings, hp_t, embeddings.new_empty((rows, width), dtype=inter))
        d_up = embeddings.new_empty((d, width), dtype=inter)
        _gemm(
            (grad_out, (0, 1, 0, d, 0)),  # A[a, r] = dx[r, a]
            (y, (0, width, 1, 0)),  # y[r, j]
            (d_up, (0, width, 1, 0)),  # dUp[a, j]
            size=(d, width, rows),
            inner=(d, rows),
            data=grad_out,
            scale_root=num,
        )
        d_hp = embeddings.new_empty((num, d, cp), dtype=inter)
        _gemm(
            (embeddings, (0, 1, num * length * d, d, length * d)),  # A[e, (g,t)] = E[g,i,t,e]
            (dy, (length * width, width, 1, cp)),  # dy[(g,t), i·cp + j]
            (d_hp, (0, cp, 1, d * cp)),  # dHp[i, e, j]
            size=(d, cp, rows),
            inner=(d, length),
            data=grad_out,
            batch=num,
        )
        d_u[:, : num * c].copy_(d_up.reshape(d, num, cp)[:, :, :c].reshape(d, num * c))
        d_h[:, : num * c].copy_(d_hp[:, :, :c].transpose(0, 1).reshape(d, num * c))
        d_u[:, num * c :].zero_()
        d_h[:, num * c :].zero_()
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
