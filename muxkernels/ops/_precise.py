"""The demultiplexers' small GEMMs for half data, accumulated and returned in float32.

Their outputs (the index demux's A = p W_pᵀ and C = h W_hᵀ + b, the MLP demux's stacked
pre-activation) are what the fused kernels combine (gelu(A + C), LayerNorm); rounding them
to half first costs more than the whole reference's error. So for half data they stay
float32, as in the reference (which computes everything in float32), and their gradients
too, each input's gradient rounded to its dtype once:

- on CUDA, a product of half operands runs on tensor cores with a float32 result
  (``torch.mm(..., out_dtype=torch.float32)``); a float32 operand (a float32 parameter, a
  float32 gradient) is split into two half parts, hi + lo, which hold its value to about
  16 bits (``_parts``), so every product stays on tensor cores;
- elsewhere (CPU) the operands are upcast and multiplied in float32, which is the same
  value: a product of half numbers is exact in float32.

float32 and float64 data compute in their own dtype, as the reference does.
"""

from __future__ import annotations

import torch

from ..reference._common import compute_dtype

HALF = (torch.float16, torch.bfloat16)


def _parts(t: torch.Tensor, half: torch.dtype) -> tuple[torch.Tensor, ...]:
    """``t`` as half tensors whose sum is t: itself if half, else (hi, lo)."""
    if t.dtype in HALF:
        return (t,)
    hi = t.to(half)
    return hi, (t - hi.float()).to(half)


def mm(a: torch.Tensor, b: torch.Tensor, half: torch.dtype | None) -> torch.Tensor:
    """a @ b for 2-D a, b, accumulated and returned in float32 (float64 for float64 input).

    ``half``: the data's dtype when it is a half type (then the tensor-core path on CUDA),
    else None.
    """
    ct = compute_dtype(a, b)
    if half is None or ct != torch.float32 or not a.is_cuda:
        return a.to(ct) @ b.to(ct)
    products = [
        torch.mm(x, y, out_dtype=torch.float32) for x in _parts(a, half) for y in _parts(b, half)
    ]
    return sum(products[1:], products[0])


def records_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records an op on ``tensors`` (grad mode on, one requires grad)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def half_of(data: torch.Tensor) -> torch.dtype | None:
    """The data's dtype if it is a half type, else None."""
    return data.dtype if data.dtype in HALF else None


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1])
    y = mm(rows, weight.t(), half_of(x))
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:class:`Linear`, without its autograd node when no gradient is recorded."""
    if records_grad(x, weight, bias):
        return Linear.apply(x, weight, bias)
    return _linear(x, weight, bias)


class Linear(torch.autograd.Function):
    """forward(x (…, k), weight (m, k), bias (m) or None) -> x @ weightᵀ + bias in the
    compute dtype (float32 for half x); backward gives dx, dweight, dbias from that
    precision, each rounded once to its tensor's dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        ctx.save_for_backward(x, weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return _linear(x, weight, bias)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight = ctx.saved_tensors
        half = half_of(x)
        rows = dy.reshape(-1, dy.shape[-1])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = mm(rows, weight, half).reshape(x.shape).to(x.dtype)
        if ctx.needs_input_grad[1]:
            dw = mm(rows.t(), x.reshape(-1, x.shape[-1]), half).to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            db = rows.sum(0).to(ctx.bias_dtype)
        return dx, dw, db


def _index_demux_terms(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n: int, sequence: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    d = hidden.shape[-1]
    half = half_of(hidden)
    a = mm(hidden[:, :n].reshape(-1, d), weight[:, :d].t(), half)
    rows = hidden[:, n : n + 1] if sequence else hidden
    c = mm(rows.reshape(-1, d), weight[:, d:].t(), half)
    c = c + bias.to(c.dtype)
    return a.reshape(hidden.shape[0], n, d), c.reshape(rows.shape)


def index_demux_terms(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n: int, sequence: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`IndexDemuxTerms`, without its autograd node when no gradient is recorded."""
    if records_grad(hidden, weight, bias):
        return IndexDemuxTerms.apply(hidden, weight, bias, n, sequence)
    return _index_demux_terms(hidden, weight, bias, n, sequence)


class IndexDemuxTerms(torch.autograd.Function):
    """forward(hidden (B', L', d), weight (d, 2d), bias (d), n, sequence) -> (A, C):
    A[g,i] = W_p hidden[g,i] for i < n, C[g,t] = W_h hidden[g,t] + b for every t (only
    t = n when ``sequence``), with W = [W_p | W_h], in the compute dtype (float32 for half
    data). backward adds both terms' contributions to d_hidden in that precision and
    rounds once (the prefix rows get both)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, n: int, sequence: bool):
        ctx.save_for_backward(hidden, weight, bias)
        ctx.n, ctx.sequence = n, sequence
        return _index_demux_terms(hidden, weight, bias, n, sequence)

    @staticmethod
    def backward(ctx, da: torch.Tensor, dc: torch.Tensor):
        hidden, weight, bias = ctx.saved_tensors
        n, d, half = ctx.n, hidden.shape[-1], half_of(hidden)
        first = n if ctx.sequence else 0  # the first row C covers
        rows = hidden[:, first : first + dc.shape[1]]
        da2, dc2 = da.reshape(-1, d), dc.reshape(-1, d)
        d_hidden = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            d_hidden = torch.zeros(hidden.shape, dtype=dc.dtype, device=dc.device)
            d_hidden[:, first : first + dc.shape[1]] = mm(dc2, weight[:, d:], half).view(dc.shape)
            d_hidden[:, :n] += mm(da2, weight[:, :d], half).view(da.shape)
            d_hidden = d_hidden.to(hidden.dtype)
        if ctx.needs_input_grad[1]:
            d_weight = torch.cat(
                [
                    mm(da2.t(), hidden[:, :n].reshape(-1, d), half),
                    mm(dc2.t(), rows.reshape(-1, d), half),
                ],
                dim=1,
            ).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            d_bias = dc2.sum(0).to(bias.dtype)
        return d_hidden, d_weight, d_bias, None, None
