"""The kernel operators' contract: one schema and one fake implementation per operator.

Every kernel backend registers its launchers as ``muxkernels::<name>_<backend>`` with the
schema below, written here only: ``triton`` from Python with ``torch.library.custom_op``;
``cuda`` by ``define_implemented`` once the compiled extension has registered its CPU and
CUDA implementations (csrc/bindings/, which defines no operator). So the autograd
Functions in ``muxkernels.ops`` call either backend the same way and the fakes here serve
both. Conventions shared by all operators:

- floating inputs are float16, bfloat16, float32 or float64; a parameter (vectors,
  matrices, LayerNorm affine, ...) has the data's dtype or float32; accumulation is fp32
  (fp64 for float64 data); outputs have the data's dtype, gradients the dtype of the
  tensor they are the gradient of;
- the demux operators take the small GEMMs' outputs (a, c, pre) in float32 for half data,
  so that nothing is rounded to half before it is combined; their ``out_dtype`` is the
  data's dtype (u, logits), and grad_u has it too;
- tensors are contiguous and on one device; sizes and offsets are 64-bit;
- a gradient that was not asked for (``*_grad=False``) is returned as an empty (0,)
  tensor, since an operator cannot return None.

Operators (data first, then parameters, then scalars):

hadamard_mux_fwd(embeddings (B',N,L,d), vectors (N,d)) -> x (B',L,d)
    x = (1/N) Σ_i v_i ⊙ E_i
hadamard_mux_bwd(grad_out (B',L,d), embeddings, vectors, vectors_grad) -> (dE, dv)
    dE = (1/N) v_i ⊙ dx; dv_i = (1/N) Σ_{g,t} E_i ⊙ dx, reduced deterministically
ortho_mux_fwd(embeddings (B',N,L,d), matrices (N,d,d)) -> x (B',L,d)
    x = N^(-1/2) Σ_i P_i E_i
ortho_mux_bwd(grad_out, embeddings, matrices, matrices_grad) -> (dE, dP)
lowrank_ortho_mux_fwd(embeddings (B',N,L,d), u (d,d), h (d,d)) -> x (B',L,d)
    x = N^(-1/2) U[:, :N·c] concat_i(H[:, S_i]ᵀ E_i), c = d // N
lowrank_ortho_mux_bwd(grad_out, embeddings, u, h, factors_grad) -> (dE, dU, dH)
demux_gather_fwd(a (Ga,N,d), c (B',L',d), ln_weight (d), ln_bias (d), eps, gather,
                 index (B',L') or None, sequence_position, out_dtype) -> u
    u[g,i,t] = LN(gelu(a[g,i] + c[g,t])), Ga = B' or 1 (a broadcast over groups);
    gather "token" → (B',N,L',d), "sequence" (t = sequence_position) → (B',N,d),
    "selected" (i = index[g,t]) → (B',L',d)
demux_gather_bwd(grad_u, a, c, ln_weight, ln_bias, eps, gather, index,
                 sequence_position) -> (da, dc, d_ln_weight, d_ln_bias)
    gradients recomputed from a and c (nothing saved but the inputs); da has a's shape
    (summed over groups when Ga = 1), dc is zero at positions the gather does not read
demux_project_fwd(a, c, ln_weight, ln_bias, eps, gather, index, sequence_position,
                  proj_weight (K,d), proj_bias (K) or None, out_dtype) -> logits
    logits = u @ proj_weightᵀ + proj_bias without writing u; K <= MAX_PROJECTION (64);
    the gather's shape with d replaced by K
mlp_demux_fwd(pre (B',L,N·d), bias (N,d), ln_weight (N,d), ln_bias (N,d), eps,
              out_dtype) -> u
    pre = h @ [W_1; …; W_N]ᵀ; u[g,i,t] = LN_i(gelu(pre[g,t,i·d:(i+1)·d] + b_i)),
    shape (B',N,L,d)
mlp_demux_bwd(grad_u, pre, bias, ln_weight, ln_bias, eps) -> (d_pre, d_bias,
              d_ln_weight, d_ln_bias)
index_demux_fwd(hidden (B',L',d), weight (d,2d), bias (d), ln_weight, ln_bias,
                num_instances, eps, gather, index) -> (u, a, c)
    the whole index demux (design §3) for float32/float64 data in one call: a = p W_pᵀ
    (B',N,d), c = h W_hᵀ + b (B',L',d; (B',1,d) at t = N for "sequence"), u =
    demux_gather_fwd(a, c, ..., sequence_position=0); a and c are returned for backward
index_demux_bwd(grad_u, hidden, weight, a, c, ln_weight, ln_bias, num_instances, eps,
                gather, index) -> (d_hidden, d_weight, d_bias, d_ln_weight, d_ln_bias)
index_pos_demux_fwd(hidden (B',L,d), keys (N,d), weight (d,2d), bias (d), ln_weight,
                    ln_bias, eps, gather, index) -> (u, a, c)
    the index_pos demux (design §4) in one call: a = k W_kᵀ + b (1,N,d), c = h W_hᵀ
    (B',L,d; (B',1,d) at t = 0 for "sequence"), u = demux_gather_fwd(a, c, ...)
index_pos_demux_bwd(grad_u, hidden, keys, weight, a, c, ln_weight, ln_bias, eps, gather,
                    index) -> (d_hidden, d_keys, d_weight, d_bias, d_ln_weight, d_ln_bias)
embed_mux_fwd(input_ids (B',N,L), word, position, token_type, ln_weight, ln_bias,
              vectors, position_ids, token_type_ids, mixed_position_ids (B',L),
              mixed_token_type_ids (B',L), eps) -> x (B',L,d)
    design §1's fused front end; see ``muxkernels.reference.embed_mux``
embed_mux_bwd(grad_x (B',L,d), input_ids, word, position, token_type, ln_weight,
              ln_bias, vectors, position_ids, token_type_ids, mixed_position_ids,
              mixed_token_type_ids, eps) -> (d_word, d_position, d_token_type,
              d_ln_weight, d_ln_bias, d_vectors)
    recomputed from the ids (nothing saved); the tables' gradients are dense, zero in
    the rows no id names (the cpu backend only; its id tensors may be expanded views)
conv_mux_fwd(images (B',N,C,H,W), rop (N,C_out,C,K,K)) -> x (B',C_out,H,W)
    x[g,o] = Σ_i Σ_c conv(E[g,i,c], rop[i,o,c]), K odd, zero padding K/2 (design §7's
    convolution modes; the cpu backend only)
conv_mux_bwd(grad_out, images, rop, rop_grad) -> (d_images, d_rop)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

SCHEMAS: dict[str, str] = {
    "hadamard_mux_fwd": "(Tensor embeddings, Tensor vectors) -> Tensor",
    "hadamard_mux_bwd": (
        "(Tensor grad_out, Tensor embeddings, Tensor vectors, bool vectors_grad) "
        "-> (Tensor, Tensor)"
    ),
    "ortho_mux_fwd": "(Tensor embeddings, Tensor matrices) -> Tensor",
    "ortho_mux_bwd": (
        "(Tensor grad_out, Tensor embeddings, Tensor matrices, bool matrices_grad) "
        "-> (Tensor, Tensor)"
    ),
    "lowrank_ortho_mux_fwd": "(Tensor embeddings, Tensor u, Tensor h) -> Tensor",
    "lowrank_ortho_mux_bwd": (
        "(Tensor grad_out, Tensor embeddings, Tensor u, Tensor h, bool factors_grad) "
        "-> (Tensor, Tensor, Tensor)"
    ),
    "demux_gather_fwd": (
        "(Tensor a, Tensor c, Tensor ln_weight, Tensor ln_bias, float eps, str gather, "
        "Tensor? index, int sequence_position, ScalarType out_dtype) -> Tensor"
    ),
    "demux_gather_bwd": (
        "(Tensor grad_u, Tensor a, Tensor c, Tensor ln_weight, Tensor ln_bias, float eps, "
        "str gather, Tensor? index, int sequence_position) -> (Tensor, Tensor, Tensor, Tensor)"
    ),
    "demux_project_fwd": (
        "(Tensor a, Tensor c, Tensor ln_weight, Tensor ln_bias, float eps, str gather, "
        "Tensor? index, int sequence_position, Tensor proj_weight, Tensor? proj_bias, "
        "ScalarType out_dtype) -> Tensor"
    ),
    "mlp_demux_fwd": (
        "(Tensor pre, Tensor bias, Tensor ln_weight, Tensor ln_bias, float eps, "
        "ScalarType out_dtype) -> Tensor"
    ),
    "mlp_demux_bwd": (
        "(Tensor grad_u, Tensor pre, Tensor bias, Tensor ln_weight, Tensor ln_bias, float eps) "
        "-> (Tensor, Tensor, Tensor, Tensor)"
    ),
    "index_demux_fwd": (
        "(Tensor hidden, Tensor weight, Tensor bias, Tensor ln_weight, Tensor ln_bias, "
        "int num_instances, float eps, str gather, Tensor? index) -> (Tensor, Tensor, Tensor)"
    ),
    "index_demux_bwd": (
        "(Tensor grad_u, Tensor hidden, Tensor weight, Tensor a, Tensor c, Tensor ln_weight, "
        "Tensor ln_bias, int num_instances, float eps, str gather, Tensor? index) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "index_pos_demux_fwd": (
        "(Tensor hidden, Tensor keys, Tensor weight, Tensor bias, Tensor ln_weight, "
        "Tensor ln_bias, float eps, str gather, Tensor? index) -> (Tensor, Tensor, Tensor)"
    ),
    "index_pos_demux_bwd": (
        "(Tensor grad_u, Tensor hidden, Tensor keys, Tensor weight, Tensor a, Tensor c, "
        "Tensor ln_weight, Tensor ln_bias, float eps, str gather, Tensor? index) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "embed_mux_fwd": (
        "(Tensor input_ids, Tensor word_embeddings, Tensor position_embeddings, "
        "Tensor token_type_embeddings, Tensor ln_weight, Tensor ln_bias, Tensor vectors, "
        "Tensor position_ids, Tensor token_type_ids, Tensor mixed_position_ids, "
        "Tensor mixed_token_type_ids, float eps) -> Tensor"
    ),
    "embed_mux_bwd": (
        "(Tensor grad_x, Tensor input_ids, Tensor word_embeddings, Tensor position_embeddings, "
        "Tensor token_type_embeddings, Tensor ln_weight, Tensor ln_bias, Tensor vectors, "
        "Tensor position_ids, Tensor token_type_ids, Tensor mixed_position_ids, "
        "Tensor mixed_token_type_ids, float eps) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "conv_mux_fwd": "(Tensor images, Tensor rop) -> Tensor",
    "conv_mux_bwd": (
        "(Tensor grad_out, Tensor images, Tensor rop, bool rop_grad) -> (Tensor, Tensor)"
    ),
}


# The output dimensions of each gather, in order: B' ("groups"), N ("instances"), L'
# ("positions") and the row width (d, or K for the projection). The one definition: the
# fakes and the Triton launchers call ``gather_shape``, and the compiled extension reads
# this table when it is imported (csrc/bindings/module.cpp).
GATHER_OUTPUT_DIMS: dict[str, tuple[str, ...]] = {
    "token": ("groups", "instances", "positions", "width"),
    "sequence": ("groups", "instances", "width"),
    "selected": ("groups", "positions", "width"),
}

MAX_PROJECTION = 64  # the most output columns K demux_project_fwd takes


def qualified_name(name: str, backend: str) -> str:
    """``muxkernels::<name>_<backend>``, the operator of one backend."""
    return f"muxkernels::{name}_{backend}"


def _grad_or_empty(wanted: bool, like: torch.Tensor) -> torch.Tensor:
    """A contiguous gradient of ``like``'s shape (as every backend returns, whatever the
    parameter's strides), or an empty tensor when not ``wanted``."""
    return like.new_empty(like.shape) if wanted else like.new_empty((0,))


