"""Every public op through every kernel backend that can run on this machine's CPU.

"triton" runs under the interpreter (TRITON_INTERPRET=1) and "cuda" through the CPU
implementations of the compiled operators. Each op, gather and backend: the forward
against the reference in float32 and float64, the gradients of every floating input
against autograd through the reference in float64, and a float64 gradcheck of the
autograd Function (fast mode: the interpreter is slow).
"""

from __future__ import annotations

import pytest
import torch
from helpers import BACKEND, assert_close, randn
from op_cases import BACKENDS_OF, CASES, D, inputs, op_of, runnable

PARAMS = [
    pytest.param(case, backend, id=f"{case}-{backend}")
    for case in CASES
    for backend in BACKENDS_OF[op_of(case)]
]


def _skip_unless_runnable(case: str, backend: str) -> None:
    if not runnable(op_of(case), backend):
        pytest.skip(f"{backend} cannot run {case} here (needs TRITON_INTERPRET=1 or _C)")


@pytest.mark.parametrize(("case", "backend"), PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_matches_reference(case, backend, dtype):
    _skip_unless_runnable(case, backend)
    x = inputs(dtype)
    got, want = CASES[case](x, backend), CASES[case](x, "reference")
    assert got.dtype == want.dtype == dtype
    assert_close(got, want, BACKEND)


@pytest.mark.parametrize(("case", "backend"), PARAMS)
def test_gradients_match_reference_autograd(case, backend):
    _skip_unless_runnable(case, backend)
    x = inputs(torch.float64)
    leaves = [v.requires_grad_() for v in x.values() if v.is_floating_point()]
    grad_out = None
    grads = {}
    for be in (backend, "reference"):
        out = CASES[case](x, be)
        if grad_out is None:
            grad_out = torch.randn(
                out.shape, generator=torch.Generator().manual_seed(99), dtype=out.dtype
            )
        grads[be] = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    for got, want in zip(grads[backend], grads["reference"], strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            assert_close(got, want, BACKEND)


@pytest.mark.parametrize(("case", "backend"), PARAMS)
def test_gradcheck(case, backend):
    _skip_unless_runnable(case, backend)
    x = inputs(torch.float64)
    names = [k for k, v in x.items() if v.is_floating_point()]

    def run(*leaves):
        return CASES[case](dict(x, **dict(zip(names, leaves, strict=True))), backend)

    leaves = tuple(x[k].clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(run, leaves, fast_mode=True)


@pytest.mark.gpu
@pytest.mark.parametrize(("case", "backend"), PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_gpu_forward_and_gradients_match_reference(case, backend, dtype):
    """The same cases on CUDA tensors, against the reference on the same (rounded) inputs."""
    cuda = torch.device("cuda")
    if not runnable(op_of(case), backend, cuda):
        pytest.skip(f"{backend} cannot run {case} on CUDA here")
    x = {k: v.to(cuda) for k, v in inputs(dtype).items()}
    leaves = [v.requires_grad_() for v in x.values() if v.is_floating_point()]
    results = {}
    for be in (backend, "reference"):
        out = CASES[case](x, be)
        grad_out = torch.ones_like(out)
        results[be] = (out, torch.autograd.grad(out, leaves, grad_out, allow_unused=True))
    (out, grads), (ref, ref_grads) = results[backend], results["reference"]
    assert_close(out, ref, BACKEND, what="output")
    for got, want in zip(grads, ref_grads, strict=True):
        if want is not None:
            assert_close(got, want, BACKEND, dtype=dtype, what="gradient")


@pytest.mark.parametrize("backend", BACKENDS_OF["index_demux_logits"])
def test_logits_wider_than_the_fused_projection(backend):
    """K = 70 > 64 columns: the demux kernel writes u and a Linear follows."""
    if not runnable("index_demux_logits", backend):
        pytest.skip(f"{backend} cannot run index_demux_logits here")
    x = inputs(torch.float64)
    x["pw"] = randn(70, D, dtype=torch.float64, generator=20, scale=D**-0.5)
    x["pb"] = randn(70, dtype=torch.float64, generator=21)
    leaves = [x[k].requires_grad_() for k in ("hid", "w2", "pw", "pb")]
    case = CASES["index_demux_logits-token"]
    got, want = case(x, backend), case(x, "reference")
    assert_close(got, want, BACKEND)
    grads = [torch.autograd.grad(out.sum(), leaves) for out in (got, want)]
    for g, w in zip(*grads, strict=True):
        assert_close(g, w, BACKEND)


HALF_DATA = {"emb", "hid", "tables"}  # the data tensors; every other float is a parameter


@pytest.mark.parametrize(("case", "backend"), PARAMS)
def test_half_data_with_float32_parameters(case, backend):
    """float16 data with float32 parameters (transforms, weights, LayerNorm): the output is
    float16 and within float16 rounding of the reference on the same inputs, and each
    gradient comes back finite in its tensor's dtype."""
    _skip_unless_runnable(case, backend)
    x = {k: v.to(torch.float16) if k in HALF_DATA else v for k, v in inputs(torch.float32).items()}
    got, want = CASES[case](x, backend), CASES[case](x, "reference")
    assert got.dtype == want.dtype == torch.float16
    assert_close(got, want, BACKEND)


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous tensor (a slice of a row-padded buffer)."""
    if not t.is_floating_point():
        return t
    padded = torch.full((*t.shape[:-1], t.shape[-1] + 3), float("nan"), dtype=t.dtype)
    padded[..., : t.shape[-1]] = t
    return padded[..., : t.shape[-1]]


@pytest.mark.parametrize(("case", "backend"), PARAMS)
def test_non_contiguous_inputs(case, backend):
    """Every floating input a strided view (NaN in the gaps): same result as contiguous."""
    _skip_unless_runnable(case, backend)
    x = inputs(torch.float64)
    strided = {k: _strided(v) for k, v in x.items()}
    assert not strided["hid"].is_contiguous()
    assert_close(CASES[case](strided, backend), CASES[case](x, "reference"), BACKEND)


@pytest.mark.parametrize(("case", "backend"), PARAMS)
@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param({"n": 1, "d": 5, "length": 1, "groups": 1}, id="N1-d5-L1-B1"),
        pytest.param({"n": 4, "d": 33, "length": 3, "groups": 3}, id="N4-d33-L3-B3"),
    ],
)
def test_odd_sizes(case, backend, sizes):
    """N = 1, L = 1 (L' = N + 2), one group; and d = 33, N = 4 (d % N != 0 for low-rank)."""
    _skip_unless_runnable(case, backend)
    x = inputs(torch.float64, **sizes)
    assert_close(CASES[case](x, backend), CASES[case](x, "reference"), BACKEND)
