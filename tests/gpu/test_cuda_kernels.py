"""The CUDA kernels of hadamard_mux_bwd_cuda, embed_mux_fwd_cuda and demux_gather_{fwd,bwd}_cuda
against the reference run in float64 on the same (rounded) inputs.

Covered: every dtype (float64 runs ATen ops for embed and demux), odd sizes (N = 1, d = 5,
97, 4097, L = 1, B' = 1, a shared by all groups), the vector (16-byte) and element-wise
paths (d a multiple of the vector width or not, tensors starting one element past a 16-byte
boundary), the benchmark shapes (bfloat16, d = 768, N = 10 and 40), outputs written into
NaN-poisoned memory, deterministic reductions, the Triton operators where they exist,
opcheck, torch.compile, a side stream and offsets beyond 2^31 elements. Speed is measured
by benchmarks/bench_ops.py, never asserted here.
Skipped without a CUDA device or without the extension (unless
MUXKERNELS_REQUIRE_EXTENSION=1: then failing).
"""

from __future__ import annotations

import pytest
import torch
from helpers import KERNEL, assert_close, on_poisoned_memory, randn, require_cuda_extension

from muxkernels import _opdefs, _triton, reference

pytestmark = [pytest.mark.gpu, pytest.mark.extension]

require_cuda_extension()

