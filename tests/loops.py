"""Slow, obviously-correct per-element loops written straight from the formulas of docs/design.md.

An oracle for the oracle: every function reads its inputs as float64 Python scalars and
spells each sum out with explicit ``for`` loops, sharing nothing with ``muxkernels``.
Shapes follow docs/design.md: E is (B', N, L, d), h is (B', L', d), W is (d, 2d).
"""

from __future__ import annotations

import math

import torch


def _out(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _zeros(*shape: int):
    if len(shape) == 1:
        return [0.0] * shape[0]
    return [_zeros(*shape[1:]) for _ in range(shape[0])]


# --- section 1: multiplex -----------------------------------------------------------------


def hadamard_mux(embeddings: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """x[g,t,k] = (1/N) Σ_i v[i,k] E[g,i,t,k]."""
    e, v = embeddings.tolist(), vectors.tolist()
    groups, n, length, d = embeddings.shape
    x = _zeros(groups, length, d)
    for g in range(groups):
        for t in range(length):
            for k in range(d):
                total = 0.0
                for i in range(n):
                    total += v[i][k] * e[g][i][t][k]
                x[g][t][k] = total / n
    return _out(x)


def hadamard_mux_backward(
    embeddings: torch.Tensor, vectors: torch.Tensor, grad_out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """∂x[g,t,k]/∂E[g,i,t,k] = v[i,k]/N and ∂x[g,t,k]/∂v[i,k] = E[g,i,t,k]/N, so
    dE[g,i,t,k] = v[i,k] dx[g,t,k] / N and dv[i,k] = Σ_{g,t} E[g,i,t,k] dx[g,t,k] / N."""
    e, v, dx = embeddings.tolist(), vectors.tolist(), grad_out.tolist()
    groups, n, length, d = embeddings.shape
    d_e = _zeros(groups, n, length, d)
    d_v = _zeros(n, d)
    for g in range(groups):
        for i in range(n):
            for t in range(length):
                for k in range(d):
                    d_e[g][i][t][k] = v[i][k] * dx[g][t][k] / n
                    d_v[i][k] += e[g][i][t][k] * dx[g][t][k] / n
    return _out(d_e), _out(d_v)


def ortho_mux(embeddings: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """x[g,t,k] = N^(-1/2) Σ_i Σ_j P[i,k,j] E[g,i,t,j]."""
    e, p = embeddings.tolist(), matrices.tolist()
    groups, n, length, d = embeddings.shape
    scale = 1.0 / math.sqrt(n)
    x = _zeros(groups, length, d)
    for g in range(groups):
        for t in range(length):
            for k in range(d):
                total = 0.0
                for i in range(n):
                    for j in range(d):
                        total += p[i][k][j] * e[g][i][t][j]
                x[g][t][k] = scale * total
    return _out(x)


def ortho_mux_backward(
    embeddings: torch.Tensor, matrices: torch.Tensor, grad_out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """∂x[g,t,k]/∂E[g,i,t,j] = s P[i,k,j] and ∂x[g,t,k]/∂P[i,k,j] = s E[g,i,t,j], s = N^(-1/2):
    dE[g,i,t,j] = s Σ_k P[i,k,j] dx[g,t,k] and dP[i,k,j] = s Σ_{g,t} dx[g,t,k] E[g,i,t,j]."""
    e, p, dx = embeddings.tolist(), matrices.tolist(), grad_out.tolist()
    groups, n, length, d = embeddings.shape
    scale = 1.0 / math.sqrt(n)
    d_e = _zeros(groups, n, length, d)
    d_p = _zeros(n, d, d)
    for g in range(groups):
        for i in range(n):
            for t in range(length):
                for k in range(d):
                    for j in range(d):
                        d_e[g][i][t][j] += scale * p[i][k][j] * dx[g][t][k]
                        d_p[i][k][j] += scale * dx[g][t][k] * e[g][i][t][j]
    return _out(d_e), _out(d_p)


def lowrank_dense(u: torch.Tensor, h: torch.Tensor, num_instances: int) -> torch.Tensor:
    """P[i,k,j] = Σ_{m ∈ S_i} U[k,m] H[j,m], S_i = [i·c, (i+1)·c), c = d // N."""
    u_, h_ = u.tolist(), h.tolist()
    d = u.shape[0]
    c = d // num_instances
    p = _zeros(num_instances, d, d)
    for i in range(num_instances):
        for k in range(d):
            for j in range(d):
                for m in range(i * c, (i + 1) * c):
                    p[i][k][j] += u_[k][m] * h_[j][m]
    return _out(p)


def lowrank_ortho_mux(embeddings: torch.Tensor, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The ortho mux with P built from the low-rank definition."""
    return ortho_mux(embeddings, lowrank_dense(u, h, embeddings.shape[1]))


# --- sections 3-5: demultiplex ------------------------------------------------------------


def gelu(x: float) -> float:
    """Exact gelu: 0.5 x (1 + erf(x / √2))."""
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


def layer_norm(x: list[float], weight: list[float], bias: list[float], eps: float) -> list[float]:
    """(x − mean) / sqrt(biased var + eps) · w + b."""
    d = len(x)
    mean = 0.0
    for k in range(d):
        mean += x[k]
    mean /= d
    var = 0.0
    for k in range(d):
        var += (x[k] - mean) ** 2
    var /= d
    return [(x[k] - mean) / math.sqrt(var + eps) * weight[k] + bias[k] for k in range(d)]


def _concat_unit(first, second, w, b, ln_w, ln_b, eps) -> list[float]:
    """LN(gelu(W · [first; second] + b)) with the 2d concatenation built literally."""
    z = list(first) + list(second)
    pre = []
    for k in range(len(b)):
        total = b[k]
        for m in range(len(z)):
            total += w[k][m] * z[m]
        pre.append(gelu(total))
    return layer_norm(pre, ln_w, ln_b, eps)


def _gather(instance_vector, hidden, weight, bias, ln_weight, ln_bias, eps, gather, index, seq_t):
    """The three gathers of u[g,i,t] = LN(gelu(W [a(g,i); h[g,t]] + b))."""
    h = hidden.tolist()
    w, b, ln_w, ln_b = weight.tolist(), bias.tolist(), ln_weight.tolist(), ln_bias.tolist()
    groups, length, _ = hidden.shape
    n = len(instance_vector(0))

    def unit(g, i, t):
        return _concat_unit(instance_vector(g)[i], h[g][t], w, b, ln_w, ln_b, eps)

    if gather == "token":
        out = [[[unit(g, i, t) for t in range(length)] for i in range(n)] for g in range(groups)]
    elif gather == "sequence":
        out = [[unit(g, i, seq_t) for i in range(n)] for g in range(groups)]
    else:
        j = index.tolist()
        out = [[unit(g, j[g][t], t) for t in range(length)] for g in range(groups)]
    return _out(out)


def index_demux(
    hidden, weight, bias, ln_weight, ln_bias, num_instances, eps, gather="token", index=None
):
    """u[g,i,t] = LN(gelu(W [p[g,i]; h[g,t]] + b)), p[g,i] = h[g,i]; sequence gather: t = N."""
    h = hidden.tolist()
    return _gather(
        lambda g: h[g][:num_instances],
        hidden,
        weight,
        bias,
        ln_weight,
        ln_bias,
        eps,
        gather,
        index,
        num_instances,
    )


def index_pos_demux(
    hidden, keys, weight, bias, ln_weight, ln_bias, eps, gather="token", index=None
):
    """u[g,i,t] = LN(gelu(W [k_i; h[g,t]] + b)); the sequence gather at t = 0."""
    k = keys.tolist()
    return _gather(lambda g: k, hidden, weight, bias, ln_weight, ln_bias, eps, gather, index, 0)


def mlp_demux(hidden, weight, bias, ln_weight, ln_bias, eps):
    """u[g,i,t] = LN_i(gelu(W_i h[g,t] + b_i)) for N branches; returns (B', N, L, d)."""
    h, w, b = hidden.tolist(), weight.tolist(), bias.tolist()
    ln_w, ln_b = ln_weight.tolist(), ln_bias.tolist()
    groups, length, d = hidden.shape
    n = weight.shape[0]
    out = _zeros(groups, n, length, d)
    for g in range(groups):
        for i in range(n):
            for t in range(length):
                pre = []
                for k in range(d):
                    total = b[i][k]
                    for m in range(d):
                        total += w[i][k][m] * h[g][t][m]
                    pre.append(gelu(total))
                out[g][i][t] = layer_norm(pre, ln_w[i], ln_b[i], eps)
    return _out(out)


# --- transforms and prefix ------------------------------------------------------------------


def binary_vectors(num_instances: int, hidden_size: int, epsilon: float) -> torch.Tensor:
    """0/1 chunk masks: c = d // N, chunk i = [i·c, (i+1)·c), the last running to d, widened by
    w = epsilon·c/2 on each inner side: start = floor(i·c − w) for i > 0, end =
    floor((i+1)·c + w) for i < N−1 (the published rounding)."""
    c = hidden_size // num_instances
    w = epsilon * c / 2
    v = _zeros(num_instances, hidden_size)
    for i in range(num_instances):
        start = 0 if i == 0 else math.floor(i * c - w)
        end = hidden_size if i == num_instances - 1 else math.floor((i + 1) * c + w)
        for k in range(hidden_size):
            if start <= k < end:
                v[i][k] = 1.0
    return _out(v)


def add_index_prefix(input_ids, num_instances, index_ids, filler_id, cls_id, attention_mask=None):
    """Row r = g·N+i gets [filler…, idx(i) at position i, …filler, cls] before its own ids."""
    rows = []
    for r, row in enumerate(input_ids.tolist()):
        i = r % num_instances
        prefix = [index_ids[i] if q == i else filler_id for q in range(num_instances)]
        rows.append([*prefix, cls_id, *row])
    ids = torch.tensor(rows, dtype=input_ids.dtype)
    if attention_mask is None:
        return ids
    mask = [[1] * (num_instances + 1) + row for row in attention_mask.tolist()]
    return ids, torch.tensor(mask, dtype=attention_mask.dtype)


def embed_mux(
    ids, word, pos, typ, ln_w, ln_b, vectors, pos_ids, type_ids, mpos_ids, mtype_ids, eps
):
    """e[g,i,t] = LN(word[id] + pos[p] + type[s]); m = (1/N) Σ_i v_i e_i; x = LN(m + pos + type)."""
    groups, n, length = ids.shape
    d = word.shape[1]
    W, P, T = word.tolist(), pos.tolist(), typ.tolist()
    lw, lb, v = ln_w.tolist(), ln_b.tolist(), vectors.tolist()
    x = _zeros(groups, length, d)
    for g in range(groups):
        for t in range(length):
            mixed = [0.0] * d
            for i in range(n):
                wi, pi, si = int(ids[g, i, t]), int(pos_ids[g, i, t]), int(type_ids[g, i, t])
                e = layer_norm([W[wi][k] + P[pi][k] + T[si][k] for k in range(d)], lw, lb, eps)
                for k in range(d):
                    mixed[k] += v[i][k] * e[k] / n
            pj, sj = int(mpos_ids[g, t]), int(mtype_ids[g, t])
            x[g][t] = layer_norm([mixed[k] + P[pj][k] + T[sj][k] for k in range(d)], lw, lb, eps)
    return _out(x)
