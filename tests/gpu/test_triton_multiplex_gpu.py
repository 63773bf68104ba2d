"""On a CUDA device: the compiled Triton multiplex kernels (hadamard, ortho, low-rank ortho),
forward and backward, against the reference run in float64 on the same (rounded) inputs.

Covers the benchmark shapes (hadamard B'=64, L=128, d=768, N in {10, 40}; ortho and low-rank
B'=16, L=128, d=768, N=10) in bf16/fp16/fp32 (and bf16 data with fp32 parameters), an odd
d=97 on views that start one element past a 16-byte boundary, offsets beyond 2^31 elements,
opcheck, and bitwise reproducible parameter gradients. Errors are bounded relative to the
magnitude of the terms summed (the reference on absolute values); preallocated outputs are
full of NaN, so an element a kernel skips fails the test.
"""

from __future__ import annotations

import os

import pytest
import torch

from muxkernels import _triton
from muxkernels import reference as ref

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") == "1",
        reason="tests the compiled kernels (TRITON_INTERPRET=1 is set)",
    ),
]

if not _triton.load():
    pytest.skip(f"triton is unavailable: {_triton.load_error()!r}", allow_module_level=True)

from helpers import KERNEL, assert_close, multiplex_tables, nan_like, randn  # noqa: E402

DEVICE = torch.device("cuda")
# (data dtype, parameter dtype)
DTYPES = [
    pytest.param(torch.bfloat16, torch.bfloat16, id="bfloat16"),
    pytest.param(torch.bfloat16, torch.float32, id="bfloat16-fp32params"),
    pytest.param(torch.float16, torch.float16, id="float16"),
    pytest.param(torch.float32, torch.float32, id="float32"),
]
KINDS, FORWARD, BACKWARD, OPS = multiplex_tables()


@pytest.fixture
def cuda_generator() -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(1234)


def make_params(kind: str, gen, n: int, d: int, dtype, misaligned: bool = False):
    """vectors (N, d); matrices (N, d, d); or the low-rank factors u, h (d, d)."""
    if kind == "hadamard":
        return (randn(n, d, generator=gen, dtype=dtype, misaligned=misaligned),)
    if kind == "ortho":
        return (randn(n, d, d, generator=gen, dtype=dtype, scale=d**-0.5, misaligned=misaligned),)
    return tuple(
        randn(d, d, generator=gen, dtype=dtype, scale=d**-0.5, misaligned=misaligned) for _ in "uh"
    )


def reference_forward(kind: str, e, params) -> torch.Tensor:
    return FORWARD[kind][1](e.double(), *(p.double() for p in params))


def reference_backward(kind: str, e, params, dx, grads: bool) -> tuple[torch.Tensor, ...]:
    """(dE, d params...) of the reference in float64 (dE only when not ``grads``)."""
    e, dx, *params = (t.detach().to(torch.float64, copy=True) for t in (e, dx, *params))
    if kind == "hadamard":
        out = ref.hadamard_mux_backward(e, *params, dx, vectors_grad=grads)
    elif kind == "ortho":
        out = ref.ortho_mux_backward(e, *params, dx, matrices_grad=grads)
    else:
        leaves = (e.requires_grad_(), *(p.requires_grad_(grads) for p in params))
        wanted = leaves if grads else leaves[:1]
        out = torch.autograd.grad(ref.lowrank_ortho_mux(*leaves), wanted, dx)
    return tuple(t for t in out if t is not None)


def check_forward(kind: str, e, params) -> None:
    """The launcher on NaN-filled output vs the reference; the operator gives the same bits."""
    launcher = FORWARD[kind][0]
    x = launcher(e, *params, out=nan_like(e, (e.shape[0], e.shape[2], e.shape[3])))
    torch.cuda.synchronize()
    want = reference_forward(kind, e, params)
    magnitude = reference_forward(kind, e.abs(), tuple(p.abs() for p in params))
    assert_close(x, want, KERNEL, magnitude=magnitude, what="x")
    del want, magnitude
    assert torch.equal(getattr(torch.ops.muxkernels, OPS[kind][0])(e, *params), x)


