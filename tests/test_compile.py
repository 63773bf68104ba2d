"""torch.compile(fullgraph=True) traces every public op, forward and backward.

The "aot_eager" backend runs dynamo and AOTAutograd (fake tensors, the operators' fake
implementations, the backward graph) without inductor's slow C++ compilation.
"""

from __future__ import annotations

import pytest
import torch
from kernel_ops import BACKENDS_OF, runnable

import muxkernels
from muxkernels import transforms

N, D, L, GROUPS = 3, 8, 4, 2


def _compiled(fn):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


def _inputs(randn):
    return {
        "emb": randn(GROUPS * N, L, D),
        "vec": transforms.gaussian_vectors(N, D, generator=0, dtype=torch.float64),
        "mats": transforms.ortho_matrices(N, D, generator=0, dtype=torch.float64),
        "hid": randn(GROUPS, L + N + 1, D),
        "w2": randn(D, 2 * D, scale=D**-0.5),
        "b": randn(D),
        "lw": randn(D),
        "lb": randn(D),
        "keys": randn(N, D),
        "pw": randn(5, D, scale=D**-0.5),
        "wm": randn(N, D, D, scale=D**-0.5),
        "bm": randn(N, D),
        "tok": torch.randint(0, 11, (GROUPS * N, L), generator=torch.Generator().manual_seed(1)),
        "tables": randn(11, D),
        "index": torch.randint(
            0, N, (GROUPS, L + N + 1), generator=torch.Generator().manual_seed(0)
        ),
    }


CASES = {
    "embed_mux": lambda x, be: muxkernels.embed_mux(
        x["tok"], x["tables"], x["tables"], x["tables"][:2], x["lw"], x["lb"], x["vec"], backend=be
    ),
    "hadamard_mux": lambda x, be: muxkernels.hadamard_mux(x["emb"], x["vec"], backend=be),
    "ortho_mux": lambda x, be: muxkernels.ortho_mux(x["emb"], x["mats"], backend=be),
    "lowrank_ortho_mux": lambda x, be: muxkernels.lowrank_ortho_mux(
        x["emb"], x["mats"][0], x["mats"][1], num_instances=N, backend=be
    ),
    "index_demux_token": lambda x, be: muxkernels.index_demux(
        x["hid"], x["w2"], x["b"], x["lw"], x["lb"], num_instances=N, backend=be
    ),
    "index_demux_sequence": lambda x, be: muxkernels.index_demux(
        x["hid"], x["w2"], x["b"], x["lw"], x["lb"], num_instances=N, gather="sequence", backend=be
    ),
    "index_demux_selected": lambda x, be: muxkernels.index_demux(
        x["hid"],
        x["w2"],
        x["b"],
        x["lw"],
        x["lb"],
        num_instances=N,
        gather="selected",
        index=x["index"],
        backend=be,
    ),
    "index_demux_logits": lambda x, be: muxkernels.index_demux_logits(
        x["hid"],
        x["w2"],
        x["b"],
        x["lw"],
        x["lb"],
        x["pw"],
        x["b"][:5],
        num_instances=N,
        backend=be,
    ),
    "index_pos_demux": lambda x, be: muxkernels.index_pos_demux(
        x["hid"], x["keys"], x["w2"], x["b"], x["lw"], x["lb"], backend=be
    ),
    "mlp_demux": lambda x, be: muxkernels.mlp_demux(
        x["hid"], x["wm"], x["bm"], x["lw"].expand(N, D), x["lb"].expand(N, D), backend=be
    ),
}


def _check_forward_backward(case, inputs, backend):
    leaves = {k: v.requires_grad_() for k, v in inputs.items() if v.is_floating_point()}
    eager = case(inputs, backend)
    eager_grads = torch.autograd.grad(eager.sum(), list(leaves.values()), allow_unused=True)
    compiled = _compiled(lambda x: case(x, backend))(inputs)
    grads = torch.autograd.grad(compiled.sum(), list(leaves.values()), allow_unused=True)
    torch.testing.assert_close(compiled, eager)
    for got, want in zip(grads, eager_grads, strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", list(CASES))
def test_fullgraph_reference(name, randn):
    _check_forward_backward(CASES[name], _inputs(randn), "reference")


def _op(case: str) -> str:
    """The public op of a case: "index_demux_token" → "index_demux"."""
    return (
        case.rsplit("_", 1)[0] if case.split("_")[-1] in ("token", "sequence", "selected") else case
    )


KERNEL_PARAMS = [
    pytest.param(name, backend, id=f"{name}-{backend}")
    for name in CASES
    for backend in BACKENDS_OF[_op(name)]
]


@pytest.mark.parametrize(("name", "backend"), KERNEL_PARAMS)
def test_fullgraph_kernel_backend(name, backend, randn):
    """The autograd Functions and operators of each kernel backend trace without breaks."""
    op = _op(name)
    if not runnable(op, backend):
        pytest.skip(f"{backend} cannot run {op} on CPU here")
    _check_forward_backward(CASES[name], _inputs(randn), backend)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["hadamard_mux", "ortho_mux", "index_demux_token", "mlp_demux"])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_inductor_on_gpu(name, backend, randn):
    """The default torch.compile backend (inductor) with the kernel operators, on CUDA."""
    cuda = torch.device("cuda")
    if not runnable(_op(name), backend, cuda):
        pytest.skip(f"{backend} cannot run {name} on CUDA here")
    inputs = {k: v.to(cuda, torch.float32) if v.is_floating_point() else v.to(cuda)
              for k, v in _inputs(randn).items()}  # fmt: skip
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: CASES[name](x, backend), fullgraph=True)
    torch.testing.assert_close(compiled(inputs), CASES[name](inputs, backend))
