"""Index demultiplex (SPEC section 3): u[g,i,t] = LN(gelu(W · [p[g,i]; h[g,t]] + b)).

p[g,i] = h[g,i] (i < N) are the index positions of the prefix; W = [W_p | W_h] is (d, 2d).
Computed split: A = p W_pᵀ once per (g,i), C = h W_hᵀ + b once per (g,t), u = LN(gelu(A + C)).
Three gathers: "token" (B', N, L', d), "sequence" at t = N (B', N, d), "selected" with one
instance index[g,t] per position (B', L', d). Only the reference backend exists so far.
"""

from __future__ import annotations

import torch

from .. import _backend, reference
from .._checks import check_num_instances
from ..reference import Gather
from . import _validate


def index_demux(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    *,
    num_instances: int,
    eps: float = 1e-5,
    gather: Gather = "token",
    index: torch.Tensor | None = None,
    backend: _backend.Backend = "auto",
) -> torch.Tensor:
    """Demultiplex an index-prefixed encoder output.

    Args:
        hidden: (B', L', d) encoder output; positions 0…N-1 hold the index tokens and
            position N the shared CLS, so L' >= N + 1.
        weight: (d, 2d) ``dense.weight`` acting on [p; h]; bias: (d,) ``dense.bias``.
        ln_weight, ln_bias: (d,) LayerNorm affine parameters; eps: LayerNorm eps.
        num_instances: N.
        gather: "token", "sequence" or "selected".
        index: (B', L') integer instance ids in [0, N), with gather="selected" only.
        backend: "auto", "reference", "triton" or "cuda".

    Returns:
        u in the hidden dtype: (B', N, L', d), (B', N, d) or (B', L', d) by ``gather``.
        Flattened to the caller's batch, row g·N+i is instance i of group g.
    """
    check_num_instances(num_instances)
    _validate.demux_hidden(hidden, num_instances + 1, f"an index prefix of N+1={num_instances + 1}")
    _validate.concat_linear_params(hidden, weight, bias, ln_weight, ln_bias)
    _validate.eps_arg(eps)
    _validate.gather_args(gather, index, hidden, num_instances)
    _backend.resolve("index_demux", backend, hidden.device, ())
    return reference.index_demux(
        hidden, weight, bias, ln_weight, ln_bias, num_instances, eps, gather, index
    )
