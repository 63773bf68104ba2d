"""index_pos (RSA) demultiplex (design §5): u[g,i,t] = LN(gelu(W_h h[g,t] + c_i)).

No prefix: learned keys k (N, d) stand in for the index positions, c_i = W_k k_i + b with
W = [W_k | W_h] of shape (d, 2d). Same gathers as the index demux; "sequence" reads t = 0.
The kernel path is the index demux's fused core with a = c_i shared by every group.
"""

from __future__ import annotations

import torch

from .. import _backend, _cpu, reference
from ..reference import Gather
from . import _validate
from ._precise import linear
from .demux_gather import KERNEL_BACKENDS, KERNELS, demux_gather


def index_pos_demux(
    hidden: torch.Tensor,
    keys: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    *,
    eps: float = 1e-5,
    gather: Gather = "token",
    index: torch.Tensor | None = None,
    backend: _backend.Backend = "auto",
) -> torch.Tensor:
    """Demultiplex with learned instance keys.

    Args:
        hidden: (B', L, d) encoder output (no prefix).
        keys: (N, d) ``demux_instance_embedding``.
        weight: (d, 2d) ``dense_1.weight`` acting on [k; h]; bias: (d,).
        ln_weight, ln_bias: (d,) LayerNorm affine parameters; eps: LayerNorm eps.
        gather: "token" (B', N, L, d), "sequence" at t = 0 (B', N, d), or "selected"
            with ``index`` (B', L) → (B', L, d).
        backend: "auto", "reference", "cpu", "triton" or "cuda".
    """
    _validate.demux_hidden(hidden, 1, "index_pos demux")
    d = hidden.shape[-1]
    _validate.concat_linear_params(hidden, weight, bias, ln_weight, ln_bias)
    _validate.transform("keys", keys, hidden, 2, "(N, d)", "hidden")
    if keys.shape[1] != d:
        raise ValueError(f"keys must have shape (N, {d}), got {tuple(keys.shape)}")
    eps = _validate.eps_arg(eps)
    _validate.gather_args(gather, index, hidden, keys.shape[0])
    chosen = _backend.resolve("index_pos_demux", backend, hidden.device, KERNEL_BACKENDS, KERNELS)
    if chosen == "reference":
        return reference.index_pos_demux(
            hidden, keys, weight, bias, ln_weight, ln_bias, eps, gather, index
        )
    index = None if index is None else index.long().contiguous()
    if chosen == "cpu":
        args = (hidden, keys, weight, bias, ln_weight, ln_bias, eps, gather, index)
        if _cpu.runs_kernels(hidden):
            return _cpu.kernels.index_pos_demux(*args)
        return _cpu.index_pos_demux(*args)
    # c_i = W_k k_i + b and W_h h, in float32 for half data (``_precise``)
    a = linear(keys, weight[:, :d], bias)[None]  # (1, N, d)
    rows = hidden[:, :1] if gather == "sequence" else hidden
    c = linear(rows, weight[:, d:], None)
    return demux_gather(a, c, ln_weight, ln_bias, eps, gather, index, 0, chosen, hidden.dtype)
