"""Matrix multiplex (SPEC section 1): dense ``ortho`` and factored ``ortho_lowrank``.

ortho:          x[g,t,:] = N^(-1/2) · Σ_i P[i] @ E[g,i,t,:]
ortho_lowrank:  P[i] = U[:, S_i] @ H[:, S_i]ᵀ, computed as N^(-1/2) · U · concat_i(H[:, S_i]ᵀ E_i)
Only the reference backend exists so far.
"""

from __future__ import annotations

import torch

from .. import _backend, reference
from . import _validate


def ortho_mux(
    embeddings: torch.Tensor, matrices: torch.Tensor, *, backend: _backend.Backend = "auto"
) -> torch.Tensor:
    """Multiplex N inputs with matrix transforms: x = N^(-1/2) Σ_i P[i] @ E_i.

    Args:
        embeddings: (B, L, d) with B = B'·N, or grouped (B', N, L, d).
        matrices: (N, d, d), e.g. ``ortho_matrices`` (Haar-random orthogonal).
        backend: "auto", "reference", "triton" or "cuda".

    Returns:
        x of shape (B', L, d) in the embeddings' dtype.
    """
    _validate.transform("matrices", matrices, embeddings, 3, "(N, d, d)")
    n, d, d2 = matrices.shape
    if d != d2:
        raise ValueError(f"matrices must be square (N, d, d), got shape {tuple(matrices.shape)}")
    grouped = _validate.mux_input(embeddings, n, d)
    _backend.resolve("ortho_mux", backend, grouped.device, ())
    return reference.ortho_mux(grouped, matrices)


def lowrank_ortho_mux(
    embeddings: torch.Tensor,
    u: torch.Tensor,
    h: torch.Tensor,
    *,
    num_instances: int | None = None,
    backend: _backend.Backend = "auto",
) -> torch.Tensor:
    """Multiplex with low-rank orthogonal transforms, in factored form (two d² GEMMs).

    Args:
        embeddings: grouped (B', N, L, d), or (B, L, d) together with ``num_instances``.
        u, h: (d, d) orthogonal factors (``lowrank_factors``); block S_i of d // N columns
            belongs to instance i.
        num_instances: N; required for (B, L, d) input, checked against grouped input.
        backend: "auto", "reference", "triton" or "cuda".

    Returns:
        x of shape (B', L, d) in the embeddings' dtype.
    """
    _validate.transform("u", u, embeddings, 2, "(d, d)")
    _validate.transform("h", h, embeddings, 2, "(d, d)")
    d = u.shape[0]
    for name, t in (("u", u), ("h", h)):
        if tuple(t.shape) != (d, d):
            raise ValueError(f"{name} must be square (d, d) with d={d}, got {tuple(t.shape)}")
    if num_instances is None:
        if embeddings.dim() != 4:
            raise ValueError(
                "lowrank_ortho_mux needs num_instances for (B, L, d) embeddings, got shape "
                f"{tuple(embeddings.shape)}"
            )
        num_instances = embeddings.shape[1]
    grouped = _validate.mux_input(embeddings, num_instances, d)
    if d < num_instances:
        raise ValueError(f"low-rank transforms need d >= N, got d={d} and N={num_instances}")
    _backend.resolve("lowrank_ortho_mux", backend, grouped.device, ())
    return reference.lowrank_ortho_mux(grouped, u, h)
