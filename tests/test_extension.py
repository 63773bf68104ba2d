"""The compiled extension ``muxkernels._C`` on CPU: schemas, CPU implementations, argument
checks, fake implementations, and ``muxkernels._extension``'s loading logic.

Tests that need ``_C`` are skipped when it is not built, unless
``MUXKERNELS_REQUIRE_EXTENSION=1``: then importing this file fails.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from muxkernels import _extension

pytestmark = pytest.mark.extension

# Raises ImportError here (a collection error) when MUXKERNELS_REQUIRE_EXTENSION=1.
HAVE_EXTENSION = _extension.load()
needs_extension = pytest.mark.skipif(
    not HAVE_EXTENSION, reason=f"muxkernels._C is not built ({_extension.load_error()!r})"
)

SCHEMA = "muxkernels::hadamard_mux_fwd_cuda(Tensor embeddings, Tensor vectors) -> Tensor"

# Error bound: RTOL[dtype] * (1/N) Σ_i |v_i E_i| (relative to the magnitudes summed, so
# cancellation is covered) + ATOL[dtype] (the rounding of subnormal float16 outputs).
RTOL = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1e-2,
}
ATOL = {
    torch.float64: 1e-300,
    torch.float32: 1e-38,
    torch.float16: 2.0**-24,
    torch.bfloat16: 1e-38,
}

# (B', N, L, d): odd sizes, N = 1, L = 1, d not a multiple of any vector width.
SHAPES = [(2, 1, 1, 5), (2, 3, 1, 97), (2, 3, 4, 5), (1, 1, 3, 97), (2, 3, 2, 16)]


def hadamard_mux_fwd():
    return torch.ops.muxkernels.hadamard_mux_fwd_cuda


def expected_and_bound(e: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x[g,t,k] = (1/N) Σ_i v[i,k] E[g,i,t,k] in float64, and (1/N) Σ_i |v[i,k] E[g,i,t,k]|."""
    n = e.shape[1]
    products = e.double() * v.double()[None, :, None, :]
    return products.sum(1) / n, products.abs().sum(1) / n


def assert_matches(out: torch.Tensor, e: torch.Tensor, v: torch.Tensor) -> None:
    want, bound = expected_and_bound(e.cpu(), v.cpu())
    assert out.shape == (e.shape[0], e.shape[2], e.shape[3])
    assert out.dtype == e.dtype
    got = out.double().cpu()
    assert not got.isnan().any(), "NaN in the output"
    err = (got - want).abs()
    limit = RTOL[e.dtype] * bound + ATOL[e.dtype]
    worst = (err / limit).max().item()
    assert worst <= 1.0, f"error {err.max().item():.3g} exceeds the bound by {worst:.3g}x"


def random_inputs(shape, dtype, v_dtype, generator, device="cpu"):
    e = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    v = torch.randn(shape[1], shape[3], generator=generator, dtype=torch.float64).to(v_dtype)
    return e.to(device), v.to(device)


# ---------------------------------------------------------------------------
# Loading logic (no extension needed)
# ---------------------------------------------------------------------------


def test_load_is_cached_and_boolean():
    assert _extension.load() is HAVE_EXTENSION
    assert _extension.load() is HAVE_EXTENSION
    assert isinstance(_extension.cuda_kernels_available(), bool)
    if not torch.cuda.is_available():
        assert _extension.cuda_kernels_available() is False


def test_missing_extension_returns_false_or_raises_when_required(monkeypatch):
    def fail(name: str):
        raise ImportError(f"No module named {name!r} (simulated)")

    monkeypatch.setattr(_extension, "_loaded", None)
    monkeypatch.setattr(_extension, "_error", None)
    monkeypatch.setattr(importlib, "import_module", fail)
    monkeypatch.delenv(_extension.REQUIRE_ENV_VAR, raising=False)
    assert _extension.load() is False
    assert _extension.cuda_kernels_available() is False
    assert isinstance(_extension.load_error(), ImportError)

    monkeypatch.setenv(_extension.REQUIRE_ENV_VAR, "1")
    with pytest.raises(ImportError, match="simulated") as info:
        _extension.load()
    assert isinstance(info.value.__cause__, ImportError)


# ---------------------------------------------------------------------------
# hadamard_mux_fwd_cuda: schema and CPU implementation
# ---------------------------------------------------------------------------


@needs_extension
def test_schema():
    assert str(hadamard_mux_fwd().default._schema) == SCHEMA


