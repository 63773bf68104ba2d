"""The demultiplexers on the CPU (formulas: docs/design.md, sections 3-5).

All share u = LN(gelu(a[g,i] + c[g,t])) with a per-instance term a (B' or 1, N, d) and a
per-position term c (B', L', d), each from one d×d GEMM (the (…, 2d) concatenation is
never built); gelu runs in place when no gradient is recorded. With a projection
(``index_demux_logits``) the token gather is built a few groups at a time, so u stays in
cache and only the chunk's logits leave it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._chunks import cast, compute_dtype, group_chunks


def _gelu_layer_norm(
    pre: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """LN(gelu(pre)) over the last dim; ``pre`` is a fresh tensor, so gelu may overwrite it."""
    act = F.gelu(pre) if torch.is_grad_enabled() else torch._C._nn.gelu_(pre)
    return F.layer_norm(act, (pre.shape[-1],), ln_weight, ln_bias, eps)


def demux_gather(
    a: torch.Tensor,
    c: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    gather: str,
    index: torch.Tensor | None,
    sequence_position: int,
    project: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """u[g,i,t] = LN(gelu(a[g,i] + c[g,t])) gathered as "token" (B', N, L', d), "sequence"
    (t = ``sequence_position``, (B', N, d)) or "selected" (i = index[g,t], (B', L', d)), in
    a's and c's dtype; with ``project`` = (weight (K, d), bias (K,) or None), the logits
    u @ weightᵀ + bias instead, d replaced by K."""
    if gather == "sequence":
        pre = a + c[:, sequence_position, None, :]
    elif gather == "token":
        return _token(a, c, ln_weight, ln_bias, eps, project)
    else:  # "selected"
        groups, n = c.shape[0], a.shape[1]
        if a.shape[0] > 1:  # row g·N + index[g,t] of a read as (B'·N, d)
            index = index + n * torch.arange(groups, device=index.device)[:, None]
        pre = F.embedding(index, a.reshape(-1, a.shape[-1])) + c
    u = _gelu_layer_norm(pre, ln_weight, ln_bias, eps)
    return u if project is None else F.linear(u, *project)


def _token(
    a: torch.Tensor,
    c: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    project: tuple[torch.Tensor, torch.Tensor | None] | None,
) -> torch.Tensor:
    """The token gather: u (B', N, L', d) in one piece, or with ``project`` the logits, a few
    groups at a time."""
    if project is None:
        return _gelu_layer_norm(a[:, :, None] + c[:, None], ln_weight, ln_bias, eps)
    groups, length, d = c.shape
    n = a.shape[1]
    outputs = []
    for chunk in group_chunks(groups, 2 * n * length * d * c.element_size()):
        a_chunk = a if a.shape[0] == 1 else a[chunk]
        u = _gelu_layer_norm(a_chunk[:, :, None] + c[chunk, None], ln_weight, ln_bias, eps)
        outputs.append(F.linear(u, *project))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


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
    project: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Index demux: a = h[:, :N] W_pᵀ, c = h W_hᵀ + b, u = LN(gelu(a + c)); with ``project``,
    the logits of a Linear on u. The sequence gather reads c at t = N only and adds it
    inside the batched GEMM of a (``baddbmm``)."""
    n, d = num_instances, hidden.shape[-1]
    ct = compute_dtype(hidden)
    h, w, b = cast(hidden, ct), cast(weight, ct), cast(bias, ct)
    lw, lb = cast(ln_weight, ct), cast(ln_bias, ct)
    if project is not None:
        project = (cast(project[0], ct), None if project[1] is None else cast(project[1], ct))
    if gather == "sequence":
        c = F.linear(h[:, n], w[:, d:], b).unsqueeze(1)  # (B', 1, d)
        pre = torch.baddbmm(c, h[:, :n], w[:, :d].t().expand(h.shape[0], d, d))
        u = _gelu_layer_norm(pre, lw, lb, eps)
        u = u if project is None else F.linear(u, *project)
    else:
        a = F.linear(h[:, :n], w[:, :d])
        c = F.linear(h, w[:, d:], b)
        u = demux_gather(a, c, lw, lb, eps, gather, index, n, project)
    return cast(u, hidden.dtype)


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
    t = 0 for the sequence gather), u = LN(gelu(a + c))."""
    d = hidden.shape[-1]
    ct = compute_dtype(hidden)
    h, w = cast(hidden, ct), cast(weight, ct)
    a = F.linear(cast(keys, ct), w[:, :d], cast(bias, ct))[None]
    c = F.linear(h[:, :1] if gather == "sequence" else h, w[:, d:])
    u = demux_gather(a, c, cast(ln_weight, ct), cast(ln_bias, ct), eps, gather, index, 0)
    return cast(u, hidden.dtype)


def mlp_demux(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """MLP demux: pre = h @ [W_1; …; W_N]ᵀ + b (one GEMM), u_i = LN_i(gelu(pre_i)); the
    LayerNorm normalises every branch in one call, then applies each branch's affine.
    Returns (B', N, L, d) (a transposed view of the (B', L, N, d) result)."""
    n, d, _ = weight.shape
    ct = compute_dtype(hidden)
    pre = F.linear(cast(hidden, ct), cast(weight, ct).reshape(n * d, d), cast(bias, ct).reshape(-1))
    act = F.gelu(pre) if torch.is_grad_enabled() else torch._C._nn.gelu_(pre)
    normed = F.layer_norm(act.unflatten(-1, (n, d)), (d,), eps=eps)
    u = torch.addcmul(cast(ln_bias, ct), normed, cast(ln_weight, ct))
    return cast(u.transpose(1, 2), hidden.dtype)
