"""The cpu backend's compiled hadamard multiplexer (csrc/cpu/hadamard_mux.cpp).

The operators ``hadamard_mux_fwd_cpu`` and ``hadamard_mux_bwd_cpu`` against the formula in
float64 on NaN-poisoned memory at odd sizes; gradcheck through ``muxkernels.hadamard_mux``
on the cpu backend; opcheck; argument checks; a dv that does not depend on the thread count.
"""

from __future__ import annotations

import pytest
import torch
from helpers import (
    KERNEL,
    assert_close,
    assert_thread_count_independent,
    cpu_op,
    randn,
    require_cpu_kernels,
)

import muxkernels as mk

require_cpu_kernels()


def _formula(embeddings: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """(1/N) Σ_i v_i ⊙ E_i in float64."""
    embeddings, vectors = embeddings.double(), vectors.double()
    return (embeddings * vectors[None, :, None, :]).sum(1) / vectors.shape[0]


SIZES = [(2, 3, 5, 97), (1, 1, 1, 8), (3, 40, 4, 64), (70, 4, 30, 33)]  # the last: 2 chunks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", SIZES)
def test_hadamard_mux_matches_the_formula(size, dtype):
    groups, n, length, d = size
    embeddings = randn(groups, n, length, d, generator=1, dtype=dtype)
    vectors = randn(n, d, generator=2, dtype=dtype)
    poison = torch.full((groups * length * d,), float("nan"), dtype=dtype)
    del poison  # the output most likely reuses the NaN block
    want = _formula(embeddings, vectors)
    assert_close(cpu_op("hadamard_mux_fwd")(embeddings, vectors), want, KERNEL)

    leaves = [t.detach().double().requires_grad_() for t in (embeddings, vectors)]
    grad = randn(*want.shape, generator=3, dtype=dtype)
    wants = torch.autograd.grad(_formula(*leaves), leaves, grad.double())
    got = cpu_op("hadamard_mux_bwd")(grad, embeddings, vectors, True)
    for name, g, ref in zip(("d_embeddings", "d_vectors"), got, wants, strict=True):
        assert_close(g, ref, KERNEL, magnitude=ref.abs().max().expand_as(ref), what=name)
    _, no_dv = cpu_op("hadamard_mux_bwd")(grad, embeddings, vectors, False)
    assert no_dv.shape == (0,)


def test_hadamard_mux_gradcheck_on_the_cpu_backend():
    embeddings = randn(2, 3, 4, 5, generator=1).requires_grad_()
    vectors = randn(3, 5, generator=2).requires_grad_()

    def fn(e, v):
        return mk.hadamard_mux(e, v, backend="cpu")

    assert torch.autograd.gradcheck(fn, (embeddings, vectors))


def test_hadamard_mux_dv_does_not_depend_on_the_thread_count():
    embeddings = randn(70, 4, 30, 33, generator=1, dtype=torch.float32)
    vectors = randn(4, 33, generator=2, dtype=torch.float32)
    grad = randn(70, 30, 33, generator=3, dtype=torch.float32)
    assert_thread_count_independent(
        lambda: cpu_op("hadamard_mux_bwd")(grad, embeddings, vectors, True)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    embeddings = randn(2, 3, 5, 8, generator=1, dtype=dtype)
    vectors = randn(3, 8, generator=2, dtype=dtype)
    torch.library.opcheck(cpu_op("hadamard_mux_fwd"), (embeddings, vectors))
    grad = torch.ones(2, 5, 8, dtype=dtype)
    for vectors_grad in (True, False):
        torch.library.opcheck(cpu_op("hadamard_mux_bwd"), (grad, embeddings, vectors, vectors_grad))


@pytest.mark.parametrize(
    ("embeddings", "vectors", "message"),
    [
        (torch.ones(2, 3, 5, 8), torch.ones(3, 8).double(), "vectors must have the data's dtype"),
        (torch.ones(2, 3, 5, 8).half(), torch.ones(3, 8).half(), "must be float32 or float64"),
        (torch.ones(2, 3, 5, 8), torch.ones(2, 8), r"vectors must have shape \(N, d\) = \(3, 8\)"),
        (torch.ones(2, 3, 8), torch.ones(3, 8), "embeddings must have rank 4"),
    ],
)
def test_hadamard_mux_checks_its_arguments(embeddings, vectors, message):
    with pytest.raises(RuntimeError, match=message):
        cpu_op("hadamard_mux_fwd")(embeddings, vectors)


def test_hadamard_mux_bwd_checks_grad_out():
    with pytest.raises(RuntimeError, match="grad_out must be a contiguous Float CPU tensor"):
        cpu_op("hadamard_mux_bwd")(
            torch.ones(2, 5, 7), torch.ones(2, 3, 5, 8), torch.ones(3, 8), True
        )