@needs_extension
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("vectors_fp32", [False, True], ids=["v_same", "v_fp32"])
def test_cpu_matches_formula(shape, dtype, vectors_fp32, generator):
    v_dtype = torch.float32 if vectors_fp32 else dtype
    e, v = random_inputs(shape, dtype, v_dtype, generator)
    assert_matches(hadamard_mux_fwd()(e, v), e, v)


@needs_extension
def test_cpu_output_is_fresh(generator):
    e, v = random_inputs((1, 1, 2, 3), torch.float32, torch.float32, generator)
    out = hadamard_mux_fwd()(e, v)
    assert out.untyped_storage().data_ptr() != e.untyped_storage().data_ptr()
    assert out.is_contiguous()


# ---------------------------------------------------------------------------
# Argument checks: a RuntimeError naming the argument
# ---------------------------------------------------------------------------


def _bad_arguments():
    f32, f16 = torch.float32, torch.float16
    e = torch.randn(2, 3, 4, 5)
    v = torch.randn(3, 5)
    e_strided = e.transpose(2, 3).contiguous().transpose(2, 3)  # same shape, not contiguous
    return [
        ("rank_e", torch.randn(6, 4, 5), v, r"embeddings must have rank 4"),
        ("rank_v", e, torch.randn(15), r"vectors must have rank 2"),
        ("n", e, torch.randn(2, 5), r"vectors\.size\(0\) must equal embeddings\.size\(1\)"),
        ("d", e, torch.randn(3, 6), r"vectors\.size\(1\) must equal embeddings\.size\(3\)"),
        ("dtype_e", e.to(torch.int32), v, r"embeddings must be float16, bfloat16"),
        ("dtype_v", e, v.to(f16), r"vectors must have the dtype of embeddings"),
        ("dtype_v_f64", e.to(f16), v.double(), r"vectors must have the dtype of embeddings"),
        ("contig_e", e_strided, v, r"embeddings must be contiguous"),
        ("contig_v", e, torch.randn(5, 3).t(), r"vectors must be contiguous"),
        ("empty", torch.randn(0, 3, 4, 5, dtype=f32), v, r"embeddings must be non-empty"),
    ]


@needs_extension
@pytest.mark.parametrize(
    ("embeddings", "vectors", "pattern"),
    [case[1:] for case in _bad_arguments()],
    ids=[case[0] for case in _bad_arguments()],
)
def test_argument_checks(embeddings, vectors, pattern):
    with pytest.raises(RuntimeError, match=pattern) as info:
        hadamard_mux_fwd()(embeddings, vectors)
    # The message names the operator and shows what it got.
    assert "muxkernels::hadamard_mux_fwd_cuda" in str(info.value)


@needs_extension
def test_argument_check_shows_shapes():
    with pytest.raises(RuntimeError, match=r"\[2, 5\].*\[2, 3, 4, 5\]"):
        hadamard_mux_fwd()(torch.randn(2, 3, 4, 5), torch.randn(2, 5))


# ---------------------------------------------------------------------------
# Registration: opcheck, fake tensors, torch.compile
# ---------------------------------------------------------------------------


@needs_extension
@pytest.mark.parametrize(
    ("dtype", "v_dtype"),
    [
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
        (torch.float64, torch.float32),
    ],
)
def test_opcheck_cpu(dtype, v_dtype, generator):
    e, v = random_inputs((2, 3, 4, 5), dtype, v_dtype, generator)
    torch.library.opcheck(hadamard_mux_fwd(), (e, v))


@needs_extension
def test_fake_tensor_mode():
    with FakeTensorMode():
        e = torch.empty(2, 3, 7, 97, dtype=torch.bfloat16)
        v = torch.empty(3, 97, dtype=torch.float32)
        out = hadamard_mux_fwd()(e, v)
        assert out.shape == (2, 7, 97)
        assert out.dtype == torch.bfloat16
        with pytest.raises(RuntimeError, match=r"vectors\.size\(0\)"):
            hadamard_mux_fwd()(e, torch.empty(4, 97))


@needs_extension
def test_compiles_fullgraph(generator):
    op = hadamard_mux_fwd()

    def f(e: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return op(e, v) * 2.0

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager", dynamic=True)
    for shape in [(2, 3, 4, 5), (3, 2, 5, 8)]:
        e, v = random_inputs(shape, torch.float32, torch.float32, generator)
        torch.testing.assert_close(compiled(e, v), f(e, v))
