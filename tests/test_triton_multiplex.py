"""The Triton multiplex kernels (hadamard, ortho, low-rank ortho), forward and backward, run
by the Triton interpreter on the CPU (TRITON_INTERPRET=1), against the float64 reference.

Inputs are rounded to the dtype under test, then the reference runs in float64 on the same
values; errors are bounded relative to the magnitude of the terms summed (the reference on
the inputs' absolute values), so cancellation cannot hide or fake an error. Outputs are
preallocated full of NaN, so an element a kernel does not write fails the test. Bounds:
the KERNEL table of muxkernels._tolerances, at the data's dtype. Shapes are
odd on purpose: N in {1, 3}, d in {5, 16, 97} (never a multiple of N = 3, so the low-rank
blocks leave d - N·c columns unused), L in {1, 4, 20}, B' in {1, 2}; the last shape spans
several programs along rows and row tiles that straddle groups.
"""

from __future__ import annotations

import os

import pytest
import torch

from muxkernels import _triton
from muxkernels import reference as ref

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("the CPU kernel tests need TRITON_INTERPRET=1", allow_module_level=True)
if not _triton.load():
    pytest.skip(f"triton is unavailable: {_triton.load_error()!r}", allow_module_level=True)

from helpers import KERNEL, assert_close, magnitude, multiplex_tables, nan_like

SHAPES = [
    pytest.param(groups, n, length, d, id=f"G{groups}-N{n}-L{length}-d{d}")
    for groups, n, length, d in (
        (1, 1, 1, 5),
        (2, 3, 4, 97),
        (2, 3, 1, 5),
        (1, 1, 4, 97),
        (2, 3, 20, 16),
    )
]
# (data dtype, parameter dtype)
DTYPES = [
    pytest.param(torch.float64, torch.float64, id="float64"),
    pytest.param(torch.float32, torch.float32, id="float32"),
    pytest.param(torch.float16, torch.float16, id="float16"),
    pytest.param(torch.float16, torch.float32, id="float16-fp32params"),
]
KINDS, FORWARD, BACKWARD, OPS = multiplex_tables()


def make_params(kind: str, randn, n: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """vectors (N, d); matrices (N, d, d); or the low-rank factors u, h (d, d)."""
    if kind == "hadamard":
        return (randn(n, d, dtype=dtype),)
    if kind == "ortho":
        return (randn(n, d, d, scale=d**-0.5, dtype=dtype),)
    return randn(d, d, scale=d**-0.5, dtype=dtype), randn(d, d, scale=d**-0.5, dtype=dtype)


def reference_backward(kind: str, e, params, dx) -> tuple[torch.Tensor, ...]:
    """(dE, d params...) of the reference, in float64."""
    e, dx, *params = (t.detach().to(torch.float64, copy=True) for t in (e, dx, *params))
    if kind == "hadamard":
        return ref.hadamard_mux_backward(e, *params, dx, vectors_grad=True)
    if kind == "ortho":
        return ref.ortho_mux_backward(e, *params, dx, matrices_grad=True)
    leaves = (e.requires_grad_(), *(p.requires_grad_() for p in params))
    return torch.autograd.grad(ref.lowrank_ortho_mux(*leaves), leaves, dx)


@pytest.mark.parametrize(("dtype", "param_dtype"), DTYPES)
@pytest.mark.parametrize(("groups", "n", "length", "d"), SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_reference(randn, kind, groups, n, length, d, dtype, param_dtype):
    e = randn(groups, n, length, d, dtype=dtype)
    params = make_params(kind, randn, n, d, param_dtype)
    launcher, reference = FORWARD[kind]
    out = nan_like(e, (groups, length, d))
    got = launcher(e, *params, out=out)
    assert got is out
    want = reference(e.double(), *(p.double() for p in params))
    assert_close(got, want, KERNEL, magnitude=magnitude(reference, e, *params), what="x")


@pytest.mark.parametrize(("dtype", "param_dtype"), DTYPES)
@pytest.mark.parametrize(("groups", "n", "length", "d"), SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_backward_matches_reference(randn, kind, groups, n, length, d, dtype, param_dtype):
    e = randn(groups, n, length, d, dtype=dtype)
    params = make_params(kind, randn, n, d, param_dtype)
    dx = randn(groups, length, d, dtype=dtype)
    outs = tuple(nan_like(t) for t in (e, *params))
    grads = BACKWARD[kind](dx, e, *params, True, *outs)
    assert all(got is out for got, out in zip(grads, outs, strict=True))
    wants = reference_backward(kind, e, params, dx)
    magnitudes = reference_backward(kind, e.abs(), tuple(p.abs() for p in params), dx.abs())
    names = ("dE", *(f"d{i}" for i in range(len(params))))
    for name, got, want, size, like in zip(
        names, grads, wants, magnitudes, (e, *params), strict=True
    ):
        assert got.dtype == like.dtype, name
        assert_close(got, want, KERNEL, dtype=dtype, magnitude=size, what=name)


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_grads_not_asked_are_empty(randn, kind):
    e = randn(2, 3, 4, 5, dtype=torch.float32)
    params = make_params(kind, randn, 3, 5, torch.float32)
    dx = randn(2, 4, 5, dtype=torch.float32)
    backward = getattr(torch.ops.muxkernels, OPS[kind][1])
    d_e, *d_params = backward(dx, e, *params, False)
    for d_param, param in zip(d_params, params, strict=True):
        assert d_param.shape == (0,) and d_param.dtype == param.dtype
    d_e_full, *_ = backward(dx, e, *params, True)
    assert torch.equal(d_e, d_e_full)


@pytest.mark.parametrize("kind", KINDS)
def test_operators_match_launchers(randn, kind):
    e = randn(2, 3, 4, 5, dtype=torch.float32)
    params = make_params(kind, randn, 3, 5, torch.float32)
    forward = getattr(torch.ops.muxkernels, OPS[kind][0])
    assert torch.equal(forward(e, *params), FORWARD[kind][0](e, *params))


@pytest.mark.parametrize("grads", [True, False], ids=["grads", "no-grads"])
@pytest.mark.parametrize("kind", KINDS)
def test_opcheck(randn, kind, grads):
    e = randn(2, 3, 2, 5, dtype=torch.float32)
    params = make_params(kind, randn, 3, 5, torch.float32)
    dx = randn(2, 2, 5, dtype=torch.float32)
    forward, backward = (getattr(torch.ops.muxkernels, name) for name in OPS[kind])
    if grads:
        torch.library.opcheck(forward, (e, *params))
    torch.library.opcheck(backward, (dx, e, *params, grads))
