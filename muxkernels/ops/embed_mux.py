"""The fused front end (SPEC section 1): token ids of N instances → multiplexed embedding.

e = LN(word[ids] + pos[position_ids] + type[token_type_ids]) per instance, mixed by the
hadamard transform m = (1/N) Σ_i v_i ⊙ e_i, then x = LN(m + pos[mixed_position_ids] +
type[mixed_token_type_ids]) with the same embedding module, as the published code does
by calling it twice. Only the reference backend exists so far; a kernel can go from ids
to x without writing the N per-instance embeddings.
"""

from __future__ import annotations

import torch

from .. import _backend, reference
from .._checks import (
    check_floating,
    check_integer,
    check_nonempty,
    check_rank,
    check_same_device,
    check_shape,
    check_tensor,
    group_batch,
)
from . import _validate


def _ids(
    name: str,
    ids: torch.Tensor | None,
    shape: tuple[int, ...],
    vocab: int,
    table: str,
    input_ids: torch.Tensor,
) -> torch.Tensor:
    """An id tensor broadcast to ``shape`` (None → zeros), with values in [0, vocab)."""
    if ids is None:
        return torch.zeros(shape, dtype=torch.long, device=input_ids.device)
    check_tensor(name, ids)
    check_integer(name, ids)
    if ids is not input_ids:
        check_same_device("input_ids", input_ids, **{name: ids})
    if ids.dim() == 1:
        check_shape(name, ids, shape[-1:], "one id per position")
        ids = ids.expand(shape)
    elif len(shape) == 3 and ids.dim() == 2 and ids.shape[0] == shape[0] * shape[1]:
        ids = group_batch(name, ids, shape[1])
    check_shape(name, ids, shape, "the shape of the ids it goes with, or (L,)")
    if not torch.compiler.is_compiling() and ids.numel() > 0:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(f"{name} holds values in [{lo}, {hi}] but {table} has {vocab} rows")
    return ids.long()


def embed_mux(
    input_ids: torch.Tensor,
    word_embeddings: torch.Tensor,
    position_embeddings: torch.Tensor,
    token_type_embeddings: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    vectors: torch.Tensor,
    *,
    position_ids: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    mixed_position_ids: torch.Tensor | None = None,
    mixed_token_type_ids: torch.Tensor | None = None,
    eps: float = 1e-5,
    backend: _backend.Backend = "auto",
) -> torch.Tensor:
    """Embed N instances' token ids and multiplex them into one (B', L, d) embedding.

    Args:
        input_ids: (B, L) with B = B'·N (row g·N+i is instance i of group g), or (B', N, L).
        word_embeddings, position_embeddings, token_type_embeddings: (V_word, d),
            (V_pos, d), (V_type, d) tables of the embedding module.
        ln_weight, ln_bias: (d,) its LayerNorm; eps: the LayerNorm eps.
        vectors: (N, d) hadamard transform vectors.
        position_ids: per-instance positions, shaped like input_ids or (L,); default
            0…L-1 (pass RoBERTa's padding_idx + 1 + t yourself).
        token_type_ids: like position_ids; default 0.
        mixed_position_ids, mixed_token_type_ids: (B', L) or (L,) for the second pass;
            defaults 0…L-1 and 0.
        backend: "auto", "reference", "triton" or "cuda".

    Returns:
        x of shape (B', L, d) in the tables' dtype.
    """
    check_tensor("input_ids", input_ids)
    check_rank("input_ids", input_ids, (2, 3), "(B, L) or (B', N, L)")
    check_nonempty("input_ids", input_ids)
    check_integer("input_ids", input_ids)
    tables = {
        "word_embeddings": word_embeddings,
        "position_embeddings": position_embeddings,
        "token_type_embeddings": token_type_embeddings,
    }
    for name, table in tables.items():
        check_tensor(name, table)
        check_rank(name, table, 2, "(vocabulary, d)")
        check_nonempty(name, table)
        check_floating(name, table)
        check_same_device("input_ids", input_ids, **{name: table})
        if table.dtype != word_embeddings.dtype or table.shape[1] != word_embeddings.shape[1]:
            raise ValueError(
                f"{name} has dtype {table.dtype} and shape {tuple(table.shape)}, but "
                f"word_embeddings has {word_embeddings.dtype} and {tuple(word_embeddings.shape)}"
                "; the tables of one embedding module share d and dtype"
            )
    d = word_embeddings.shape[1]
    _validate.demux_params(
        word_embeddings, {"ln_weight": (ln_weight, (d,)), "ln_bias": (ln_bias, (d,))}
    )
    _validate.transform("vectors", vectors, word_embeddings, 2, "(N, d)", "word_embeddings")
    n = vectors.shape[0]  # >= 1: vectors is non-empty
    if vectors.shape[1] != d:
        raise ValueError(f"vectors must have shape (N, {d}), got {tuple(vectors.shape)}")
    _validate.eps_arg(eps)
    if input_ids.dim() == 2:
        input_ids = group_batch("input_ids", input_ids, n)
    elif input_ids.shape[1] != n:
        raise ValueError(
            f"input_ids has {input_ids.shape[1]} instances in dim 1 (shape "
            f"{tuple(input_ids.shape)}) but vectors has N={n}"
        )
    grouped = tuple(input_ids.shape)
    mixed = (grouped[0], grouped[2])
    n_word, n_pos, n_type = (t.shape[0] for t in tables.values())
    ids = _ids("input_ids", input_ids, grouped, n_word, "word_embeddings", input_ids)
    default_pos = torch.arange(grouped[2], device=input_ids.device)
    pos = _ids(
        "position_ids",
        position_ids if position_ids is not None else default_pos,
        grouped,
        n_pos,
        "position_embeddings",
        input_ids,
    )
    typ = _ids(
        "token_type_ids", token_type_ids, grouped, n_type, "token_type_embeddings", input_ids
    )
    mpos = _ids(
        "mixed_position_ids",
        mixed_position_ids if mixed_position_ids is not None else default_pos,
        mixed,
        n_pos,
        "position_embeddings",
        input_ids,
    )
    mtyp = _ids(
        "mixed_token_type_ids",
        mixed_token_type_ids,
        mixed,
        n_type,
        "token_type_embeddings",
        input_ids,
    )
    _backend.resolve("embed_mux", backend, input_ids.device, ())
    return reference.embed_mux(
        ids,
        word_embeddings,
        position_embeddings,
        token_type_embeddings,
        ln_weight,
        ln_bias,
        vectors,
        pos,
        typ,
        mpos,
        mtyp,
        eps,
    )
