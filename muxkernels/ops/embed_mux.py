"""The fused front end (design §1): token ids of N instances → multiplexed embedding.

e = LN(word[ids] + pos[position_ids] + type[token_type_ids]) per instance, mixed by the
hadamard transform m = (1/N) Σ_i v_i ⊙ e_i, then x = LN(m + pos[mixed_position_ids] +
type[mixed_token_type_ids]) with the same embedding module, as the published code does
by calling it twice. The ``cuda`` backend's kernel goes from ids to x without writing
the N per-instance embeddings; :class:`EmbedMux` gives its backward by the chain rule.
"""

from __future__ import annotations

import torch

from .. import _backend, _cpu, _opdefs, reference
from .._checks import (
    check_float_tensor,
    check_integer,
    check_nonempty,
    check_param,
    check_rank,
    check_same_device,
    check_shape,
    check_tensor,
    check_values_below,
    group_batch,
)
from ..reference._common import compute_dtype
from . import _validate

KERNEL_BACKENDS = ("cuda", "cpu")
KERNELS = ("embed_mux_fwd",)


def _layer_norm_stats(s: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm mean and rstd over the last dim, shaped (..., 1) as aten expects."""
    var, mean = torch.var_mean(s, dim=-1, keepdim=True, correction=0)
    return mean, torch.rsqrt(var + eps)


def _table_grad(grad: torch.Tensor, ids: torch.Tensor, rows: int) -> torch.Tensor:
    """The gradient of ``table[ids]`` (PyTorch's own embedding backward)."""
    return torch.ops.aten.embedding_dense_backward(grad, ids, rows, -1, False)


class EmbedMux(torch.autograd.Function):
    """forward(input_ids (B', N, L), word, position, token_type tables, ln_weight, ln_bias,
    vectors (N, d), position_ids, token_type_ids (B', N, L), mixed_position_ids,
    mixed_token_type_ids (B', L), eps, backend) -> x (B', L, d), one ``embed_mux_fwd`` call.

    backward recomputes s1 = word + pos + type (per instance), e = LN(s1), m = (1/N) Σ v ⊙ e
    and s2 = m + pos + type (mixed), then applies the chain rule through both LayerNorms,
    the transform and the three table lookups, giving the gradients of the tables, the
    LayerNorm affine parameters and the vectors.
    """

    @staticmethod
    def forward(
        ctx,
        ids,
        word,
        pos,
        typ,
        ln_weight,
        ln_bias,
        vectors,
        pids,
        tids,
        mpids,
        mtids,
        eps,
        backend,
    ):
        tensors = tuple(
            t.contiguous()
            for t in (ids, word, pos, typ, ln_weight, ln_bias, vectors, pids, tids, mpids, mtids)
        )
        ctx.save_for_backward(*tensors)
        ctx.eps = eps
        return _opdefs.kernel("embed_mux_fwd", backend)(*tensors, eps)

    @staticmethod
    def backward(ctx, grad_x):
        ids, word, pos, typ, ln_w, ln_b, vectors, pids, tids, mpids, mtids = ctx.saved_tensors
        eps, d, n = ctx.eps, word.shape[1], vectors.shape[0]
        ct = compute_dtype(word, vectors)
        w_ct, b_ct, v_ct = ln_w.to(ct), ln_b.to(ct), vectors.to(ct)
        pos_ct, typ_ct = pos.to(ct), typ.to(ct)
        s1 = word.to(ct)[ids] + pos_ct[pids] + typ_ct[tids]
        mean1, rstd1 = _layer_norm_stats(s1, eps)
        e = (s1 - mean1) * rstd1 * w_ct + b_ct
        s2 = (v_ct[None, :, None, :] * e).sum(1) / n + pos_ct[mpids] + typ_ct[mtids]
        mean2, rstd2 = _layer_norm_stats(s2, eps)
        layer_norm_backward = torch.ops.aten.native_layer_norm_backward
        mask = [True, True, True]
        d_s2, d_w2, d_b2 = layer_norm_backward(
            grad_x.to(ct), s2, [d], mean2, rstd2, w_ct, b_ct, mask
        )
        d_e = v_ct[None, :, None, :] * d_s2[:, None] / n
        d_v = (e * d_s2[:, None]).sum((0, 2)) / n
        d_s1, d_w1, d_b1 = layer_norm_backward(d_e, s1, [d], mean1, rstd1, w_ct, b_ct, mask)
        d_word = _table_grad(d_s1, ids, word.shape[0])
        d_pos = _table_grad(d_s1, pids, pos.shape[0]) + _table_grad(d_s2, mpids, pos.shape[0])
        d_typ = _table_grad(d_s1, tids, typ.shape[0]) + _table_grad(d_s2, mtids, typ.shape[0])
        grads = (
            d_word.to(word.dtype),
            d_pos.to(pos.dtype),
            d_typ.to(typ.dtype),
            (d_w1 + d_w2).to(ln_w.dtype),
            (d_b1 + d_b2).to(ln_b.dtype),
            d_v.to(vectors.dtype),
        )
        return (None, *grads, None, None, None, None, None, None)


def _ids(
    name: str,
    ids: torch.Tensor | None,
    shape: tuple[int, ...],
    input_ids: torch.Tensor,
) -> torch.Tensor | None:
    """None, an (L,) vector shared by every row (kept so), or ids of ``shape`` (grouped when
    given as the caller's batch), as int64; the values are checked by the caller, all at
    once (``check_values_below``)."""
    if ids is None:
        return None
    check_tensor(name, ids)
    check_integer(name, ids)
    if ids is not input_ids:
        check_same_device("input_ids", input_ids, **{name: ids})
    if ids.dim() == 1:
        check_shape(name, ids, shape[-1:], "one id per position")
        return ids.long()
    if len(shape) == 3 and ids.dim() == 2 and ids.shape[0] == shape[0] * shape[1]:
        ids = group_batch(name, ids, shape[1])
    check_shape(name, ids, shape, "the shape of the ids it goes with, or (L,)")
    return ids.long()


def _full(ids: torch.Tensor | None, default: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``ids`` (or ``default`` for None) expanded to ``shape``."""
    return (default if ids is None else ids).expand(shape)


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
        backend: "auto", "reference", "cpu", "triton" or "cuda".

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
        check_float_tensor(name, table, 2, "(vocabulary, d)")
        if table.device != input_ids.device:
            check_same_device("input_ids", input_ids, **{name: table})
        if table.dtype != word_embeddings.dtype or table.shape[1] != word_embeddings.shape[1]:
            raise ValueError(
                f"{name} has dtype {table.dtype} and shape {tuple(table.shape)}, but "
                f"word_embeddings has {word_embeddings.dtype} and {tuple(word_embeddings.shape)}"
                "; the tables of one embedding module share d and dtype"
            )
    d = word_embeddings.shape[1]
    for name, t in (("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        check_param(name, t, (d,), f"d={d}", "word_embeddings", word_embeddings)
    _validate.transform("vectors", vectors, word_embeddings, 2, "(N, d)", "word_embeddings")
    n = vectors.shape[0]  # >= 1: vectors is non-empty
    if vectors.shape[1] != d:
        raise ValueError(f"vectors must have shape (N, {d}), got {tuple(vectors.shape)}")
    eps = _validate.eps_arg(eps)
    if input_ids.dim() == 2:
        input_ids = group_batch("input_ids", input_ids, n)
    elif input_ids.shape[1] != n:
        raise ValueError(
            f"input_ids has {input_ids.shape[1]} instances in dim 1 (shape "
            f"{tuple(input_ids.shape)}) but vectors has N={n}"
        )
    grouped = tuple(input_ids.shape)
    mixed = (grouped[0], grouped[2])
    length, n_word, n_pos, n_type = grouped[2], *(t.shape[0] for t in tables.values())
    for name, value in (("position_ids", position_ids), ("mixed_position_ids", mixed_position_ids)):
        if value is None and length > n_pos:
            raise ValueError(f"{name} defaults to 0…{length - 1} (L={length}) but "
                             f"position_embeddings has {n_pos} rows; pass {name}")  # fmt: skip
    ids = _ids("input_ids", input_ids, grouped, input_ids)
    pos = _ids("position_ids", position_ids, grouped, input_ids)
    typ = _ids("token_type_ids", token_type_ids, grouped, input_ids)
    mpos = _ids("mixed_position_ids", mixed_position_ids, mixed, input_ids)
    mtyp = _ids("mixed_token_type_ids", mixed_token_type_ids, mixed, input_ids)
    given = (  # (name, ids as passed, rows of their table, the table's name)
        ("input_ids", input_ids, n_word, "word_embeddings"),
        ("position_ids", position_ids, n_pos, "position_embeddings"),
        ("token_type_ids", token_type_ids, n_type, "token_type_embeddings"),
        ("mixed_position_ids", mixed_position_ids, n_pos, "position_embeddings"),
        ("mixed_token_type_ids", mixed_token_type_ids, n_type, "token_type_embeddings"),
    )
    check_values_below(
        (name, t, rows, f"{table} has {rows} rows")
        for name, t, rows, table in given
        if t is not None
    )
    chosen = _backend.resolve("embed_mux", backend, input_ids.device, KERNEL_BACKENDS, KERNELS)
    params = (word_embeddings, position_embeddings, token_type_embeddings, ln_weight, ln_bias)
    if chosen == "cpu" and not _cpu.runs_kernels(word_embeddings):
        return _cpu.embed_mux(ids, *params, vectors, pos, typ, mpos, mtyp, eps)
    positions = torch.arange(length, device=input_ids.device)
    zeros = torch.zeros(length, dtype=torch.long, device=input_ids.device)
    pos, typ = _full(pos, positions, grouped), _full(typ, zeros, grouped)
    mpos, mtyp = _full(mpos, positions, mixed), _full(mtyp, zeros, mixed)
    if chosen == "reference":
        return reference.embed_mux(ids, *params, vectors, pos, typ, mpos, mtyp, eps)
    if torch.compiler.is_compiling():
        # dynamo cannot trace an autograd.Function given one tensor twice (tied tables, say);
        # a view of each parameter keeps them distinct (eager needs none)
        params = tuple(t.view_as(t) for t in params)
    if chosen == "cpu":
        return _cpu.kernels.embed_mux(ids, *params, vectors, pos, typ, mpos, mtyp, eps)
    return EmbedMux.apply(ids, *params, vectors, pos, typ, mpos, mtyp, eps, chosen)
