"""The multiplexers on the CPU (formulas: docs/design.md, section 1).

Shapes as in ``muxkernels.reference``: E (B', N, L, d) → x (B', L, d); results in the
data's dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._chunks import cast, compute_dtype, group_chunks


def hadamard_mux(embeddings: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """x[g,t] = Σ_i (v_i / N) ⊙ E[g,i,t]: one multiply and one reduction over instances."""
    ct = compute_dtype(embeddings)
    scaled = cast(vectors, ct) * (1.0 / embeddings.shape[1])
    x = torch.linalg.vecdot(cast(embeddings, ct), scaled.unsqueeze(1), dim=1)
    return cast(x, embeddings.dtype)


def ortho_mux(embeddings: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """x = E' @ [P_1ᵀ; …; P_Nᵀ] / √N, one GEMM with inner dimension N·d, E' = E read as
    (B'·L, N·d) (a permuted copy of E, or of nothing when B' = 1)."""
    groups, n, length, d = embeddings.shape
    ct = compute_dtype(embeddings)
    rows = cast(embeddings, ct).transpose(1, 2).reshape(groups * length, n * d)
    stacked = cast(matrices, ct).transpose(1, 2).reshape(n * d, d) * (1.0 / math.sqrt(n))
    return cast((rows @ stacked).view(groups, length, d), embeddings.dtype)


def lowrank_ortho_mux(embeddings: torch.Tensor, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x[g,t] = N^(-1/2) U[:, :N·c] concat_i(H[:, S_i]ᵀ E[g,i,t]), c = d // N: one batched
    GEMM over the instances (each with its block of H), then one GEMM with U."""
    groups, n, length, d = embeddings.shape
    c = d // n
    ct = compute_dtype(embeddings)
    blocks = cast(h, ct)[:, : n * c].view(d, n, c).transpose(0, 1)  # (N, d, c)
    z = torch.matmul(cast(embeddings, ct), blocks)  # (B', N, L, c)
    z = z.transpose(1, 2).reshape(groups, length, n * c)
    x = F.linear(z, cast(u, ct)[:, : n * c]) * (1.0 / math.sqrt(n))
    return cast(x, embeddings.dtype)


def embed_mux(
    input_ids: torch.Tensor,
    word_embeddings: torch.Tensor,
    position_embeddings: torch.Tensor,
    token_type_embeddings: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    vectors: torch.Tensor,
    position_ids: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    mixed_position_ids: torch.Tensor | None,
    mixed_token_type_ids: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """The fused front end: e = LN(word[ids] + pos + type) per instance, m = Σ_i (v_i/N) ⊙ e_i,
    x = LN(m + pos' + type').

    input_ids: (B', N, L). Every other id argument is None (positions 0…L-1, token type
    0), an (L,) vector shared by all rows, or per row: (B', N, L) for the instances, (B', L)
    for the mixture. Shared ids are looked up once and broadcast (once for both passes when
    they are the same). Built a few groups at a time, so the N per-instance embeddings of
    a chunk stay in cache.
    """
    groups, n, length = input_ids.shape
    d = word_embeddings.shape[1]
    ct = compute_dtype(word_embeddings)
    word, pos, typ = (
        cast(t, ct) for t in (word_embeddings, position_embeddings, token_type_embeddings)
    )
    ln_w, ln_b = cast(ln_weight, ct), cast(ln_bias, ct)
    weights = cast(vectors, ct).unsqueeze(1)  # (N, 1, d)
    first = _shared_rows(pos, typ, position_ids, token_type_ids, length)
    same = position_ids is mixed_position_ids and token_type_ids is mixed_token_type_ids
    second = (
        first if same else _shared_rows(pos, typ, mixed_position_ids, mixed_token_type_ids, length)
    )
    outputs = []
    for chunk in group_chunks(groups, 3 * n * length * d * word.element_size()):
        s = F.embedding(input_ids[chunk], word)
        if first is None:
            s = s + _rows(pos, position_ids, chunk, length) + _rows(typ, token_type_ids, chunk, 1)
        else:
            s = s + first
        mixed = torch.linalg.vecdot(F.layer_norm(s, (d,), ln_w, ln_b, eps), weights, dim=1)
        if second is None:
            added = _rows(pos, mixed_position_ids, chunk, length)
            added = added + _rows(typ, mixed_token_type_ids, chunk, 1)
        else:
            added = second
        outputs.append(F.layer_norm(torch.add(added, mixed, alpha=1.0 / n), (d,), ln_w, ln_b, eps))
    x = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    return cast(x, word_embeddings.dtype)


def _shared_rows(
    pos: torch.Tensor,
    typ: torch.Tensor,
    pos_ids: torch.Tensor | None,
    type_ids: torch.Tensor | None,
    length: int,
) -> torch.Tensor | None:
    """pos[pos_ids] + typ[type_ids] as one (L, d) addend when neither is per row, else None."""
    if (pos_ids is not None and pos_ids.dim() > 1) or (type_ids is not None and type_ids.dim() > 1):
        return None
    return _rows(pos, pos_ids, slice(None), length) + _rows(typ, type_ids, slice(None), 1)


def _rows(
    table: torch.Tensor, ids: torch.Tensor | None, chunk: slice, default: int
) -> torch.Tensor:
    """table[ids] for the groups of ``chunk``; ``table[:default]`` for None ids (rows 0…L-1
    for positions, row 0 for token types), broadcast like shared (L,) ids."""
    if ids is None:
        return table[:default]
    return F.embedding(ids if ids.dim() == 1 else ids[chunk], table)