def gather_shape(a: torch.Tensor, c: torch.Tensor, gather: str, width: int) -> tuple[int, ...]:
    """The output shape of ``gather`` for a (Ga, N, d) and c (B', L', d), rows ``width`` wide
    (d for demux_gather, K for demux_project): its ``GATHER_OUTPUT_DIMS``."""
    torch._check(gather in GATHER_OUTPUT_DIMS, lambda: f"unknown gather {gather!r}")
    sizes = {"groups": c.shape[0], "instances": a.shape[1], "positions": c.shape[1]}
    return tuple(width if dim == "width" else sizes[dim] for dim in GATHER_OUTPUT_DIMS[gather])


def _hadamard_mux_fwd(embeddings, vectors):
    groups, _, length, d = embeddings.shape
    return embeddings.new_empty((groups, length, d))


def _hadamard_mux_bwd(grad_out, embeddings, vectors, vectors_grad):
    return torch.empty_like(embeddings), _grad_or_empty(vectors_grad, vectors)


def _ortho_mux_fwd(embeddings, matrices):
    return _hadamard_mux_fwd(embeddings, matrices)


def _ortho_mux_bwd(grad_out, embeddings, matrices, matrices_grad):
    return torch.empty_like(embeddings), _grad_or_empty(matrices_grad, matrices)


