"""The cpu backend's compiled low-rank multiplexer (csrc/cpu/lowrank_ortho_mux.cpp).

The operators ``lowrank_ortho_mux_fwd_cpu`` and ``lowrank_ortho_mux_bwd_cpu`` against the
reference and its autograd in float64 on NaN-poisoned memory at odd sizes (N = 1, N = d,
W = N·c < d), with factors stored by rows, by columns (as ``lowrank_factors`` returns them)
and strided (copied), the GEMMs through the BLAS directly and through ATen; two threads on
an input large enough to split; gradcheck through ``muxkernels.lowrank_ortho_mux`` on the
cpu backend; opcheck; argument checks.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from helpers import KERNEL, assert_close, cpu_op, randn, require_cpu_kernels

import muxkernels as mk
from muxkernels import reference, transforms
from muxkernels._cpu import _compiled

require_cpu_kernels()

SIZES = [(2, 3, 5, 97), (1, 1, 1, 8), (3, 40, 4, 64), (2, 5, 7, 12), (1, 7, 3, 7)]


def _factor(d: int, generator: int, dtype: torch.dtype, layout: str) -> torch.Tensor:
    """A random (d, d) factor stored by rows, by columns (a transpose) or strided."""
    if layout == "rows":
        return randn(d, d, generator=generator, dtype=dtype)
    if layout == "columns":
        return randn(d, d, generator=generator, dtype=dtype).t()
    return randn(d, 2 * d, generator=generator, dtype=dtype)[:, ::2]


@pytest.fixture(params=["direct", "aten"])
def blas(request):
    """The GEMMs through PyTorch's BLAS directly, or through ATen's addmm (the fallback
    where that BLAS is not there)."""
    module = importlib.import_module(_compiled.MODULE)
    before = module.set_direct_blas(request.param == "direct")
    yield request.param
    module.set_direct_blas(before)


@pytest.mark.parametrize("layout", ["rows", "columns", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", SIZES)
def test_lowrank_ortho_mux_matches_the_reference(size, dtype, layout, blas):
    groups, n, length, d = size
    embeddings = randn(groups, n, length, d, generator=1, dtype=dtype)
    u, h = _factor(d, 2, dtype, layout), _factor(d, 3, dtype, layout)
    poison = torch.full((4 * groups * length * d,), float("nan"), dtype=dtype)
    del poison  # the outputs and temporaries most likely reuse the NaN block
    want = reference.lowrank_ortho_mux(embeddings.double(), u.double(), h.double())
    assert_close(cpu_op("lowrank_ortho_mux_fwd")(embeddings, u, h), want, KERNEL)

    leaves = [t.detach().double().requires_grad_() for t in (embeddings, u, h)]
    grad = randn(*want.shape, generator=4, dtype=dtype)
    wants = torch.autograd.grad(reference.lowrank_ortho_mux(*leaves), leaves, grad.double())
    got = cpu_op("lowrank_ortho_mux_bwd")(grad, embeddings, u, h, True)
    for name, g, ref in zip(("d_embeddings", "d_u", "d_h"), got, wants, strict=True):
        assert g.is_contiguous(), name
        assert_close(g, ref, KERNEL, magnitude=ref.abs().max().expand_as(ref), what=name)
    width = n * (d // n)
    assert not got[1][:, width:].any() and not got[2][:, width:].any()
    d_e, no_du, no_dh = cpu_op("lowrank_ortho_mux_bwd")(grad, embeddings, u, h, False)
    assert torch.equal(d_e, got[0]) and no_du.shape == no_dh.shape == (0,)


def test_lowrank_ortho_mux_gradcheck_on_the_cpu_backend():
    embeddings = randn(2, 3, 4, 7, generator=1).requires_grad_()
    factors = transforms.lowrank_factors(3, 7, generator=0, dtype=torch.float64)
    u, h = (t.requires_grad_() for t in factors)

    def fn(e, u, h):
        return mk.lowrank_ortho_mux(e, u, h, backend="cpu")

    assert torch.autograd.gradcheck(fn, (embeddings, u, h))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    embeddings = randn(2, 3, 5, 8, generator=1, dtype=dtype)
    u, h = transforms.lowrank_factors(3, 8, generator=0, dtype=dtype)
    torch.library.opcheck(cpu_op("lowrank_ortho_mux_fwd"), (embeddings, u, h))
    grad = randn(2, 5, 8, generator=2, dtype=dtype)
    for factors_grad in (True, False):
        torch.library.opcheck(
            cpu_op("lowrank_ortho_mux_bwd"), (grad, embeddings, u, h, factors_grad)
        )


def test_the_gemms_call_the_blas_of_torch():
    # x86-64 and aarch64 PyTorch wheels link a BLAS that exports sgemm_ and dgemm_
    assert _compiled.blas_linked()


@pytest.mark.parametrize(
    ("embeddings", "u", "message"),
    [
        (torch.ones(2, 3, 5, 8), torch.ones(8, 8).double(), "u must have the data's dtype"),
        (torch.ones(2, 3, 5, 8).half(), torch.ones(8, 8).half(), "must be float32 or float64"),
        (torch.ones(2, 3, 5, 8), torch.ones(8, 7), r"u must have shape \(d, d\) = \(8, 8\)"),
        (torch.ones(2, 3, 8), torch.ones(8, 8), "embeddings must have rank 4"),
        (torch.ones(2, 9, 5, 8), torch.ones(8, 8), "need 1 <= N <= d, got N=9 and d=8"),
    ],
)
def test_lowrank_ortho_mux_checks_its_arguments(embeddings, u, message):
    with pytest.raises(RuntimeError, match=message):
        cpu_op("lowrank_ortho_mux_fwd")(embeddings, u, torch.ones(8, 8))


def test_lowrank_ortho_mux_bwd_checks_grad_out():
    with pytest.raises(RuntimeError, match=r"grad_out must have shape \(B', L, d\)"):
        cpu_op("lowrank_ortho_mux_bwd")(
            torch.ones(2, 4, 8), torch.ones(2, 3, 5, 8), torch.ones(8, 8), torch.ones(8, 8), True
        )


def test_lowrank_ortho_mux_splits_its_blocks_over_threads():
    embeddings = randn(16, 4, 64, 96, generator=1, dtype=torch.float32)
    u, h = transforms.lowrank_factors(4, 96, generator=0, dtype=torch.float32)
    grad = randn(16, 64, 96, generator=2, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        x = cpu_op("lowrank_ortho_mux_fwd")(embeddings, u, h)
        got = cpu_op("lowrank_ortho_mux_bwd")(grad, embeddings, u, h, True)
    finally:
        torch.set_num_threads(threads)
    leaves = [t.detach().double().requires_grad_() for t in (embeddings, u, h)]
    want = reference.lowrank_ortho_mux(*leaves)
    assert_close(x, want, KERNEL)
    wants = torch.autograd.grad(want, leaves, grad.double())
    for name, g, ref in zip(("d_embeddings", "d_u", "d_h"), got, wants, strict=True):
        assert_close(g, ref, KERNEL, magnitude=ref.abs().max().expand_as(ref), what=name)
