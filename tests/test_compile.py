"""torch.compile(fullgraph=True) traces every public op, forward and backward.

The "aot_eager" backend runs dynamo and AOTAutograd (fake tensors, the operators' fake
implementations, the backward graph) without inductor's slow C++ compilation.
"""

from __future__ import annotations

import pytest
import torch
from op_cases import BACKENDS_OF, CASES, inputs, op_of, runnable


def _compiled(fn):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


def _check_forward_backward(case, x, backend):
    leaves = {k: v.requires_grad_() for k, v in x.items() if v.is_floating_point()}
    eager = case(x, backend)
    eager_grads = torch.autograd.grad(eager.sum(), list(leaves.values()), allow_unused=True)
    compiled = _compiled(lambda y: case(y, backend))(x)
    grads = torch.autograd.grad(compiled.sum(), list(leaves.values()), allow_unused=True)
    torch.testing.assert_close(compiled, eager)
    for got, want in zip(grads, eager_grads, strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", list(CASES))
def test_fullgraph_reference(name):
    _check_forward_backward(CASES[name], inputs(torch.float64), "reference")


KERNEL_PARAMS = [
    pytest.param(name, backend, id=f"{name}-{backend}")
    for name in CASES
    for backend in BACKENDS_OF[op_of(name)]
]


@pytest.mark.parametrize(("name", "backend"), KERNEL_PARAMS)
def test_fullgraph_kernel_backend(name, backend):
    """The autograd Functions and operators of each kernel backend trace without breaks."""
    if not runnable(op_of(name), backend):
        pytest.skip(f"{backend} cannot run {name} on CPU here")
    _check_forward_backward(CASES[name], inputs(torch.float64), backend)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["hadamard_mux", "ortho_mux", "index_demux-token", "mlp_demux"])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_inductor_on_gpu(name, backend):
    """The default torch.compile backend (inductor) with the kernel operators, on CUDA."""
    cuda = torch.device("cuda")
    if not runnable(op_of(name), backend, cuda):
        pytest.skip(f"{backend} cannot run {name} on CUDA here")
    x = {k: v.to(cuda) for k, v in inputs(torch.float32).items()}
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: CASES[name](x, backend), fullgraph=True)
    torch.testing.assert_close(compiled(x), CASES[name](x, backend))
