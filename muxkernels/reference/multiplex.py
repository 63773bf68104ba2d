"""Plain-PyTorch multiplexers (design §1), written straight from the formulas.

Shapes: embeddings E is (B', N, L, d): group g, instance i, position t, feature k.
Every function computes in float32 (float64 when an input is float64) and returns
the embeddings' dtype. Autograd through these functions is the reference backward;
the explicit ``*_backward`` functions spell the same gradients out as formulas.
"""

from __future__ import annotations

import math

import torch

from ._common import compute_dtype


def hadamard_mux(embeddings: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """x[g,t,:] = (1/N) · Σ_i v[i,:] ⊙ E[g,i,t,:].

    embeddings: (B', N, L, d); vectors: (N, d). Returns (B', L, d).
    """
    n = embeddings.shape[1]
    ct = compute_dtype(embeddings, vectors)
    e, v = embeddings.to(ct), vectors.to(ct)
    x = (v[None, :, None, :] * e).sum(dim=1) / n
    return x.to(embeddings.dtype)


def hadamard_mux_backward(
    embeddings: torch.Tensor, vectors: torch.Tensor, grad_out: torch.Tensor, *, vectors_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dE[g,i,t] = (1/N) v_i ⊙ dx[g,t];  dv_i = (1/N) Σ_{g,t} E[g,i,t] ⊙ dx[g,t].

    Returns (dE in the embeddings' dtype, dv in the vectors' dtype or None).
    """
    n = embeddings.shape[1]
    ct = compute_dtype(embeddings, vectors, grad_out)
    e, v, dx = embeddings.to(ct), vectors.to(ct), grad_out.to(ct)
    d_e = (v[None, :, None, :] * dx[:, None, :, :] / n).to(embeddings.dtype)
    d_v = None
    if vectors_grad:
        d_v = ((e * dx[:, None, :, :]).sum(dim=(0, 2)) / n).to(vectors.dtype)
    return d_e, d_v


def ortho_mux(embeddings: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """x[g,t,:] = N^(-1/2) · Σ_i P[i] @ E[g,i,t,:].

    embeddings: (B', N, L, d); matrices P: (N, d, d). Returns (B', L, d).
    Equivalently x = E' @ [P_1ᵀ; …; P_Nᵀ] with E' the (B'·L, N·d) reading of E.
    """
    n = embeddings.shape[1]
    ct = compute_dtype(embeddings, matrices)
    e, p = embeddings.to(ct), matrices.to(ct)
    x = torch.einsum("nkj,gntj->gtk", p, e) / math.sqrt(n)
    return x.to(embeddings.dtype)


def ortho_mux_backward(
    embeddings: torch.Tensor, matrices: torch.Tensor, grad_out: torch.Tensor, *, matrices_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dE[g,i,t] = N^(-1/2) P[i]ᵀ dx[g,t];  dP[i] = N^(-1/2) Σ_{g,t} dx[g,t] E[g,i,t]ᵀ."""
    n = embeddings.shape[1]
    ct = compute_dtype(embeddings, matrices, grad_out)
    e, p, dx = embeddings.to(ct), matrices.to(ct), grad_out.to(ct)
    scale = 1.0 / math.sqrt(n)
    d_e = (torch.einsum("nkj,gtk->gntj", p, dx) * scale).to(embeddings.dtype)
    d_p = None
    if matrices_grad:
        d_p = (torch.einsum("gtk,gntj->nkj", dx, e) * scale).to(matrices.dtype)
    return d_e, d_p


def lowrank_block(d: int, n: int) -> int:
    """Width c = d // N of each instance's column block S_i = [i·c, (i+1)·c)."""
    return d // n


def lowrank_ortho_mux(embeddings: torch.Tensor, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Low-rank ortho mux in factored form (MUX-PLMs).

    P[i] = U[:, S_i] @ H[:, S_i]ᵀ, so Σ_i P[i] e_i = U · concat_i(H[:, S_i]ᵀ e_i), and
    x[g,t] = N^(-1/2) · U[:, :N·c] · concat_i(H[:, S_i]ᵀ E[g,i,t]) with c = d // N.
    Two GEMMs of d² each instead of N·d². embeddings: (B', N, L, d); u, h: (d, d).
    """
    groups, n, length, d = embeddings.shape
    c = lowrank_block(d, n)
    ct = compute_dtype(embeddings, u, h)
    e, u_, h_ = embeddings.to(ct), u.to(ct), h.to(ct)
    h_blocks = h_[:, : n * c].reshape(d, n, c)  # column block i of H is h_blocks[:, i, :]
    z = torch.einsum("gntj,jnc->gtnc", e, h_blocks).reshape(groups, length, n * c)
    x = z @ u_[:, : n * c].T / math.sqrt(n)
    return x.to(embeddings.dtype)


def lowrank_dense(u: torch.Tensor, h: torch.Tensor, num_instances: int) -> torch.Tensor:
    """The dense (N, d, d) matrices P[i] = U[:, S_i] @ H[:, S_i]ᵀ of a low-rank transform."""
    d = u.shape[0]
    c = lowrank_block(d, num_instances)
    blocks = [slice(i * c, (i + 1) * c) for i in range(num_instances)]
    return torch.stack([u[:, s] @ h[:, s].T for s in blocks])


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
    """The fused front end: token ids of N instances → one multiplexed embedding.

    e[g,i,t] = LN(word[ids[g,i,t]] + pos[position_ids[g,i,t]] + type[token_type_ids[g,i,t]])
    m[g,t]   = (1/N) · Σ_i v_i ⊙ e[g,i,t]
    x[g,t]   = LN(m[g,t] + pos[mixed_position_ids[g,t]] + type[mixed_token_type_ids[g,t]])
    The same embedding module (tables and LayerNorm) serves both steps, as in the published
    code, which calls it twice; dropout is not applied (eval mode).

    input_ids, position_ids, token_type_ids: (B', N, L); mixed_*: (B', L); tables (V_*, d);
    ln_weight, ln_bias: (d,); vectors: (N, d). Returns (B', L, d) in the tables' dtype.
    """
    d = word_embeddings.shape[1]
    ct = compute_dtype(word_embeddings, vectors)
    word, pos, typ = (
        t.to(ct) for t in (word_embeddings, position_embeddings, token_type_embeddings)
    )
    ln_w, ln_b = ln_weight.to(ct), ln_bias.to(ct)
    layer_norm = torch.nn.functional.layer_norm
    e = word[input_ids] + pos[position_ids] + typ[token_type_ids]
    e = layer_norm(e, (d,), ln_w, ln_b, eps)
    m = hadamard_mux(e, vectors.to(ct))
    x = layer_norm(m + pos[mixed_position_ids] + typ[mixed_token_type_ids], (d,), ln_w, ln_b, eps)
    return x.to(word_embeddings.dtype)