def check_backward(kind: str, e, params, dx) -> None:
    """All gradients from NaN-filled outputs vs the reference; the operator (run again)
    reproduces them bit for bit, so the row reductions are deterministic."""
    grads = BACKWARD[kind](dx, e, *params, True, *(nan_like(t) for t in (e, *params)))
    torch.cuda.synchronize()
    names = ("dE", *(f"d{i}" for i in range(len(params))))
    wants = reference_backward(kind, e, params, dx, True)
    magnitudes = reference_backward(kind, e.abs(), tuple(p.abs() for p in params), dx.abs(), True)
    for name, got, want, magnitude, like in zip(
        names, grads, wants, magnitudes, (e, *params), strict=True
    ):
        assert got.dtype == like.dtype, name
        assert_close(got, want, KERNEL, dtype=e.dtype, magnitude=magnitude, what=name)
    del wants, magnitudes
    again = getattr(torch.ops.muxkernels, OPS[kind][1])(dx, e, *params, True)
    for name, got, repeat in zip(names, grads, again, strict=True):
        assert torch.equal(got, repeat), f"{name} differs between two runs"


@pytest.mark.parametrize(("dtype", "param_dtype"), DTYPES)
@pytest.mark.parametrize("n", [10, 40])
def test_hadamard_at_benchmark_shape(cuda_generator, n, dtype, param_dtype):
    e = randn(64, n, 128, 768, generator=cuda_generator, dtype=dtype)
    params = make_params("hadamard", cuda_generator, n, 768, param_dtype)
    dx = randn(64, 128, 768, generator=cuda_generator, dtype=dtype)
    check_forward("hadamard", e, params)
    check_backward("hadamard", e, params, dx)


@pytest.mark.parametrize(("dtype", "param_dtype"), DTYPES)
@pytest.mark.parametrize("kind", ["ortho", "lowrank"])
def test_matrix_mux_at_benchmark_shape(cuda_generator, kind, dtype, param_dtype):
    e = randn(16, 10, 128, 768, generator=cuda_generator, dtype=dtype)
    params = make_params(kind, cuda_generator, 10, 768, param_dtype)
    dx = randn(16, 128, 768, generator=cuda_generator, dtype=dtype)
    check_forward(kind, e, params)
    check_backward(kind, e, params, dx)


@pytest.mark.parametrize(
    ("dtype", "param_dtype"),
    [*DTYPES, pytest.param(torch.float64, torch.float64, id="float64")],
)
@pytest.mark.parametrize("kind", KINDS)
def test_odd_misaligned(cuda_generator, kind, dtype, param_dtype):
    groups, n, length, d = 3, 3, 7, 97
    e = randn(groups, n, length, d, generator=cuda_generator, dtype=dtype, misaligned=True)
    params = make_params(kind, cuda_generator, n, d, param_dtype, misaligned=True)
    dx = randn(groups, length, d, generator=cuda_generator, dtype=dtype, misaligned=True)
    check_forward(kind, e, params)
    check_backward(kind, e, params, dx)


@pytest.mark.parametrize("kind", KINDS)
def test_offsets_beyond_int32(cuda_generator, kind):
    """E of 2.2e9 elements (bf16): the last rows of the last group, whose offsets pass 2^31."""
    groups, n, length, d = 3, 4, 180_000, 1024
    assert groups * n * length * d > 2**31
    e = randn(groups, n, length, d, generator=cuda_generator, dtype=torch.bfloat16)
    params = make_params(kind, cuda_generator, n, d, torch.bfloat16)
    dx = randn(groups, length, d, generator=cuda_generator, dtype=torch.bfloat16)
    forward, backward = (getattr(torch.ops.muxkernels, name) for name in OPS[kind])
    tail_e, tail_dx = e[-1:, :, -8:].contiguous(), dx[-1:, -8:].contiguous()
    abs_params = tuple(p.abs() for p in params)
    x = forward(e, *params)[-1:, -8:]
    want = reference_forward(kind, tail_e, params)
    magnitude = reference_forward(kind, tail_e.abs(), abs_params)
    assert_close(x, want, KERNEL, magnitude=magnitude, what="x")
    del x
    d_e = backward(dx, e, *params, False)[0][-1:, :, -8:]
    (want,) = reference_backward(kind, tail_e, params, tail_dx, False)
    (magnitude,) = reference_backward(kind, tail_e.abs(), abs_params, tail_dx.abs(), False)
    assert_close(d_e, want, KERNEL, magnitude=magnitude, what="dE")


@pytest.mark.parametrize("kind", KINDS)
def test_opcheck(cuda_generator, kind):
    e = randn(2, 3, 4, 40, generator=cuda_generator, dtype=torch.float16)
    params = make_params(kind, cuda_generator, 3, 40, torch.float32)
    dx = randn(2, 4, 40, generator=cuda_generator, dtype=torch.float16)
    forward, backward = (getattr(torch.ops.muxkernels, name) for name in OPS[kind])
    torch.library.opcheck(forward, (e, *params))
    for grads in (True, False):
        torch.library.opcheck(backward, (dx, e, *params, grads))
