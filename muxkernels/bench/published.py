"""The published DataMUX layers, as baselines for the end-to-end benchmark.

Plain PyTorch that mirrors the published code (Murahari et al., 2022): it runs in the
inputs' own dtype (the model dtype, no float32 upcast) and builds the (…, 2d)
concatenation [p_i ; h_t] that the index demultiplexer feeds to one Linear. The
reference package (``muxkernels.reference``) computes the same formulas as an oracle;
these functions are what a user of the published code runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def hadamard_mux(embeddings: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """x[g,t] = (1/N) Σ_i v_i ⊙ E[g,i,t], as the published ``(E * v[:, None]).mean(1)``.

    embeddings: (B', N, L, d); vectors: (N, d). Returns (B', L, d).
    """
    return (embeddings * vectors[:, None]).mean(dim=1)


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

    p: (B', N, d); h: (B', T, d). Returns (B', N, T, d).
    """
    groups, n, d = p.shape
    length = h.shape[1]
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
    only. A conservative baseline: the published head may demultiplex every position and
    then keep t = N, which costs more. hidden: (B', L', d). Returns (B', N, d).
    """
    n = num_instances
    u = _concat_demux(hidden[:, :n], hidden[:, n : n + 1], weight, bias, ln_weight, ln_bias, eps)
    return u[:, :, 0]


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
