"""Plain-PyTorch demultiplexers (design §3-5), written straight from the formulas.

All demultiplexers share one core: u = LN(gelu(a[g,i] + c[g,t])), where a is a
per-instance term and c a per-position term. What differs is where a and c come from:
- index demux:     a = p @ W_pᵀ with p = h[:, :N] (the index positions), c = h @ W_hᵀ + b
- index_pos demux: a = k @ W_kᵀ + b with k the learned keys,                c = h @ W_hᵀ
with W = [W_p | W_h] (or [W_k | W_h]) the (d, 2d) weight acting on the concatenation
[p; h]. The (…, 2d) concatenation is never built. Every function computes in float32
(float64 when an input is float64) and returns the hidden states' dtype.
"""

from __future__ import annotations

from typing import Literal

import torch

from ._common import compute_dtype, gelu_layer_norm

Gather = Literal["token", "sequence", "selected"]
GATHERS: tuple[str, ...] = ("token", "sequence", "selected")


def demux_gather(
    a: torch.Tensor,
    c: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    gather: Gather,
    index: torch.Tensor | None,
    sequence_position: int,
) -> torch.Tensor:
    """u[g,i,t] = LN(gelu(a[g,i] + c[g,t])) gathered three ways.

    a: (B' or 1, N, d); c: (B', L', d).
    - "token":    every i and t                    → (B', N, L', d)
    - "sequence": t = sequence_position only       → (B', N, d)
    - "selected": i = index[g,t] for each (g,t)    → (B', L', d)
    """
    groups, length, d = c.shape
    a = a.expand(groups, -1, -1)
    if gather == "token":
        pre = a[:, :, None, :] + c[:, None, :, :]
    elif gather == "sequence":
        pre = a + c[:, sequence_position, None, :]
    elif gather == "selected":
        assert index is not None
        a_sel = torch.gather(a, 1, index.long()[:, :, None].expand(groups, length, d))
        pre = a_sel + c
    else:
        raise ValueError(f"gather must be one of {GATHERS}, got {gather!r}")
    return gelu_layer_norm(pre, ln_weight, ln_bias, eps)


def index_demux(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    num_instances: int,
    eps: float,
    gather: Gather = "token",
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Index demux: u[g,i,t] = LN(gelu(W · [p[g,i]; h[g,t]] + b)) with p[g,i] = h[g,i], i < N.

    hidden: (B', L', d) encoder output whose first N+1 positions are the index prefix;
    weight: (d, 2d); bias, ln_weight, ln_bias: (d,). The sequence gather reads t = N,
    the shared CLS position.
    """
    d = hidden.shape[-1]
    ct = compute_dtype(hidden, weight, bias)
    h, w, b = hidden.to(ct), weight.to(ct), bias.to(ct)
    w_p, w_h = w[:, :d], w[:, d:]
    a = h[:, :num_instances] @ w_p.T  # (B', N, d): once per (g, i)
    c = h @ w_h.T + b  # (B', L', d): once per (g, t)
    u = demux_gather(a, c, ln_weight, ln_bias, eps, gather, index, num_instances)
    return u.to(hidden.dtype)


def index_pos_demux(
    hidden: torch.Tensor,
    keys: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    gather: Gather = "token",
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """index_pos (RSA) demux: u[g,i,t] = LN(gelu(W · [k_i; h[g,t]] + b)) = LN(gelu(W_h h + c_i)).

    c_i = W_k k_i + b is computed once. hidden: (B', L, d) with no prefix; keys: (N, d);
    weight: (d, 2d). The sequence gather reads t = 0 (the CLS position).
    """
    d = hidden.shape[-1]
    ct = compute_dtype(hidden, keys, weight, bias)
    h, k, w, b = hidden.to(ct), keys.to(ct), weight.to(ct), bias.to(ct)
    a = (k @ w[:, :d].T + b)[None]  # (1, N, d)
    c = h @ w[:, d:].T  # (B', L, d)
    return demux_gather(a, c, ln_weight, ln_bias, eps, gather, index, 0).to(hidden.dtype)


def mlp_demux(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """MLP demux: N branches u_i = LN_i(gelu(W_i h + b_i)).

    hidden: (B', L, d); weight: (N, d, d) stacked W_i; bias, ln_weight, ln_bias: (N, d).
    One GEMM with the stacked (N·d × d) weight, then a per-branch LayerNorm.
    Returns (B', N, L, d).
    """
    n, d, _ = weight.shape
    ct = compute_dtype(hidden, weight, bias)
    h, w, b = hidden.to(ct), weight.to(ct), bias.to(ct)
    pre = (h @ w.reshape(n * d, d).T).unflatten(-1, (n, d)).transpose(1, 2) + b[None, :, None, :]
    normed = torch.nn.functional.layer_norm(torch.nn.functional.gelu(pre), (d,), eps=eps)
    u = normed * ln_weight.to(ct)[None, :, None, :] + ln_bias.to(ct)[None, :, None, :]
    return u.to(hidden.dtype)
