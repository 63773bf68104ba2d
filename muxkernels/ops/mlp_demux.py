"""MLP demultiplex (SPEC section 4): N branches u_i = LN_i(gelu(W_i h + b_i)).

One GEMM with the stacked (N·d × d) weight, then a per-branch LayerNorm.
Only the reference backend exists so far.
"""

from __future__ import annotations

import torch

from .. import _backend, reference
from . import _validate


def mlp_demux(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    *,
    eps: float = 1e-5,
    backend: _backend.Backend = "auto",
) -> torch.Tensor:
    """Demultiplex with N independent MLP branches.

    Args:
        hidden: (B', L, d) encoder output.
        weight: (N, d, d) stacked ``dense_{i}.weight``; bias: (N, d) stacked ``dense_{i}.bias``.
        ln_weight, ln_bias: (N, d) stacked ``layer_norm_{i}`` parameters; eps: LayerNorm eps.
        backend: "auto", "reference", "triton" or "cuda".

    Returns:
        u of shape (B', N, L, d) in the hidden dtype.
    """
    _validate.demux_hidden(hidden, 1, "mlp demux")
    d = hidden.shape[-1]
    _validate.transform("weight", weight, hidden, 3, "(N, d, d)", "hidden")
    n = weight.shape[0]
    _validate.demux_params(
        hidden,
        {
            "weight": (weight, (n, d, d)),
            "bias": (bias, (n, d)),
            "ln_weight": (ln_weight, (n, d)),
            "ln_bias": (ln_bias, (n, d)),
        },
    )
    _validate.eps_arg(eps)
    _backend.resolve("mlp_demux", backend, hidden.device, ())
    return reference.mlp_demux(hidden, weight, bias, ln_weight, ln_bias, eps)
