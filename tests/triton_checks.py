"""Pieces shared by the CPU (interpreter) and GPU tests of the Triton kernels: the tables of
the multiplex kernels and the MLP demux reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from muxkernels import reference as ref


def multiplex_tables() -> tuple[tuple[str, ...], dict, dict, dict]:
    """(KINDS, FORWARD, BACKWARD, OPS) of the Triton multiplex kernels, by kind: FORWARD[kind]
    = (launcher, reference), BACKWARD[kind] = launcher, OPS[kind] = (forward operator name,
    backward operator name). Imports the kernel modules: call it after the tests' skips."""
    from muxkernels._triton import hadamard_mux, ortho_mux

    kinds = ("hadamard", "ortho", "lowrank")
    forward = {
        "hadamard": (hadamard_mux.hadamard_mux_fwd, ref.hadamard_mux),
        "ortho": (ortho_mux.ortho_mux_fwd, ref.ortho_mux),
        "lowrank": (ortho_mux.lowrank_ortho_mux_fwd, ref.lowrank_ortho_mux),
    }
    backward = {
        "hadamard": hadamard_mux.hadamard_mux_bwd,
        "ortho": ortho_mux.ortho_mux_bwd,
        "lowrank": ortho_mux.lowrank_ortho_mux_bwd,
    }
    ops = {
        "hadamard": ("hadamard_mux_fwd_triton", "hadamard_mux_bwd_triton"),
        "ortho": ("ortho_mux_fwd_triton", "ortho_mux_bwd_triton"),
        "lowrank": ("lowrank_ortho_mux_fwd_triton", "lowrank_ortho_mux_bwd_triton"),
    }
    return kinds, forward, backward, ops


def mlp_reference(pre, bias, ln_weight, ln_bias, eps):
    """SPEC section 4 from pre = h @ W_stackᵀ: u[:, i] = LN_i(gelu(pre[..., i·d:(i+1)·d] + b_i))."""
    groups, length, _ = pre.shape
    n, d = bias.shape
    z = pre.view(groups, length, n, d).transpose(1, 2) + bias[:, None, :]
    branches = [
        F.layer_norm(F.gelu(z[:, i]), (d,), ln_weight[i], ln_bias[i], eps) for i in range(n)
    ]
    return torch.stack(branches, dim=1)