def _lowrank_ortho_mux_fwd(embeddings, u, h):
    return _hadamard_mux_fwd(embeddings, u)


def _lowrank_ortho_mux_bwd(grad_out, embeddings, u, h, factors_grad):
    return (
        torch.empty_like(embeddings),
        _grad_or_empty(factors_grad, u),
        _grad_or_empty(factors_grad, h),
    )


def _demux_gather_fwd(a, c, ln_weight, ln_bias, eps, gather, index, sequence_position, out_dtype):
    return c.new_empty(gather_shape(a, c, gather, c.shape[-1]), dtype=out_dtype)


def _demux_gather_bwd(grad_u, a, c, ln_weight, ln_bias, eps, gather, index, sequence_position):
    return (
        torch.empty_like(a),
        torch.empty_like(c),
        torch.empty_like(ln_weight),
        torch.empty_like(ln_bias),
    )


def _demux_project_fwd(
    a, c, ln_weight, ln_bias, eps, gather, index, sequence_position, proj_weight, proj_bias,
    out_dtype,
):  # fmt: skip
    return c.new_empty(gather_shape(a, c, gather, proj_weight.shape[0]), dtype=out_dtype)


def _mlp_demux_fwd(pre, bias, ln_weight, ln_bias, eps, out_dtype):
    groups, length, _ = pre.shape
    n, d = bias.shape
    return pre.new_empty((groups, n, length, d), dtype=out_dtype)