DEVICE = torch.device("cuda")
DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64]
EPS = 1e-5
GATHERS = reference.GATHERS


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def shape_id(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def op(name: str):
    return getattr(torch.ops.muxkernels, f"{name}_cuda")


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(20240611)


def poisoned(fn, numel: int, dtype: torch.dtype):
    return on_poisoned_memory(fn, numel, dtype, DEVICE)


def check(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """A contiguous CUDA result within the kernel bound of the float64 ``want``."""
    assert got.device.type == "cuda" and got.is_contiguous(), what
    assert_close(got, want, KERNEL, what=what)


def triton_op(name: str):
    """muxkernels::<name>_triton, or None when the Triton backend lacks it."""
    if not _triton.load() or not _opdefs.has_operator(name, "triton"):
        return None
    return _opdefs.kernel(name, "triton")


# ---------------------------------------------------------------------------
# hadamard_mux_bwd_cuda
# ---------------------------------------------------------------------------


def hadamard_inputs(gen, shape, dtype, v_dtype, misaligned=()):
    groups, n, length, d = shape
    e = randn(*shape, generator=gen, dtype=dtype, misaligned="e" in misaligned)
    v = randn(n, d, generator=gen, dtype=v_dtype, misaligned="v" in misaligned)
    dx = randn(groups, length, d, generator=gen, dtype=dtype, misaligned="dx" in misaligned)
    return dx, e, v


def check_hadamard_bwd(dx, e, v, vectors_grad=True, kernel=None):
    """``kernel`` (default: the cuda operator) against the float64 gradients."""
    kernel = op("hadamard_mux_bwd") if kernel is None else kernel
    d_e, d_v = poisoned(lambda: kernel(dx, e, v, vectors_grad), e.numel(), e.dtype)
    want_e, want_v = reference.hadamard_mux_backward(
        e.double(), v.double(), dx.double(), vectors_grad=True
    )
    assert d_e.dtype == e.dtype and d_v.dtype == v.dtype
    check(d_e, want_e, "dE")
    if vectors_grad:
        check(d_v, want_v, "dv")
    else:
        assert d_v.shape == (0,)
    return d_e, d_v


@pytest.mark.parametrize("vectors_grad", [True, False], ids=["dv", "no_dv"])
@pytest.mark.parametrize("v_fp32", [False, True], ids=["v_same", "v_fp32"])
@pytest.mark.parametrize(
    "shape", [(2, 1, 5, 5), (2, 3, 1, 97), (3, 40, 7, 768), (1, 3, 2, 4097)], ids=shape_id
)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_hadamard_mux_bwd(dtype, shape, v_fp32, vectors_grad, gen):
    v_dtype = torch.float32 if v_fp32 else dtype
    check_hadamard_bwd(*hadamard_inputs(gen, shape, dtype, v_dtype), vectors_grad)


@pytest.mark.parametrize("which", ["e", "dx", "v"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=dtype_id)
def test_hadamard_mux_bwd_misaligned(dtype, which, gen):
    check_hadamard_bwd(*hadamard_inputs(gen, (2, 3, 5, 768), dtype, torch.float32, which))


@pytest.mark.parametrize("n", [10, 40])
def test_hadamard_mux_bwd_benchmark_shape_and_determinism(n, gen):
    dx, e, v = hadamard_inputs(gen, (64, n, 128, 768), torch.bfloat16, torch.float32)
    d_e, d_v = check_hadamard_bwd(dx, e, v)
    again_e, again_v = op("hadamard_mux_bwd")(dx, e, v, True)
    assert torch.equal(d_e, again_e) and torch.equal(d_v, again_v)
    triton = triton_op("hadamard_mux_bwd")
    if triton is not None:
        check_hadamard_bwd(dx, e, v, kernel=triton)


# ---------------------------------------------------------------------------
# embed_mux_fwd_cuda
# ---------------------------------------------------------------------------


def embed_inputs(gen, shape, dtype, params_fp32=False, misaligned=False, vocab=(11, 9, 2)):
    """The operator's arguments but eps (the tables misaligned when asked)."""
    groups, n, length, d = shape
    param_dtype = torch.float32 if params_fp32 else dtype

    def ids(high: int, *size: int) -> torch.Tensor:
        return torch.randint(0, high, size, generator=gen, device=DEVICE)

    tables = [randn(size, d, generator=gen, dtype=dtype, misaligned=misaligned) for size in vocab]
    return (
        ids(vocab[0], groups, n, length),
        *tables,
        1.0 + 0.1 * randn(d, generator=gen, dtype=param_dtype),
        0.1 * randn(d, generator=gen, dtype=param_dtype),
        randn(n, d, generator=gen, dtype=param_dtype),
        ids(vocab[1], groups, n, length),
        ids(vocab[2], groups, n, length),
        ids(vocab[1], groups, length),
        ids(vocab[2], groups, length),
    )


def embed_reference(args) -> torch.Tensor:
    cast = [t.double() if t.is_floating_point() else t for t in args]
    return reference.embed_mux(*cast, EPS)


def check_embed(args, kernel=None):
    """``kernel`` (default: the cuda operator) against the float64 reference."""
    kernel = op("embed_mux_fwd") if kernel is None else kernel
    groups, _, length = args[0].shape
    out = poisoned(lambda: kernel(*args, EPS), groups * length * args[1].shape[1], args[1].dtype)
    assert out.dtype == args[1].dtype
    check(out, embed_reference(args), "x")
    return out


@pytest.mark.parametrize("params_fp32", [False, True], ids=["params_same", "params_fp32"])
@pytest.mark.parametrize(
    "shape",
    [(2, 1, 1, 5), (2, 3, 4, 97), (3, 40, 7, 768), (1, 3, 2, 4097), (2, 2, 3, 4096)],
    ids=shape_id,
)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_embed_mux_fwd(dtype, shape, params_fp32, gen):
    check_embed(embed_inputs(gen, shape, dtype, params_fp32))


@pytest.mark.parametrize("d", [768, 1024])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=dtype_id)
def test_embed_mux_fwd_misaligned_tables(dtype, d, gen):
    check_embed(embed_inputs(gen, (2, 3, 5, d), dtype, misaligned=True))


@pytest.mark.parametrize("n", [10, 40])
def test_embed_mux_fwd_benchmark_shape(n, gen):
    args = embed_inputs(gen, (16, n, 128, 768), torch.bfloat16, True, vocab=(50265, 514, 1))
    check_embed(args)
    triton = triton_op("embed_mux_fwd")
    if triton is not None:
        check_embed(args, triton)


# ---------------------------------------------------------------------------
# demux_gather_fwd_cuda / demux_gather_bwd_cuda
# ---------------------------------------------------------------------------

# (B', N, L', d, Ga): general, a shared by all groups (Ga = 1) with tiny d, all ones,
# N = 40 at d = 768, rows over 4 items of 16 bytes per lane, an odd long row.
DEMUX_CASES = [
    (2, 3, 6, 97, 2),
    (2, 3, 6, 5, 1),
    (1, 1, 1, 5, 1),
    (2, 40, 9, 768, 1),
    (2, 3, 5, 4096, 2),
    (2, 3, 4, 4097, 1),
]


def demux_inputs(gen, case, dtype, params_fp32=False, misaligned=False):
    """(a, c, ln_weight, ln_bias, index, sequence_position); c misaligned when asked. With
    params_fp32, a, c and the LayerNorm parameters are float32, as the ops pass them for
    half data (the data, u and grad_u, stays in dtype)."""
    groups, n, length, d, a_groups = case
    param_dtype = torch.float32 if params_fp32 else dtype
    a = randn(a_groups, n, d, generator=gen, dtype=param_dtype)
    c = randn(groups, length, d, generator=gen, dtype=param_dtype, misaligned=misaligned)
    ln_weight = 1.0 + 0.1 * randn(d, generator=gen, dtype=param_dtype)
    ln_bias = 0.1 * randn(d, generator=gen, dtype=param_dtype)
    index = torch.randint(0, n, (groups, length), generator=gen, device=DEVICE)
    return a, c, ln_weight, ln_bias, index, min(n, length - 1)


def gather_shape(a, c, gather) -> tuple[int, ...]:
    return _opdefs.gather_shape(a, c, gather, c.shape[2])


def demux_reference(gather, index, position):
    def fn(a, c, ln_weight, ln_bias):
        return reference.demux_gather(a, c, ln_weight, ln_bias, EPS, gather, index, position)

    return fn


def check_demux_fwd(inputs, gather, backend="cuda", dtype=None):
    """The operator of ``backend`` against the float64 reference; u in ``dtype`` (the
    data's, c's dtype when None)."""
    a, c, ln_weight, ln_bias, index, position = inputs
    dtype = dtype or c.dtype
    kernel = _opdefs.kernel("demux_gather_fwd", backend)
    out = poisoned(
        lambda: kernel(a, c, ln_weight, ln_bias, EPS, gather, index, position, dtype),
        torch.Size(gather_shape(a, c, gather)).numel(),
        dtype,
    )
    want = demux_reference(gather, index, position)(
        a.double(), c.double(), ln_weight.double(), ln_bias.double()
    )
    assert out.dtype == dtype
    check(out, want, "u")
    return out


def check_demux_bwd(inputs, gather, gen, backend="cuda", dtype=None):
    """The operator of ``backend`` against the float64 reference's gradients; grad_u in
    ``dtype`` (the data's, c's dtype when None)."""
    a, c, ln_weight, ln_bias, index, position = inputs
    params = [a, c, ln_weight, ln_bias]
    grad_u = randn(*gather_shape(a, c, gather), generator=gen, dtype=dtype or c.dtype)
    kernel = _opdefs.kernel("demux_gather_bwd", backend)
    got = poisoned(
        lambda: kernel(grad_u, *params, EPS, gather, index, position),
        c.numel(),
        c.dtype,
    )
    leaves = [t.double().requires_grad_() for t in params]
    out = demux_reference(gather, index, position)(*leaves)
    want = torch.autograd.grad(out, leaves, grad_u.double())
    for name, g, w, t in zip(
        ("da", "dc", "d_ln_weight", "d_ln_bias"), got, want, params, strict=True
    ):
        assert g.dtype == t.dtype, name
        check(g, w, name)
    return grad_u, got


@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("case", DEMUX_CASES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_demux_gather_fwd(dtype, case, gather, gen):
    check_demux_fwd(demux_inputs(gen, case, dtype), gather)


@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("case", DEMUX_CASES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_demux_gather_bwd(dtype, case, gather, gen):
    check_demux_bwd(demux_inputs(gen, case, dtype), gather, gen)


@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
def test_demux_gather_fp32_params(dtype, gather, gen):
    """a, c and the LayerNorm parameters in float32 with half-precision u and grad_u."""
    inputs = demux_inputs(gen, (2, 5, 7, 768, 2), dtype, params_fp32=True)
    check_demux_fwd(inputs, gather, dtype=dtype)
    check_demux_bwd(inputs, gather, gen, dtype=dtype)


@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("d", [768, 1000])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=dtype_id)
def test_demux_gather_misaligned(dtype, d, gather, gen):
    inputs = demux_inputs(gen, (2, 3, 6, d, 1), dtype, misaligned=True)
    check_demux_fwd(inputs, gather)
    check_demux_bwd(inputs, gather, gen)


@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("case", [(16, 40, 169, 768, 16), (64, 10, 139, 768, 1)], ids=shape_id)
def test_demux_gather_benchmark_shape_and_determinism(case, gather, gen):
    inputs = demux_inputs(gen, case, torch.bfloat16, params_fp32=True)  # as the ops call it
    bf16 = torch.bfloat16
    args = (*inputs[:4], EPS, gather, *inputs[4:])
    check_demux_fwd(inputs, gather, dtype=bf16)
    grad_u, grads = check_demux_bwd(inputs, gather, gen, dtype=bf16)
    again = op("demux_gather_bwd")(grad_u, *args)
    for first, second in zip(grads, again, strict=True):
        assert torch.equal(first, second), "the backward is not deterministic"
    if triton_op("demux_gather_fwd") is not None:
        check_demux_fwd(inputs, gather, "triton", dtype=bf16)
    if triton_op("demux_gather_bwd") is not None:
        check_demux_bwd(inputs, gather, gen, "triton", dtype=bf16)


# ---------------------------------------------------------------------------
# Registration on CUDA: opcheck, torch.compile, streams, errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=dtype_id)
def test_opcheck_cuda(dtype, gen):
    dx, e, v = hadamard_inputs(gen, (2, 3, 4, 96), dtype, torch.float32)
    torch.library.opcheck(op("hadamard_mux_bwd"), (dx, e, v, True))
    torch.library.opcheck(op("embed_mux_fwd"), (*embed_inputs(gen, (2, 3, 4, 96), dtype), EPS))
    a, c, w, b, index, position = demux_inputs(gen, (2, 3, 4, 96, 1), dtype)
    for gather in GATHERS:
        args = (a, c, w, b, EPS, gather, index, position)
        u = op("demux_gather_fwd")(*args, dtype)
        torch.library.opcheck(op("demux_gather_fwd"), (*args, dtype))
        torch.library.opcheck(op("demux_gather_bwd"), (torch.randn_like(u), *args))


def test_compile_fullgraph_inductor(gen):
    pytest.importorskip("triton")
    a, c, w, b, _, _ = demux_inputs(gen, (2, 3, 4, 64, 2), torch.float32)

    def f(a, c, w, b):
        u = op("demux_gather_fwd")(a, c, w, b, EPS, "token", None, 0, c.dtype)
        return op("demux_gather_bwd")(u * 2.0, a, c, w, b, EPS, "token", None, 0)[1] + 1.0

    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(a, c, w, b), f(a, c, w, b))


def test_side_stream(gen):
    inputs = demux_inputs(gen, (4, 10, 33, 768, 4), torch.bfloat16)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = op("demux_gather_fwd")(*inputs[:4], EPS, "token", *inputs[4:], torch.bfloat16)
    stream.synchronize()
    want = demux_reference("token", inputs[4], inputs[5])(*(t.double() for t in inputs[:4]))
    check(out, want, "u")


def test_too_wide_rows_are_an_error(gen):
    a, c, w, b, _, _ = demux_inputs(gen, (1, 2, 2, 8193, 1), torch.float32)
    with pytest.raises(RuntimeError, match=r"d = c\.size\(2\) must be at most 8192"):
        op("demux_gather_fwd")(a, c, w, b, EPS, "token", None, 0, c.dtype)


# ---------------------------------------------------------------------------
# Offsets beyond 2^31 elements
# ---------------------------------------------------------------------------


def needs_free_bytes(nbytes: int) -> None:
    free, _ = torch.cuda.mem_get_info()
    if free < nbytes + (2 << 30):
        pytest.skip(f"needs about {(nbytes >> 30) + 2} GiB free, have {free >> 30} GiB")


def test_demux_gather_fwd_beyond_2_31(gen):
    groups, n, length, d = 2, 64, 16400, 1024  # u has 2.15e9 elements
    needs_free_bytes(2 * groups * n * length * d * 2)
    a, c, w, b, _, _ = demux_inputs(gen, (groups, n, length, d, groups), torch.bfloat16)
    u = op("demux_gather_fwd")(a, c, w, b, EPS, "token", None, 0, c.dtype)
    torch.cuda.synchronize()
    assert u.numel() > 2**31
    # The last instance of the last group, whose rows lie beyond 2^31, and the first rows.
    for g, i, rows in [(0, 0, slice(0, 4)), (1, n - 1, slice(length - 4, length))]:
        want = reference.demux_gather(
            a[g : g + 1, i : i + 1].double(),
            c[g : g + 1, rows].double(),
            w.double(),
            b.double(),
            EPS,
            "token",
            None,
            0,
        )
        check(u[g : g + 1, i : i + 1, rows].contiguous(), want, f"u[{g}, {i}]")
    del u
    torch.cuda.empty_cache()


def test_hadamard_mux_bwd_beyond_2_31(gen):
    shape = (1, 2, 2**20 + 8, 1024)  # E and dE have 2.15e9 elements
    needs_free_bytes(2 * 2 * shape[1] * shape[2] * shape[3])
    dx, e, v = hadamard_inputs(gen, shape, torch.bfloat16, torch.float32)
    d_e, _ = op("hadamard_mux_bwd")(dx, e, v, False)
    torch.cuda.synchronize()
    for rows in (slice(0, 4), slice(shape[2] - 4, shape[2])):
        want, _ = reference.hadamard_mux_backward(
            e[:, :, rows].double(), v.double(), dx[:, rows].double(), vectors_grad=False
        )
        check(d_e[:, :, rows].contiguous(), want, "dE")
    del d_e, e
    torch.cuda.empty_cache()
