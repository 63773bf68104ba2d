"""The demultiplexers on the CPU (formulas: docs/design.md, sections 3-5).

All share u = LN(gelu(W · [p; h] + b)), computed in whichever form costs the CPU least:

- the token gather (and the index_pos demux) splits W = [W_p | W_h]: a = p W_pᵀ once per
  (group, instance), c = h W_hᵀ + b once per (group, position), u = LN(gelu(a + c)), so
  the (…, 2d) concatenation of every (instance, position) pair is never built;
- the sequence gather builds the N rows [p_i; h_N] of each group and runs one GEMM with
  W: a few rows, so one GEMM beats two plus the broadcast add;
- the selected gather picks p_index[g,t] for every position: small inputs build the rows
  [p; h] and run one GEMM (fewer ops, which is what a small input costs), large ones the
  split form (half the GEMM: W_p multiplies only the N prefix rows).

gelu runs in place when no gradient is recorded. With a projection
(``index_demux_logits``) the token gather is built a few groups at a time, so u stays in
cache and only the chunk's logits leave it. float32 and float64 inputs compute in their
own dtype (their parameters share it: the ops check that), half precision in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._chunks import (
    LAST_LEVEL_BYTES,
    OWN_DTYPES,
    RUNNING_SUM_ELEMENTS,
    SMALL_ELEMENTS,
    group_chunks,
    to_float32,
)

_gelu_ = torch._C._nn.gelu_

Projection = tuple[torch.Tensor, torch.Tensor | None] | None


def _gelu_layer_norm(
    pre: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, eps: float, d: int
) -> torch.Tensor:
    """LN(gelu(pre)) over the last dim (size d); ``pre`` is a fresh tensor, so gelu may
    overwrite it when no gradient is recorded."""
    act = F.gelu(pre) if torch.is_grad_enabled() else _gelu_(pre)
    return torch.layer_norm(act, (d,), ln_weight, ln_bias, eps)


def _project(u: torch.Tensor, project: Projection) -> torch.Tensor:
    return u if project is None else F.linear(u, *project)


def _projection_chunks(groups: int, n: int, length: int, d: int, itemsize: int) -> list[slice]:
    """The group chunks of a projected token gather: u and its pre-activation in cache."""
    return group_chunks(groups, 2 * n * length * d * itemsize)


def projects_in_chunks(hidden: torch.Tensor, num_instances: int, gather: str) -> bool:
    """Whether a projected demux of ``hidden`` is built in group chunks, so that u (B', N, L',
    d) never leaves the cache: then the chunked form beats writing u whole (the compiled
    kernels' form), which at B'=8, L'=138, d=768, N=10 was 25 % slower forward+backward."""
    if gather != "token":
        return False
    groups, length, d = hidden.shape
    return len(_projection_chunks(groups, num_instances, length, d, hidden.element_size())) > 1


def _token(
    a: torch.Tensor,
    c: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    project: Projection,
) -> torch.Tensor:
    """u[g,i,t] = LN(gelu(a[g,i] + c[g,t])) for every i and t, (B', N, L', d), a (B' or 1,
    N, d); with ``project`` the logits, built a few groups at a time."""
    groups, length, d = c.shape
    if project is None:
        return _gelu_layer_norm(a.unsqueeze(2) + c.unsqueeze(1), ln_weight, ln_bias, eps, d)
    chunks = _projection_chunks(groups, a.shape[1], length, d, c.element_size())
    if len(chunks) == 1:  # in one piece
        u = _gelu_layer_norm(a.unsqueeze(2) + c.unsqueeze(1), ln_weight, ln_bias, eps, d)
        return F.linear(u, *project)
    outputs = []
    for chunk in chunks:
        a_chunk = a if a.shape[0] == 1 else a[chunk]
        pre = a_chunk.unsqueeze(2) + c[chunk].unsqueeze(1)
        outputs.append(F.linear(_gelu_layer_norm(pre, ln_weight, ln_bias, eps, d), *project))
    return torch.cat(outputs)


def index_demux(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    num_instances: int,
    eps: float,
    gather: str = "token",
    index: torch.Tensor | None = None,
    project: Projection = None,
) -> torch.Tensor:
    """Index demux on h (B', L', d) with p = h[:, :N]: "token" (B', N, L', d), "sequence"
    at t = N (B', N, d), "selected" with p = p[g, index[g,t]] (B', L', d), int64 index;
    with ``project`` = (weight (K, d), bias (K,) or None), the logits of a Linear on u."""
    if hidden.dtype not in OWN_DTYPES:
        args = to_float32(hidden, weight, bias, ln_weight, ln_bias, *(project or ()))
        project = None if project is None else (args[5], args[6])
        u = index_demux(*args[:5], num_instances, eps, gather, index, project)
        return u.to(hidden.dtype)
    n = num_instances
    groups, length, d = hidden.shape
    if gather == "sequence":  # the N rows [p_i; h_N] of every group, one GEMM
        p = hidden[:, :n]
        rows = torch.cat((p, hidden[:, n : n + 1].expand(groups, n, d)), 2)
        u = _gelu_layer_norm(F.linear(rows, weight, bias), ln_weight, ln_bias, eps, d)
        return _project(u, project)
    if gather == "selected" and groups * length * d <= SMALL_ELEMENTS:
        group_ids = torch.arange(groups, device=hidden.device).unsqueeze(1)
        rows = torch.cat((hidden[group_ids, index], hidden), 2)  # [p_index[g,t]; h[g,t]]
        u = _gelu_layer_norm(F.linear(rows, weight, bias), ln_weight, ln_bias, eps, d)
        return _project(u, project)
    small = groups * length * d <= SMALL_ELEMENTS
    # a small input multiplies every row by W_p and keeps the prefix's: that costs less
    # than copying the N prefix rows out for their GEMM
    a = F.linear(hidden, weight[:, :d])[:, :n] if small else F.linear(hidden[:, :n], weight[:, :d])
    c = F.linear(hidden, weight[:, d:], bias)
    if gather == "token":
        return _token(a, c, ln_weight, ln_bias, eps, project)
    group_ids = torch.arange(groups, device=hidden.device).unsqueeze(1)
    pre = a[group_ids, index] + c
    return _project(_gelu_layer_norm(pre, ln_weight, ln_bias, eps, d), project)


def index_pos_demux(
    hidden: torch.Tensor,
    keys: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    gather: str = "token",
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """index_pos demux: a = k W_kᵀ + b (once, shared by every group), c = h W_hᵀ (only at
    t = 0 for the sequence gather), u = LN(gelu(a + c)); int64 index."""
    if hidden.dtype not in OWN_DTYPES:
        args = to_float32(hidden, keys, weight, bias, ln_weight, ln_bias)
        return index_pos_demux(*args, eps, gather, index).to(hidden.dtype)
    d = hidden.shape[-1]
    a = F.linear(keys, weight[:, :d], bias)  # (N, d)
    c = F.linear(hidden[:, :1] if gather == "sequence" else hidden, weight[:, d:])
    if gather == "token":
        return _token(a.unsqueeze(0), c, ln_weight, ln_bias, eps, None)
    pre = a + c if gather == "sequence" else F.embedding(index, a) + c
    return _gelu_layer_norm(pre, ln_weight, ln_bias, eps, d)


def mlp_demux(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """MLP demux u_i = LN_i(gelu(W_i h + b_i)), (B', N, L, d), in one of two forms:

    - stacked: pre = h @ [W_1; …; W_N]ᵀ + b in one GEMM, one LayerNorm over every branch
      (unit weight), then each branch's affine: the fewest calls, for small inputs;
    - branch by branch (the published loop): each branch's (B', L, d) stays in cache
      through its gelu and LayerNorm, which applies the branch's affine itself. Used for
      training past ``RUNNING_SUM_ELEMENTS`` per branch, and for inference whose stacked
      (B', L, N·d) result would pass ``LAST_LEVEL_BYTES``. At B'=8, L=128, d=768 the
      stacked form was 4-12 % slower than the loop (N = 2, 10), and at d=64, 8·128 rows
      its backward 1.2-1.35x slower (N = 2…40); the loop's N calls cost more below.
    """
    if hidden.dtype not in OWN_DTYPES:
        args = to_float32(hidden, weight, bias, ln_weight, ln_bias)
        return mlp_demux(*args, eps).to(hidden.dtype)
    n, d, _ = weight.shape
    grad = torch.is_grad_enabled()
    if grad:
        by_branch = hidden.numel() > RUNNING_SUM_ELEMENTS
    else:
        by_branch = hidden.numel() * n * hidden.element_size() > LAST_LEVEL_BYTES
    if by_branch:
        params = zip(weight, bias, ln_weight, ln_bias, strict=True)
        branches = [
            _gelu_layer_norm(F.linear(hidden, w, b), lw, lb, eps, d) for w, b, lw, lb in params
        ]
        return torch.stack(branches, 1)
    pre = F.linear(hidden, weight.reshape(n * d, d), bias.reshape(-1))
    act = F.gelu(pre) if grad else _gelu_(pre)
    # a unit scale, not None: ATen's CPU LayerNorm without a weight takes a path 3x slower
    # (2.6 ms vs 0.7 ms on (8, 128, 2, 768) in float32; its backward gets 0.45 ms slower)
    unit = torch.ones(d, dtype=hidden.dtype)
    normed = torch.layer_norm(act.unflatten(-1, (n, d)), (d,), unit, None, eps)
    return torch.addcmul(ln_bias, normed, ln_weight).transpose(1, 2)
