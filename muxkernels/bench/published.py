"""The published DataMUX and MUX-PLMs layers, as the baselines of the benchmarks.

Plain PyTorch that mirrors the published code (Murahari et al., 2022 and 2023): it runs in
the inputs' own dtype (the model dtype, no float32 upcast), builds the (…, 2d)
concatenation [p_i ; h_t] that the index demultiplexers feed to one Linear, multiplies by
the dense (N, d, d) matrices (also for the low-rank transform, which the published code
stores dense) and runs the MLP branches one after another. The reference package
(``muxkernels.reference``) computes the same formulas as an oracle; these functions are
what a user of the published code runs. Shapes follow ``muxkernels.ops``: E (B', N, L, d),
h (B', L', d), row g·N+i of a caller's batch is instance i of group g.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def hadamard_mux(embeddings: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """x[g,t] = (1/N) Σ_i v_i ⊙ E[g,i,t], the published steps: the (B', N, L, d) view, the
    (N, d) vectors sliced, unsqueezed and expanded over L, a product and a mean over N.

    embeddings: (B', N, L, d) (or the (B'·N, L, d) batch); vectors: (N, d).
    Returns (B', L, d).
    """
    n, d = vectors.shape
    length = embeddings.shape[-2]
    embeddings = embeddings.view(-1, n, length, d)
    instance_embed = vectors[:n, :].unsqueeze(1).expand(n, length, d)
    return torch.mean(embeddings * instance_embed.unsqueeze(0), dim=1)


def ortho_mux(embeddings: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """x[g,t] = N^(-1/2) Σ_i P_i E[g,i,t], as published: ``matmul(P, Eᵀ)``, then a sum.

    embeddings: (B', N, L, d); matrices: (N, d, d), also the low-rank transform, which the
    published code keeps as its dense matrices. Returns (B', L, d).
    """
    mixed = torch.matmul(matrices, embeddings.permute(0, 1, 3, 2)).permute(0, 1, 3, 2)
    return mixed.sum(dim=1) / math.sqrt(embeddings.shape[1])


def _concat_demux(
    p: torch.Tensor,
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """u[g,i,t] = LN(gelu(W · [p[g,i] ; h[g,t]] + b)) through the built concatenation.

    p: (B', N, d) or (1, N, d); h: (B', T, d). Returns (B', N, T, d).
    """
    groups, length, d = h.shape
    n = p.shape[1]
    pairs = torch.cat(
        [p[:, :, None].expand(groups, n, length, d), h[:, None].expand(groups, n, length, d)],
        dim=-1,
    )
    return F.layer_norm(F.gelu(F.linear(pairs, weight, bias)), (d,), ln_weight, ln_bias, eps)


def index_demux_token(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    num_instances: int,
    eps: float,
) -> torch.Tensor:
    """Token-level index demux in the published form: u[g,i,t] = LN(gelu(W · [p_i ; h_t] + b)).

    p_i = hidden[:, i] (i < N); the (B', N, L', 2d) concatenation goes through one Linear
    (weight (d, 2d)), exact gelu and LayerNorm. hidden: (B', L', d). Returns (B', N, L', d).
    """
    p = hidden[:, :num_instances]
    return _concat_demux(p, hidden, weight, bias, ln_weight, ln_bias, eps)


def index_demux_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    num_instances: int,
    eps: float,
) -> torch.Tensor:
    """The published token-classification head: ``decoder`` on the token-level demux.

    Returns (B', N, L', K) for proj_weight (K, d).
    """
    u = index_demux_token(hidden, weight, bias, ln_weight, ln_bias, num_instances, eps)
    return F.linear(u, proj_weight, proj_bias)


def index_demux_sequence(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    num_instances: int,
    eps: float,
) -> torch.Tensor:
    """Sequence-level index demux: u[g,i] = LN(gelu(W · [p_i ; h_N] + b)) at the CLS t = N.

    The same concatenation form as :func:`index_demux_token`, at the shared CLS position
    only (the published head repeats h_N N times and concatenates). hidden: (B', L', d).
    Returns (B', N, d).
    """
    n = num_instances
    u = _concat_demux(hidden[:, :n], hidden[:, n : n + 1], weight, bias, ln_weight, ln_bias, eps)
    return u[:, :, 0]


def index_demux_selected(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    num_instances: int,
    eps: float,
    index: torch.Tensor,
) -> torch.Tensor:
    """The published retrieval head before its decoder: u[g,t] = LN(gelu(W · [p_j ; h_t] + b))
    with j = index[g,t], p_j picked by fancy indexing and concatenated with h.

    hidden: (B', L', d); index: (B', L'). Returns (B', L', d).
    """
    groups, length, d = hidden.shape
    rows = torch.arange(groups, device=hidden.device).unsqueeze(1).repeat(1, length)
    picked = hidden[:, :num_instances][rows, index]
    x = F.linear(torch.cat([picked, hidden], dim=2), weight, bias)
    return F.layer_norm(F.gelu(x), (d,), ln_weight, ln_bias, eps)


def index_pos_demux(
    hidden: torch.Tensor,
    keys: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """The first layer of the published index_pos (RSA) demux: the learned keys (N, d)
    concatenated with every position, u[g,i,t] = LN(gelu(W · [k_i ; h_t] + b)).

    hidden: (B', L, d). Returns (B', N, L, d).
    """
    return _concat_demux(keys[None], hidden, weight, bias, ln_weight, ln_bias, eps)


def mlp_demux(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """The published MLP demux: N branches u_i = LN_i(gelu(W_i h + b_i)), one after another.

    hidden: (B', L, d); weight (N, d, d); bias, ln_weight, ln_bias (N, d). Returns
    (B', N, L, d).
    """
    d = hidden.shape[-1]
    branches = [
        F.layer_norm(F.gelu(F.linear(hidden, w, b)), (d,), lw, lb, eps)
        for w, b, lw, lb in zip(weight, bias, ln_weight, ln_bias, strict=True)
    ]
    return torch.stack(branches, dim=1)


ROBERTA_PADDING_IDX = 1  # RoBERTa's <pad>: positions start at padding_idx + 1


def roberta_embeddings(
    word: torch.Tensor,
    position: torch.Tensor,
    token_type: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """One call of the published model's embedding module (Hugging Face ``RobertaEmbeddings``
    of transformers 4.4, eval mode) on its tables: position ids from the input ids (the
    1-based index among non-pad tokens, plus padding_idx) or padding_idx + 1 + t for
    ``inputs_embeds``, token type ids all zero, LN(word[ids] or inputs_embeds + type + pos).
    """
    pad = ROBERTA_PADDING_IDX
    if input_ids is not None:
        mask = input_ids.ne(pad).int()
        position_ids = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + pad
        input_shape = input_ids.size()
    else:
        input_shape = inputs_embeds.size()[:-1]
        length = input_shape[1]
        position_ids = torch.arange(pad + 1, length + pad + 1, dtype=torch.long)
        position_ids = position_ids.to(inputs_embeds.device).unsqueeze(0).expand(input_shape)
    token_type_ids = torch.zeros(input_shape, dtype=torch.long, device=position_ids.device)
    if inputs_embeds is None:
        inputs_embeds = F.embedding(input_ids, word, pad)
    embeddings = inputs_embeds + F.embedding(token_type_ids, token_type)
    embeddings += F.embedding(position_ids, position, pad)
    return F.layer_norm(embeddings, (embeddings.shape[-1],), ln_weight, ln_bias, eps)


def embed_mux(
    input_ids: torch.Tensor,
    word: torch.Tensor,
    position: torch.Tensor,
    token_type: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    vectors: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """The published front end on the tables of a RoBERTa embedding module: the module on
    every instance's ids, the hadamard mux, and the module again on the mixture.

    input_ids: (B'·N, L), row g·N+i instance i of group g, without pad tokens (so every
    position is padding_idx + 1 + t); vectors: (N, d). Returns (B', L, d).
    """
    tables = (word, position, token_type, ln_weight, ln_bias, eps)
    e = roberta_embeddings(*tables, input_ids=input_ids)
    return roberta_embeddings(*tables, inputs_embeds=hadamard_mux(e, vectors))


def front_end(
    embeddings_module: nn.Module,
    prefixed_ids: torch.Tensor,
    vectors: torch.Tensor,
    num_instances: int,
) -> torch.Tensor:
    """The published front end, the embedding module applied twice.

    e = emb(input_ids=ids) per instance, x = hadamard_mux(e, v), then emb(inputs_embeds=x)
    (positions, types and LayerNorm again). prefixed_ids: (B'·N, L'), row g·N+i the
    instance i of group g; vectors: (N, d). Returns (B', L', d).
    """
    e = embeddings_module(input_ids=prefixed_ids)
    x = hadamard_mux(e.unflatten(0, (-1, num_instances)), vectors)
    return embeddings_module(inputs_embeds=x)