def _mlp_demux_bwd(grad_u, pre, bias, ln_weight, ln_bias, eps):
    return (
        torch.empty_like(pre),
        torch.empty_like(bias),
        torch.empty_like(ln_weight),
        torch.empty_like(ln_bias),
    )


def _index_demux_fwd(hidden, weight, bias, ln_weight, ln_bias, num_instances, eps, gather, index):
    groups, length, d = hidden.shape
    a = hidden.new_empty((groups, num_instances, d))
    c = hidden.new_empty((groups, 1 if gather == "sequence" else length, d))
    return c.new_empty(gather_shape(a, c, gather, d)), a, c


def _index_demux_bwd(grad_u, hidden, weight, a, c, ln_weight, ln_bias, *rest):
    return (
        torch.empty_like(hidden),
        torch.empty_like(weight),
        hidden.new_empty((hidden.shape[-1],)),
        torch.empty_like(ln_weight),
        torch.empty_like(ln_bias),
    )


def _index_pos_demux_fwd(hidden, keys, weight, bias, ln_weight, ln_bias, eps, gather, index):
    groups, length, d = hidden.shape
    a = hidden.new_empty((1, keys.shape[0], d))
    c = hidden.new_empty((groups, 1 if gather == "sequence" else length, d))
    return c.new_empty(gather_shape(a, c, gather, d)), a, c


def _index_pos_demux_bwd(grad_u, hidden, keys, weight, a, c, ln_weight, ln_bias, *rest):
    return (
        torch.empty_like(hidden),
        torch.empty_like(keys),
        torch.empty_like(weight),
        hidden.new_empty((hidden.shape[-1],)),
        torch.empty_like(ln_weight),
        torch.empty_like(ln_bias),
    )


