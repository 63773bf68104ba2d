"""On a CUDA device: the Triton demux kernels at the benchmark shapes against the reference.

demux_gather (all gathers, a per group and shared), its backward, the fused projection and
the MLP demux, in bfloat16, float16 and float32, at the paper's shape (N=40, B'=16,
L'=169, d=768) and at d=97 and d=4097 (rows that are not a power of two, one of them
wider than any tile). The reference runs in float64 on the same (rounded) inputs; errors
are bounded by muxkernels._tolerances (KERNEL; REFERENCE for the fused projection).
Also: determinism of the backward and 64-bit offsets (an output of more than 2^31
elements). Speed is measured by benchmarks/bench_ops.py, never asserted here.
"""

from __future__ import annotations

import pytest
import torch
from helpers import REFERENCE, assert_close, float64, float64_grads, mlp_reference, seeded
from helpers import randn as draw

from muxkernels import _opdefs
from muxkernels import reference as ref

pytestmark = pytest.mark.gpu

EPS = 1e-5
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
GATHERS = ref.GATHERS
# (B', N, L', d)
SHAPES = [
    pytest.param((16, 40, 169, 768), id="bench-N40"),
    pytest.param((4, 10, 37, 97), id="d97"),
    pytest.param((2, 3, 9, 4097), id="d4097"),
]


@pytest.fixture(scope="module")
def kernels():
    import muxkernels._triton

    if not muxkernels._triton.load():
        pytest.skip(f"triton ops unavailable: {muxkernels._triton.load_error()}")
    from muxkernels._triton import demux_gather, mlp_demux

    return demux_gather, mlp_demux


def randn(*shape: int, dtype: torch.dtype, seed: int, scale: float = 1.0) -> torch.Tensor:
    return draw(*shape, generator=seeded(seed, "cuda"), dtype=dtype, scale=scale)


def gather_inputs(shape, dtype, gather, shared_a=False):
    groups, n, length, d = shape
    a = randn(1 if shared_a else groups, n, d, dtype=dtype, seed=1)
    c = randn(groups, length, d, dtype=dtype, seed=2)
    w, b = randn(d, dtype=torch.float32, seed=3), randn(d, dtype=torch.float32, seed=4)
    index = None
    if gather == "selected":
        g = torch.Generator(device="cuda").manual_seed(5)
        index = torch.randint(0, n, (groups, length), generator=g, device="cuda")
    return a, c, w, b, index


@pytest.mark.parametrize("shared_a", [False, True], ids=["a-per-group", "a-shared"])
@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
def test_gather_forward_backward(kernels, shape, dtype, gather, shared_a):
    dg, _ = kernels
    a, c, w, b, index = gather_inputs(shape, dtype, gather, shared_a)
    position = shape[1]
    u = dg.demux_gather_fwd(a, c, w, b, EPS, gather, index, position, c.dtype)

    def reference(*inputs):
        return ref.demux_gather(*inputs, EPS, gather, index, position)

    assert u.dtype == dtype
    assert_close(u, reference(*float64(a, c, w, b)), what="u")
    grad_u = randn(*u.shape, dtype=dtype, seed=6)
    grads = dg.demux_gather_bwd(grad_u, a, c, w, b, EPS, gather, index, position)
    expected_grads = float64_grads(reference, (a, c, w, b), grad_u)
    for name, got, want, like in zip("acwb", grads, expected_grads, (a, c, w, b), strict=True):
        assert got.dtype == like.dtype, name
        assert_close(got, want, what=f"d{name}")


@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
def test_project_forward(kernels, shape, dtype, gather):
    dg, _ = kernels
    a, c, w, b, index = gather_inputs(shape, dtype, gather)
    d = shape[3]
    pw = randn(17, d, dtype=dtype, seed=7, scale=d**-0.5)
    pb = randn(17, dtype=dtype, seed=8)
    logits = dg.demux_project_fwd(a, c, w, b, EPS, gather, index, shape[1], pw, pb, c.dtype)
    u = ref.demux_gather(*float64(a, c, w, b), EPS, gather, index, shape[1])
    assert logits.dtype == dtype
    # The kernel feeds tl.dot with u rounded to the data's dtype, as the reference rounds u.
    assert_close(logits, u @ pw.double().T + pb.double(), REFERENCE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape", [(16, 10, 128, 768), (4, 3, 37, 97), (2, 2, 5, 4097)], ids=["bench", "d97", "d4097"]
)
def test_mlp_forward_backward(kernels, shape, dtype):
    _, md = kernels
    groups, n, length, d = shape
    pre = randn(groups, length, n * d, dtype=dtype, seed=1)
    params = [randn(n, d, dtype=dtype, seed=s) for s in (2, 3, 4)]
    u = md.mlp_demux_fwd(pre, *params, EPS)

    def reference(*inputs):
        return mlp_reference(*inputs, EPS)

    assert_close(u, reference(*float64(pre, *params)), what="u")
    grad_u = randn(*u.shape, dtype=dtype, seed=5)
    grads = md.mlp_demux_bwd(grad_u, pre, *params, EPS)
    expected = float64_grads(reference, (pre, *params), grad_u)
    for name, got, want in zip(("pre", "bias", "w", "b"), grads, expected, strict=True):
        assert_close(got, want, what=f"d{name}")


@pytest.mark.parametrize("gather", GATHERS)
def test_backward_is_deterministic(kernels, gather):
    dg, _ = kernels
    shape = (16, 40, 169, 768)
    a, c, w, b, index = gather_inputs(shape, torch.bfloat16, gather, shared_a=True)
    out_shape = _opdefs.gather_shape(a, c, gather, 768)
    grad_u = randn(*out_shape, dtype=torch.bfloat16, seed=6)
    first = dg.demux_gather_bwd(grad_u, a, c, w, b, EPS, gather, index, 40)
    second = dg.demux_gather_bwd(grad_u, a, c, w, b, EPS, gather, index, 40)
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


def test_token_forward_with_more_than_2_31_elements(kernels):
    """u of 420·40·169·768 > 2^31 elements: the last group is right (64-bit offsets)."""
    dg, _ = kernels
    shape = (420, 40, 169, 768)
    a, c, w, b, _ = gather_inputs(shape, torch.bfloat16, "token")
    u = dg.demux_gather_fwd(a, c, w, b, EPS, "token", None, 0, c.dtype)
    assert u.numel() > 2**31
    expected = ref.demux_gather(*float64(a[-1:], c[-1:], w, b), EPS, "token", None, 0)
    assert_close(u[-1:], expected)
    del u
