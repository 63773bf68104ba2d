"""Initialisers of the multiplexing transforms (design §1).

Each takes ``generator``: a ``torch.Generator``, an int seed, or None (torch's global RNG).
Random draws happen on the CPU in float64, so a seed gives the same transform on every
device; the result is then cast to ``dtype`` and moved to ``device``.
"""

from __future__ import annotations

import torch

from ._checks import as_int, check_num_instances

GeneratorLike = torch.Generator | int | None


def _cpu_generator(generator: GeneratorLike) -> torch.Generator | None:
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        return None
    return torch.Generator().manual_seed(int(generator))


def _check_sizes(num_instances: object, hidden_size: object) -> tuple[int, int]:
    """N and d as ints (integer-like values accepted), each >= 1."""
    return check_num_instances(num_instances), as_int("hidden_size", hidden_size, 1)


def gaussian_vectors(
    num_instances: int,
    hidden_size: int,
    norm: float = 1.0,
    *,
    generator: GeneratorLike = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """v_i = norm · z_i / ‖z_i‖ with z_i ~ N(0, I_d). Returns (N, d).

    norm = 1 by default; DataMUX's released models used 20 (retrieval warm-up).
    """
    num_instances, hidden_size = _check_sizes(num_instances, hidden_size)
    z = torch.randn(
        num_instances, hidden_size, generator=_cpu_generator(generator), dtype=torch.float64
    )
    v = norm * z / z.norm(dim=1, keepdim=True)
    return v.to(dtype=dtype, device=device)


def binary_vectors(
    num_instances: int,
    hidden_size: int,
    epsilon: float = 0.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """v_i is the 0/1 mask of the chunk [i·c, (i+1)·c), c = d // N, the last chunk running to d.

    An overlap epsilon in [0, 1] widens each chunk by w = epsilon·c/2 on each inner side:
    chunk i starts at floor(i·c − w) (for i > 0) and ends at floor((i+1)·c + w) (for i < N−1),
    the rounding of the published DataMUX code. Returns (N, d).
    """
    num_instances, hidden_size = _check_sizes(num_instances, hidden_size)
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon!r}")
    c = hidden_size // num_instances
    if c == 0:
        raise ValueError(
            f"binary transforms need hidden_size >= num_instances, got hidden_size={hidden_size} "
            f"and num_instances={num_instances}"
        )
    widen = epsilon * c / 2
    v = torch.zeros(num_instances, hidden_size, dtype=dtype, device=device)
    for i in range(num_instances):
        start = i * c if i == 0 else int(i * c - widen)
        end = hidden_size if i == num_instances - 1 else int((i + 1) * c + widen)
        v[i, max(start, 0) : min(end, hidden_size)] = 1
    return v


def haar_orthogonal(
    count: int,
    size: int,
    *,
    generator: GeneratorLike = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``count`` Haar-random orthogonal (size × size) matrices. Returns (count, size, size).

    QR of a Gaussian matrix with the signs of R's diagonal folded into Q, which makes the
    distribution exactly Haar (Mezzadri 2007).
    """
    count, size = _check_sizes(count, size)
    g = torch.randn(count, size, size, generator=_cpu_generator(generator), dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    signs[signs == 0] = 1
    return (q * signs[:, None, :]).to(dtype=dtype, device=device)


def ortho_matrices(
    num_instances: int,
    hidden_size: int,
    *,
    generator: GeneratorLike = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The ``random_ortho`` transform: N Haar-random orthogonal P[i]. Returns (N, d, d)."""
    return haar_orthogonal(
        num_instances, hidden_size, generator=generator, dtype=dtype, device=device
    )


def lowrank_factors(
    num_instances: int,
    hidden_size: int,
    *,
    generator: GeneratorLike = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``random_ortho_low_rank`` transform's factors (U, H), each Haar orthogonal (d, d).

    P[i] = U[:, S_i] @ H[:, S_i]ᵀ with S_i the i-th block of d // N columns.
    """
    num_instances, hidden_size = _check_sizes(num_instances, hidden_size)
    if hidden_size < num_instances:
        raise ValueError(
            f"low-rank transforms need hidden_size >= num_instances (rank d // N >= 1), got "
            f"hidden_size={hidden_size} and num_instances={num_instances}"
        )
    u, h = haar_orthogonal(2, hidden_size, generator=generator, dtype=dtype, device=device)
    return u, h


def lowrank_factors_from_dense(
    matrices: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recover factors (U, H) from dense low-rank matrices P[i] = U[:, S_i] @ H[:, S_i]ᵀ.

    Lets a published checkpoint, which stores the dense (N, d, d) ``instance_embedding``,
    load into the factored layer. Each P[i] must have rank c = d // N; its truncated SVD
    A S Bᵀ gives U[:, S_i] = A S and H[:, S_i] = B, which reproduce P[i] exactly (up to
    rounding) whatever rotation the SVD picks within the block. Columns past N·c stay zero.

    Exact or an error, never a silent truncation: the largest singular value the
    factoring would drop, relative to the largest kept one, must not exceed
    ``lowrank_tolerance(dtype)`` (matrices trained with ``learn_muxing`` are no longer of
    rank c; keep those dense).
    """
    n, d, _ = matrices.shape
    c = d // n
    if c == 0:
        raise ValueError(f"matrices of shape {tuple(matrices.shape)} cannot be low-rank (d < N)")
    p = matrices.to(torch.float64)
    a, s, bh = torch.linalg.svd(p)
    scale = float(s[:, 0].max())
    dropped = float(s[:, c:].max()) / scale if c < d and scale > 0 else 0.0
    tolerance = lowrank_tolerance(matrices.dtype)
    if dropped > tolerance:
        raise ValueError(
            f"instance_embedding {tuple(matrices.shape)} is not of rank d // N = {c}: factoring "
            f"it would drop a singular value {dropped:.3g} times the largest (allowed "
            f"{tolerance:.1g} for {matrices.dtype}); a transform trained with learn_muxing "
            "is dense: load it with learn_muxing=True or as muxing_variant='random_ortho'"
        )
    u = torch.zeros(d, d, dtype=torch.float64, device=matrices.device)
    h = torch.zeros_like(u)
    for i in range(n):
        block = slice(i * c, (i + 1) * c)
        u[:, block] = a[i, :, :c] * s[i, :c]
        h[:, block] = bh[i, :c, :].T
    return u.to(matrices.dtype), h.to(matrices.dtype)


def lowrank_tolerance(dtype: torch.dtype) -> float:
    """The largest relative singular value a low-rank factoring may drop: 64 ulp of ``dtype``
    (a matrix of rank c stored in ``dtype`` has its other singular values at rounding level)."""
    return 64 * torch.finfo(dtype).eps