def _embed_mux_fwd(input_ids, word_embeddings, *rest):
    groups, _, length = input_ids.shape
    return word_embeddings.new_empty((groups, length, word_embeddings.shape[1]))


def _embed_mux_bwd(grad_x, input_ids, *params_and_ids):
    # the gradients of word, position, token_type, ln_weight, ln_bias and vectors
    return tuple(torch.empty_like(t) for t in params_and_ids[:6])


def _conv_mux_fwd(images, rop):
    groups, _, _, height, width = images.shape
    return images.new_empty((groups, rop.shape[1], height, width))


def _conv_mux_bwd(grad_out, images, rop, rop_grad):
    return torch.empty_like(images), torch.empty_like(rop) if rop_grad else rop.new_empty((0,))


FAKES: dict[str, Callable[..., object]] = {
    "hadamard_mux_fwd": _hadamard_mux_fwd,
    "hadamard_mux_bwd": _hadamard_mux_bwd,
    "ortho_mux_fwd": _ortho_mux_fwd,
    "ortho_mux_bwd": _ortho_mux_bwd,
    "lowrank_ortho_mux_fwd": _lowrank_ortho_mux_fwd,
    "lowrank_ortho_mux_bwd": _lowrank_ortho_mux_bwd,
    "demux_gather_fwd": _demux_gather_fwd,
    "demux_gather_bwd": _demux_gather_bwd,
    "demux_project_fwd": _demux_project_fwd,
    "mlp_demux_fwd": _mlp_demux_fwd,
    "mlp_demux_bwd": _mlp_demux_bwd,
    "index_demux_fwd": _index_demux_fwd,
    "index_demux_bwd": _index_demux_bwd,
    "index_pos_demux_fwd": _index_pos_demux_fwd,
    "index_pos_demux_bwd": _index_pos_demux_bwd,
    "embed_mux_fwd": _embed_mux_fwd,
    "embed_mux_bwd": _embed_mux_bwd,
    "conv_mux_fwd": _conv_mux_fwd,
    "conv_mux_bwd": _conv_mux_bwd,
}


# The fragment that defines the operators of compiled extensions (alive as long as the module).
_LIBRARY = torch.library.Library("muxkernels", "FRAGMENT")

# Dispatch keys under which a compiled extension registers implementations.
_IMPLEMENTATION_KEYS = ("CPU", "CUDA")


def has_implementation(name: str, backend: str) -> bool:
    """Whether an implementation of ``muxkernels::<name>_<backend>`` is registered for the CPU
    or CUDA dispatch key (defined as an operator or not yet)."""
    qualified = qualified_name(name, backend)
    try:
        return any(
            torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key)
            for key in _IMPLEMENTATION_KEYS
        )
    except RuntimeError:  # the dispatcher has no entry at all for the name
        return False


def define_implemented(backend: str) -> None:
    """Defines, with its schema, every operator ``muxkernels::<name>_<backend>`` that has an
    implementation registered (by a compiled extension) and is not defined yet.

    The dispatcher checks the implementations' argument and return types against the schema
    here and raises RuntimeError on a mismatch (an extension built from other sources). So
    call it after importing the extension: in the other order (also supported) the check
    runs while the shared library loads, and a mismatch aborts the process.
    """
    for name, schema in SCHEMAS.items():
        if has_implementation(name, backend) and not has_operator(name, backend):
            _LIBRARY.define(f"{name}_{backend}{schema}")


def has_operator(name: str, backend: str) -> bool:
    """Whether ``muxkernels::<name>_<backend>`` is registered with PyTorch."""
    return hasattr(torch.ops.muxkernels, f"{name}_{backend}")


def register_fakes(backend: str) -> None:
    """Registers the fake implementation of every operator ``backend`` has registered."""
    for name, fake in FAKES.items():
        if has_operator(name, backend):
            torch.library.register_fake(qualified_name(name, backend))(fake)


def kernel(name: str, backend: str) -> Callable[..., object]:
    """The operator ``torch.ops.muxkernels.<name>_<backend>``."""
    return getattr(torch.ops.muxkernels, f"{name}_{backend}")
