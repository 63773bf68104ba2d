"""The multiplexers on the CPU (formulas: docs/design.md, section 1).

Shapes as in ``muxkernels.reference``: E (B', N, L, d) → x (B', L, d); results in the
data's dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._chunks import OWN_DTYPES, RUNNING_SUM_ELEMENTS, group_chunks, to_float32


def hadamard_mux(embeddings: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """x[g,t] = (1/N) Σ_i v_i ⊙ E[g,i,t]: one product and one mean over instances for a
    small input, a running sum (``_running_sum``) for a large one."""
    if embeddings.dtype not in OWN_DTYPES:
        return hadamard_mux(*to_float32(embeddings, vectors)).to(embeddings.dtype)
    groups, n, length, d = embeddings.shape
    if groups * length * d > RUNNING_SUM_ELEMENTS:
        return _running_sum(embeddings, vectors / n)
    return torch.mul(embeddings, vectors.unsqueeze(1)).mean(1)


def _running_sum(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_i weights[i] ⊙ x[:, i] for x (B', N, L, d) and weights (N, d), one instance at a
    time into one (B', L, d) sum: each instance is read once and no (B', N, L, d) product
    is written (autograd keeps one node per instance, and unbind's backward stacks the
    instances' gradients in one copy)."""
    instances, rows = x.unbind(1), weights.unbind(0)
    total = torch.mul(instances[0], rows[0])
    for instance, row in zip(instances[1:], rows[1:], strict=True):
        total.addcmul_(instance, row)
    return total


def ortho_mux(
    embeddings: torch.Tensor, matrices: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """x = scale · E' @ [P_1ᵀ; …; P_Nᵀ], one GEMM with inner dimension N·d, E' = E read as
    (B'·L, N·d) (a permuted copy of E, or of nothing when B' = 1 or L = 1). ``scale`` is
    N^(-1/2) by default; the image multiplexer's plain sum passes 1."""
    if embeddings.dtype not in OWN_DTYPES:
        return ortho_mux(*to_float32(embeddings, matrices), scale).to(embeddings.dtype)
    groups, n, length, d = embeddings.shape
    rows = embeddings.transpose(1, 2).reshape(groups * length, n * d)
    stacked = matrices.transpose(1, 2).reshape(n * d, d)
    scale = 1.0 / math.sqrt(n) if scale is None else scale
    return _scaled_mm(rows, stacked, scale).view(groups, length, d)


# addmm's addend for beta = 0 (never read): one per dtype, not a new tensor per call
_ZERO = {dtype: torch.zeros((), dtype=dtype) for dtype in OWN_DTYPES}


def _scaled_mm(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """scale · (a @ b), the scale applied by the GEMM itself (a plain mm for scale 1)."""
    if scale == 1.0:
        return torch.mm(a, b)
    return torch.addmm(_ZERO[a.dtype], a, b, beta=0, alpha=scale)


def lowrank_ortho_mux(embeddings: torch.Tensor, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x[g,t] = N^(-1/2) U[:, :N·c] concat_i(H[:, S_i]ᵀ E[g,i,t]), c = d // N: one batched
    GEMM over the instances (E read instance-major, each instance with its block of H),
    then one GEMM with U, scaled by N^(-1/2)."""
    if embeddings.dtype not in OWN_DTYPES:
        return lowrank_ortho_mux(*to_float32(embeddings, u, h)).to(embeddings.dtype)
    groups, n, length, d = embeddings.shape
    width = n * (d // n)  # N·c: the columns of U and H the instances use
    if width < d:
        u, h = u[:, :width], h[:, :width]
    blocks = h.view(d, n, width // n).transpose(0, 1)  # (N, d, c)
    per_instance = embeddings.transpose(0, 1).reshape(n, groups * length, d)
    z = torch.bmm(per_instance, blocks).transpose(0, 1).reshape(groups * length, width)
    scale = 1.0 / math.sqrt(n)
    if z.requires_grad:
        # N^(-1/2) on U (d·N·c elements) rather than as addmm's alpha: autograd then scales
        # the gradient inside its GEMM instead of by one more call (62 -> 51 us backward at
        # the bench's N = 2); without gradients alpha saves that multiplication instead
        return torch.mm(z, u.t() * scale).view(groups, length, d)
    return _scaled_mm(z, u.t(), scale).view(groups, length, d)


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
    they are the same). Without gradients, built a few groups at a time, so the N
    per-instance embeddings of a chunk stay in cache.
    """
    if word_embeddings.dtype not in OWN_DTYPES:
        params = (word_embeddings, position_embeddings, token_type_embeddings, ln_weight, ln_bias)
        ids = (position_ids, token_type_ids, mixed_position_ids, mixed_token_type_ids)
        x = embed_mux(input_ids, *to_float32(*params, vectors), *ids, eps)
        return x.to(word_embeddings.dtype)
    groups, n, length = input_ids.shape
    word, pos, typ = word_embeddings, position_embeddings, token_type_embeddings
    d = word.shape[1]
    weights = vectors.unsqueeze(1)  # (N, 1, d)
    first = _shared_rows(pos, typ, position_ids, token_type_ids, length)
    same = position_ids is mixed_position_ids and token_type_ids is mixed_token_type_ids
    second = (
        first if same else _shared_rows(pos, typ, mixed_position_ids, mixed_token_type_ids, length)
    )
    # With gradients recorded, one piece: each chunk's lookup would give the word table a
    # dense (V, d) gradient of its own, to be added up (5.5x slower at V = 50265, d = 768).
    chunks = [slice(0, groups)]
    if not torch.is_grad_enabled():
        chunks = group_chunks(groups, 3 * n * length * d * word.element_size())
    outputs = []
    for chunk in chunks:
        s = F.embedding(input_ids if len(chunks) == 1 else input_ids[chunk], word)
        if first is None:
            s = s + _rows(pos, position_ids, chunk, length) + _rows(typ, token_type_ids, chunk, 1)
        else:
            s = s + first
        normed = torch.layer_norm(s, (d,), ln_weight, ln_bias, eps)
        if normed.shape[0] * length * d > RUNNING_SUM_ELEMENTS:
            mixed = _running_sum(normed, vectors)
        else:
            mixed = torch.linalg.vecdot(normed, weights, dim=1)
        if second is None:
            added = _rows(pos, mixed_position_ids, chunk, length)
            added = added + _rows(typ, mixed_token_type_ids, chunk, 1)
        else:
            added = second
        pre = torch.add(added, mixed, alpha=1.0 / n)
        outputs.append(torch.layer_norm(pre, (d,), ln_weight, ln_bias, eps))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


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
