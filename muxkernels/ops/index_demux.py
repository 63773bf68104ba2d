"""Index demultiplex (design §3): u[g,i,t] = LN(gelu(W · [p[g,i]; h[g,t]] + b)).

p[g,i] = h[g,i] (i < N) are the index positions of the prefix; W = [W_p | W_h] is (d, 2d).
Computed split: A = p W_pᵀ once per (g,i), C = h W_hᵀ + b once per (g,t) (torch GEMMs),
then u = LN(gelu(A + C)) in one fused kernel (:class:`~muxkernels.ops.demux_gather.DemuxGather`).
Three gathers: "token" (B', N, L', d), "sequence" at t = N (B', N, d), "selected" with one
instance index[g,t] per position (B', L', d). :func:`index_demux_logits` adds a small
output projection, fused into the kernel so u is never written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _backend, _cpu, _opdefs, reference
from .._checks import check_nonempty, check_num_instances, check_rank, check_tensor
from ..reference import Gather
from ..reference._common import compute_dtype
from . import _validate
from ._precise import index_demux_terms, linear
from .demux_gather import (
    KERNEL_BACKENDS,
    KERNELS,
    PROJECT_BACKENDS,
    PROJECT_KERNEL,
    DemuxGatherProject,
    demux_gather,
)


def _validate_args(hidden, weight, bias, ln_weight, ln_bias, num_instances, eps, gather, index):
    num_instances = check_num_instances(num_instances)
    _validate.demux_hidden(hidden, num_instances + 1, f"an index prefix of N+1={num_instances + 1}")
    _validate.concat_linear_params(hidden, weight, bias, ln_weight, ln_bias)
    eps = _validate.eps_arg(eps)
    _validate.gather_args(gather, index, hidden, num_instances)
    return num_instances, eps


def _split_terms(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n: int, gather: str
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A = p W_pᵀ (B', N, d) and C = h W_hᵀ + b, only at t = N for the sequence gather, in
    float32 for half data (``_precise``). Returns (A, C, the position of t = N in C)."""
    sequence = gather == "sequence"
    a, c = index_demux_terms(hidden, weight, bias, n, sequence)
    return a, c, 0 if sequence else n


def _long(index: torch.Tensor | None) -> torch.Tensor | None:
    return None if index is None else index.long().contiguous()


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
        backend: "auto", "reference", "cpu", "triton" or "cuda".

    Returns:
        u in the hidden dtype: (B', N, L', d), (B', N, d) or (B', L', d) by ``gather``.
        Flattened to the caller's batch, row g·N+i is instance i of group g.
    """
    num_instances, eps = _validate_args(
        hidden, weight, bias, ln_weight, ln_bias, num_instances, eps, gather, index
    )
    chosen = _backend.resolve("index_demux", backend, hidden.device, KERNEL_BACKENDS, KERNELS)
    if chosen == "reference":
        return reference.index_demux(
            hidden, weight, bias, ln_weight, ln_bias, num_instances, eps, gather, index
        )
    if chosen == "cpu":
        args = (hidden, weight, bias, ln_weight, ln_bias, num_instances, eps, gather, _long(index))
        if _cpu.runs_kernels(hidden):
            return _cpu.kernels.index_demux(*args)
        return _cpu.index_demux(*args)
    a, c, position = _split_terms(hidden, weight, bias, num_instances, gather)
    return demux_gather(
        a, c, ln_weight, ln_bias, eps, gather, _long(index), position, chosen, hidden.dtype
    )


def index_demux_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
    *,
    num_instances: int,
    eps: float = 1e-5,
    gather: Gather = "token",
    index: torch.Tensor | None = None,
    backend: _backend.Backend = "auto",
) -> torch.Tensor:
    """Index demux followed by a Linear: logits = index_demux(...) @ proj_weightᵀ + proj_bias.

    With a backend that has the fused kernel (triton) and K <= 64 output columns (token
    classes) the projection runs inside the demux kernel, so the (…, d) u is never written
    in the forward pass; otherwise the demux kernel writes u and a Linear follows. For
    K <= 64, ``auto`` prefers the backend with the fused kernel.

    Args:
        proj_weight: (K, d) projection (e.g. the token-classification ``decoder.weight``);
            proj_bias: (K,) or None. Other arguments as :func:`index_demux`.

    Returns:
        logits in the hidden dtype, shaped like :func:`index_demux`'s u with d replaced by K.
    """
    num_instances, eps = _validate_args(
        hidden, weight, bias, ln_weight, ln_bias, num_instances, eps, gather, index
    )
    check_tensor("proj_weight", proj_weight)
    check_rank("proj_weight", proj_weight, 2, "(K, d)")
    check_nonempty("proj_weight", proj_weight)
    k = proj_weight.shape[0]
    params = {"proj_weight": (proj_weight, (k, hidden.shape[-1]))}
    if proj_bias is not None:
        params["proj_bias"] = (proj_bias, (k,))
    _validate.demux_params(hidden, params)
    fusable = k <= _opdefs.MAX_PROJECTION
    preferred = PROJECT_BACKENDS if fusable else KERNEL_BACKENDS
    chosen = _backend.resolve("index_demux", backend, hidden.device, preferred, KERNELS)
    if chosen == "reference":
        u = reference.index_demux(
            hidden, weight, bias, ln_weight, ln_bias, num_instances, eps, gather, index
        )
        ct = compute_dtype(u, proj_weight)
        bias_ct = None if proj_bias is None else proj_bias.to(ct)
        return F.linear(u.to(ct), proj_weight.to(ct), bias_ct).to(hidden.dtype)
    if chosen == "cpu":
        args = (hidden, weight, bias, ln_weight, ln_bias, num_instances, eps, gather, _long(index))
        if _cpu.runs_kernels(hidden) and not _cpu.projects_in_chunks(hidden, num_instances, gather):
            return F.linear(_cpu.kernels.index_demux(*args), proj_weight, proj_bias)
        return _cpu.index_demux(*args, (proj_weight, proj_bias))
    a, c, position = _split_terms(hidden, weight, bias, num_instances, gather)
    index = _long(index)
    if fusable and _opdefs.has_operator(PROJECT_KERNEL, chosen):
        return DemuxGatherProject.apply(
            a, c, ln_weight, ln_bias, proj_weight, proj_bias, eps, gather, index, position,
            chosen, hidden.dtype,
        )  # fmt: skip
    u = demux_gather(a, c, ln_weight, ln_bias, eps, gather, index, position, chosen, hidden.dtype)
    return linear(u, proj_weight, proj_bias).to(hidden.dtype)
