"""The Triton demux kernels against the reference: demux_gather_{fwd,bwd}, demux_project_fwd,
mlp_demux_{fwd,bwd}.

Run on CPU under the Triton interpreter (TRITON_INTERPRET=1), or on CUDA without it. Shapes are
small and odd (N=1, d=5 and 97, L'=1, B'=1, a shared by all groups); the reference runs in
float64 on the same (rounded) inputs; outputs the launchers are given are NaN-poisoned first so
that every element must be written. bfloat16 is left to the GPU tests (the interpreter's bf16
arithmetic is unreliable).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

import triton
import triton.language as tl
from helpers import REFERENCE, assert_close, float64, float64_grads, mlp_reference, nan_like

import muxkernels._triton
from muxkernels import _opdefs
from muxkernels import reference as ref

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not (INTERPRET or torch.cuda.is_available()):
    pytest.skip("needs TRITON_INTERPRET=1 or a CUDA device", allow_module_level=True)
if not muxkernels._triton.load():
    pytest.skip(
        f"triton ops unavailable: {muxkernels._triton.load_error()}", allow_module_level=True
    )

from muxkernels._triton import _math  # noqa: E402
from muxkernels._triton import demux_gather as dg  # noqa: E402
from muxkernels._triton import mlp_demux as md  # noqa: E402

DEVICE = "cpu" if INTERPRET else "cuda"
EPS = 1e-5
GATHERS = ref.GATHERS
# (B', N, L', d, Ga): a general case, a shared a with tiny d, all ones, B'=1, N=1, L'=1.
CASES = [
    pytest.param((2, 3, 6, 97, 2), id="B2-N3-L6-d97"),
    pytest.param((2, 3, 6, 5, 1), id="B2-N3-L6-d5-Ga1"),
    pytest.param((1, 1, 1, 5, 1), id="B1-N1-L1-d5"),
    pytest.param((1, 3, 6, 97, 1), id="B1-N3-L6-d97-Ga1"),
    pytest.param((2, 1, 6, 5, 2), id="B2-N1-L6-d5"),
    pytest.param((2, 3, 1, 97, 1), id="B2-N3-L1-d97-Ga1"),
]


def demux_inputs(randn, generator, case, dtype, param_dtype=None, gather="token"):
    """(a, c, ln_weight, ln_bias, index) on DEVICE; index only for the selected gather."""
    groups, n, length, d, a_groups = case
    param_dtype = dtype if param_dtype is None else param_dtype

    def draw(*shape, dt):
        return randn(*shape, dtype=dt).to(DEVICE)

    a, c = draw(a_groups, n, d, dt=dtype), draw(groups, length, d, dt=dtype)
    w, b = draw(d, dt=param_dtype), draw(d, dt=param_dtype)
    index = None
    if gather == "selected":
        index = torch.randint(0, n, (groups, length), generator=generator).to(DEVICE)
    return a, c, w, b, index


def positions(case, gather: str) -> list[int]:
    """sequence_position values to try: for the sequence gather 0 (index_pos's CLS) and N
    (the index prefix's CLS) when L' > N; the other gathers ignore it."""
    _, n, length, _, _ = case
    return [0, n] if gather == "sequence" and length > n else [0]


# --- demux_gather_fwd -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("case", CASES)
def test_gather_forward(randn, generator, case, gather, dtype):
    param_dtype = torch.float32 if dtype == torch.float16 else dtype
    a, c, w, b, index = demux_inputs(randn, generator, case, dtype, param_dtype, gather)
    for position in positions(case, gather):
        expected = ref.demux_gather(*float64(a, c, w, b), EPS, gather, index, position)
        out = dg.demux_gather_fwd(
            a, c, w, b, EPS, gather, index, position, c.dtype, out=nan_like(c, expected.shape)
        )
        assert out.dtype == dtype
        assert_close(out, expected)


def test_gather_forward_shares_a_between_groups(randn, generator):
    """Ga = 1 gives the same u as a repeated for every group."""
    a, c, w, b, _ = demux_inputs(randn, generator, (3, 2, 5, 97, 1), torch.float64)
    shared = dg.demux_gather_fwd(a, c, w, b, EPS, "token", None, 0, c.dtype)
    repeated = dg.demux_gather_fwd(
        a.expand(3, -1, -1).contiguous(), c, w, b, EPS, "token", None, 0, c.dtype
    )
    torch.testing.assert_close(shared, repeated, rtol=0, atol=0)


def test_gather_forward_wide_rows(randn, generator):
    """d = 1000: the row split 512 + 488 (masked to 512) and a single-row tile."""
    case = (1, 2, 3, 1000, 1)
    a, c, w, b, _ = demux_inputs(randn, generator, case, torch.float32)
    expected = ref.demux_gather(*float64(a, c, w, b), EPS, "token", None, 0)
    out = dg.demux_gather_fwd(
        a, c, w, b, EPS, "token", None, 0, c.dtype, out=nan_like(c, expected.shape)
    )
    assert_close(out, expected)


# --- demux_gather_bwd -----------------------------------------------------------------------


def reference_grads(grad_u, a, c, w, b, gather, index, position):
    """The float64 reference's gradients with respect to (a, c, ln_weight, ln_bias)."""

    def u(*inputs):
        return ref.demux_gather(*inputs, EPS, gather, index, position)

    return float64_grads(u, (a, c, w, b), grad_u)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("case", CASES)
def test_gather_backward(randn, generator, case, gather, dtype):
    a, c, w, b, index = demux_inputs(randn, generator, case, dtype, gather=gather)
    for position in positions(case, gather):
        shape = _opdefs.gather_shape(a, c, gather, c.shape[2])
        grad_u = randn(*shape, dtype=dtype).to(DEVICE)
        outs = [nan_like(t) for t in (a, c, w, b)]
        grads = dg.demux_gather_bwd(grad_u, a, c, w, b, EPS, gather, index, position, *outs)
        expected = reference_grads(grad_u, a, c, w, b, gather, index, position)
        for name, got, want, like in zip(
            ["a", "c", "w", "b"], grads, expected, (a, c, w, b), strict=True
        ):
            assert got.dtype == like.dtype, name
            assert_close(got, want, what=name)


def test_gather_backward_is_deterministic(randn, generator):
    a, c, w, b, _ = demux_inputs(randn, generator, (2, 3, 6, 97, 1), torch.float32)
    grad_u = randn(2, 3, 6, 97, dtype=torch.float32).to(DEVICE)
    first = dg.demux_gather_bwd(grad_u, a, c, w, b, EPS, "token", None, 0)
    second = dg.demux_gather_bwd(grad_u, a, c, w, b, EPS, "token", None, 0)
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x, y)


# --- demux_project_fwd ----------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("k", [1, 3, 17])
@pytest.mark.parametrize("gather", GATHERS)
def test_project_forward(randn, generator, gather, k, bias):
    case = (2, 3, 6, 97, 1)
    a, c, w, b, index = demux_inputs(randn, generator, case, torch.float32, gather=gather)
    pw = randn(k, 97, scale=97**-0.5, dtype=torch.float32).to(DEVICE)
    pb = randn(k, dtype=torch.float32).to(DEVICE) if bias else None
    u = ref.demux_gather(*float64(a, c, w, b), EPS, gather, index, 3)
    expected = u @ pw.double().T + (pb.double() if bias else 0)
    out = dg.demux_project_fwd(
        a, c, w, b, EPS, gather, index, 3, pw, pb, c.dtype, out=nan_like(c, expected.shape)
    )
    assert_close(out, expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("case", CASES[:3])
def test_project_forward_dtypes(randn, generator, case, dtype):
    param_dtype = torch.float32 if dtype == torch.float16 else dtype
    a, c, w, b, _ = demux_inputs(randn, generator, case, dtype, param_dtype)
    d = case[3]
    pw = randn(17, d, scale=d**-0.5, dtype=param_dtype).to(DEVICE)
    pb = randn(17, dtype=param_dtype).to(DEVICE)
    expected = ref.demux_gather(*float64(a, c, w, b), EPS, "token", None, 0) @ pw.double().T
    expected = expected + pb.double()
    out = dg.demux_project_fwd(a, c, w, b, EPS, "token", None, 0, pw, pb, c.dtype)
    assert out.dtype == dtype
    assert_close(out, expected, REFERENCE)


# --- mlp_demux ------------------------------------------------------------------------------

MLP_CASES = [
    pytest.param((2, 3, 6, 97), id="B2-N3-L6-d97"),
    pytest.param((1, 1, 1, 5), id="B1-N1-L1-d5"),
    pytest.param((2, 3, 5, 5), id="B2-N3-L5-d5"),
]


def mlp_inputs(randn, case, dtype):
    groups, n, length, d = case
    return [
        randn(*s, dtype=dtype).to(DEVICE) for s in ((groups, length, n * d), (n, d), (n, d), (n, d))
    ]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", MLP_CASES)
def test_mlp_forward(randn, case, dtype):
    pre, bias, w, b = mlp_inputs(randn, case, dtype)
    expected = mlp_reference(*float64(pre, bias, w, b), EPS)
    out = md.mlp_demux_fwd(pre, bias, w, b, EPS, pre.dtype, out=nan_like(pre, expected.shape))
    assert out.dtype == dtype
    assert_close(out, expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", MLP_CASES)
def test_mlp_backward(randn, case, dtype):
    pre, bias, w, b = mlp_inputs(randn, case, dtype)
    groups, n, length, d = case
    grad_u = randn(groups, n, length, d, dtype=dtype).to(DEVICE)
    outs = [nan_like(t) for t in (pre, bias, w, b)]
    grads = md.mlp_demux_bwd(grad_u, pre, bias, w, b, EPS, *outs)
    expected = float64_grads(lambda *x: mlp_reference(*x, EPS), (pre, bias, w, b), grad_u)
    for name, got, want, like in zip(
        ("pre", "bias", "w", "b"), grads, expected, (pre, bias, w, b), strict=True
    ):
        assert got.dtype == like.dtype, name
        assert_close(got, want, what=name)


# --- the registered operators ---------------------------------------------------------------


def op(name: str):
    return getattr(torch.ops.muxkernels, f"{name}_triton").default


@pytest.mark.parametrize("gather", GATHERS)
def test_opcheck_gather(randn, generator, gather):
    case = (2, 3, 4, 5, 2)
    a, c, w, b, index = demux_inputs(randn, generator, case, torch.float32, gather=gather)
    args = (a, c, w, b, EPS, gather, index, 3)
    torch.library.opcheck(op("demux_gather_fwd"), (*args, torch.float32))
    grad_u = randn(*_opdefs.gather_shape(a, c, gather, 5), dtype=torch.float32).to(DEVICE)
    torch.library.opcheck(op("demux_gather_bwd"), (grad_u, *args))
    pw, pb = randn(3, 5, dtype=torch.float32).to(DEVICE), randn(3, dtype=torch.float32).to(DEVICE)
    torch.library.opcheck(op("demux_project_fwd"), (*args, pw, pb, torch.float32))
    torch.library.opcheck(op("demux_project_fwd"), (*args, pw, None, torch.float32))


def test_opcheck_mlp(randn):
    pre, bias, w, b = mlp_inputs(randn, (2, 3, 4, 5), torch.float32)
    torch.library.opcheck(op("mlp_demux_fwd"), (pre, bias, w, b, EPS, torch.float32))
    grad_u = randn(2, 3, 4, 5, dtype=torch.float32).to(DEVICE)
    torch.library.opcheck(op("mlp_demux_bwd"), (grad_u, pre, bias, w, b, EPS))


def test_operators_call_the_launchers(randn, generator):
    a, c, w, b, _ = demux_inputs(randn, generator, (2, 3, 4, 5, 2), torch.float32)
    u = op("demux_gather_fwd")(a, c, w, b, EPS, "token", None, 0, c.dtype)
    torch.testing.assert_close(u, dg.demux_gather_fwd(a, c, w, b, EPS, "token", None, 0, c.dtype))


# --- argument checks ------------------------------------------------------------------------


def test_launchers_reject_what_the_kernels_cannot_take(randn, generator):
    a, c, w, b, _ = demux_inputs(randn, generator, (2, 3, 4, 5, 2), torch.float32)
    index = torch.zeros(2, 4, dtype=torch.int64, device=DEVICE)
    pw = randn(65, 5, dtype=torch.float32).to(DEVICE)
    cases = [
        (lambda: dg.demux_gather_fwd(a, c, w, b, EPS, "tokens", None, 0, c.dtype), "gather"),
        (lambda: dg.demux_gather_fwd(a, c, w, b, EPS, "selected", None, 0, c.dtype), "index"),
        (
            lambda: dg.demux_gather_fwd(a, c, w, b, EPS, "selected", index[:, :3], 0, c.dtype),
            "index",
        ),
        (
            lambda: dg.demux_gather_fwd(a, c, w, b, EPS, "selected", index.float(), 0, c.dtype),
            "index",
        ),
        (
            lambda: dg.demux_gather_fwd(a, c, w, b, EPS, "sequence", None, 4, c.dtype),
            "sequence_position",
        ),
        (
            lambda: dg.demux_gather_fwd(a[:, :, :4], c, w, b, EPS, "token", None, 0, c.dtype),
            "a must",
        ),
        (
            lambda: dg.demux_gather_fwd(
                a, c.transpose(0, 1), w, b, EPS, "token", None, 0, c.transpose(0, 1).dtype
            ),
            "a must",
        ),
        (
            lambda: dg.demux_gather_fwd(a, c[:, ::2], w, b, EPS, "token", None, 0, c[:, ::2].dtype),
            "c must be contig",
        ),
        (lambda: dg.demux_gather_fwd(a, c, w[:4], b, EPS, "token", None, 0, c.dtype), "ln_weight"),
        (
            lambda: dg.demux_gather_fwd(a, c.int(), w, b, EPS, "token", None, 0, c.int().dtype),
            "c must be float",
        ),
        (lambda: dg.demux_gather_bwd(c, a, c, w, b, EPS, "token", None, 0), "grad_u"),
        (
            lambda: dg.demux_project_fwd(a, c, w, b, EPS, "token", None, 0, pw, None, c.dtype),
            "K=65",
        ),
        (
            lambda: dg.demux_project_fwd(
                a, c, w, b, EPS, "token", None, 0, pw[:3, :4], None, c.dtype
            ),
            "proj_weight",
        ),
        (
            lambda: dg.demux_project_fwd(a, c, w, b, EPS, "token", None, 0, pw[:3], w, c.dtype),
            "proj_bias",
        ),
        (lambda: md.mlp_demux_fwd(c, a[0], a[0], a[0], EPS, c.dtype), "pre must"),
        (
            lambda: md.mlp_demux_fwd(
                a.reshape(2, 1, 15), a[0], a[0], a[0, :2], EPS, a.reshape(2, 1, 15).dtype
            ),
            "ln_bias",
        ),
        (lambda: md.mlp_demux_bwd(a, a.reshape(2, 1, 15), a[0], a[0], a[0], EPS), "grad_u"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


# --- the shared math ------------------------------------------------------------------------


@triton.jit
def _gelu_probe(z_ptr, y_ptr, y2_ptr, dy_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    z = tl.load(z_ptr + offs, mask=mask, other=0.0)
    y, dy = _math.gelu_with_grad(z)
    tl.store(y_ptr + offs, y, mask=mask)
    tl.store(y2_ptr + offs, _math.gelu(z), mask=mask)
    tl.store(dy_ptr + offs, dy, mask=mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_gelu_and_its_derivative(dtype):
    """Within 2x of torch's float32 gelu error (3e-7·(1+|z|)) over [-12, 12], tails included."""
    z = torch.cat([torch.linspace(-12, 12, 6001, dtype=torch.float64), torch.tensor([0.0, 6.0])])
    z_in = z.to(dtype).to(DEVICE)
    y, y2, dy = (torch.empty_like(z_in) for _ in range(3))
    _gelu_probe[(triton.cdiv(z.numel(), 1024),)](z_in, y, y2, dy, z.numel(), BLOCK=1024)
    exact = z_in.double().cpu()
    exact_y = F.gelu(exact)
    exact_dy = (
        0.5 * (1 + torch.erf(exact / 2**0.5))
        + exact * torch.exp(-(exact**2) / 2) / (2 * torch.pi) ** 0.5
    )
    scale = 1 + exact.abs()
    tol = 6e-7 if dtype == torch.float32 else 1e-14
    for got, want in ((y, exact_y), (y2, exact_y), (dy, exact_dy)):
        assert ((got.double().cpu() - want).abs() / scale).max().item() <= tol


def test_split_width_covers_every_width():
    for d in [*range(1, 70), 97, 768, 1000, 1024, 3072, 4097, 8192]:
        lo, hi = _math.split_width(d)
        assert lo & (lo - 1) == 0 and hi & (hi - 1) == 0
        assert lo <= d <= lo + hi
        assert lo + hi <= triton.next_power_of_2(d) or d == 1
