"""The CUDA kernel of ``muxkernels::hadamard_mux_fwd_cuda`` against the float64 formula

    x[g,t,k] = (1/N) Σ_i v[i,k] E[g,i,t,k]

on the vector (16-byte) and element-wise paths, misaligned views, non-default streams,
opcheck and torch.compile, and offsets beyond 2^31 elements. Skipped without a CUDA
device or without the extension (unless MUXKERNELS_REQUIRE_EXTENSION=1: then failing).
"""

from __future__ import annotations

import pytest
import torch
from helpers import (
    KERNEL,
    assert_close,
    magnitude,
    on_poisoned_memory,
    randn,
    require_cuda_extension,
)

from muxkernels import reference

pytestmark = [pytest.mark.gpu, pytest.mark.extension]

require_cuda_extension()

DEVICE = torch.device("cuda")
DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64]


def op(e: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.ops.muxkernels.hadamard_mux_fwd_cuda(e, v)


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def poisoned_call(e: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The op, its output most likely in a block just filled with NaN."""
    numel = e.shape[0] * e.shape[2] * e.shape[3]
    return on_poisoned_memory(lambda: op(e, v), numel, e.dtype, e.device)


def assert_matches(out: torch.Tensor, e: torch.Tensor, v: torch.Tensor) -> None:
    """Compares with the float64 formula on the same (already rounded) inputs, relative to
    the magnitude of the terms summed (so cancellation is covered)."""
    assert out.shape == (e.shape[0], e.shape[2], e.shape[3])
    assert out.dtype == e.dtype and out.device == e.device and out.is_contiguous()
    want = reference.hadamard_mux(e.double(), v.double())
    assert_close(out, want, KERNEL, magnitude=magnitude(reference.hadamard_mux, e, v))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(20240611)


@pytest.mark.parametrize("vectors_fp32", [False, True], ids=["v_same", "v_fp32"])
@pytest.mark.parametrize("n", [1, 3, 10, 40, 65])
@pytest.mark.parametrize("d", [5, 97, 768, 4097])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_matches_formula(dtype, d, n, vectors_fp32, generator):
    e = randn(2, n, 5, d, dtype=dtype, generator=generator)
    v = randn(n, d, dtype=torch.float32 if vectors_fp32 else dtype, generator=generator)
    assert_matches(poisoned_call(e, v), e, v)


@pytest.mark.parametrize("which", ["embeddings", "vectors", "both"])
@pytest.mark.parametrize("d", [768, 4096])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_misaligned_views(dtype, d, which, generator):
    """A storage offset of one element: contiguous, but not 16-byte aligned, so the kernel
    must take the element-wise path (or read the vectors element by element)."""
    n, shape = 3, (2, 3, 4, d)
    if which in ("embeddings", "both"):
        e = randn(*shape, dtype=dtype, generator=generator, misaligned=True)
    else:
        e = randn(*shape, dtype=dtype, generator=generator)
    if which in ("vectors", "both"):
        v = randn(n, d, dtype=torch.float32, generator=generator, misaligned=True)
    else:
        v = randn(n, d, dtype=torch.float32, generator=generator)
    assert_matches(poisoned_call(e, v), e, v)


@pytest.mark.parametrize(
    "shape", [(1, 2, 13, 5), (3, 2, 1, 5), (1, 1, 1, 1), (7, 4, 3, 8), (1, 3, 2, 20000)]
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=dtype_id)
def test_partial_blocks(shape, dtype, generator):
    """Row counts that do not fill a block, one element, and rows longer than a block."""
    e = randn(*shape, dtype=dtype, generator=generator)
    v = randn(shape[1], shape[3], dtype=dtype, generator=generator)
    assert_matches(poisoned_call(e, v), e, v)


def test_side_stream(generator):
    e = randn(4, 3, 64, 768, dtype=torch.bfloat16, generator=generator)
    v = randn(3, 768, dtype=torch.float32, generator=generator)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = op(e, v)
    stream.synchronize()
    assert_matches(out, e, v)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_other_device(generator):
    device = torch.device("cuda", 1)
    e = randn(2, 3, 4, 768, dtype=torch.float32, generator=generator).to(device)
    v = randn(3, 768, dtype=torch.float32, generator=generator).to(device)
    with torch.cuda.device(0):
        out = op(e, v)
    assert out.device == device
    assert_matches(out, e, v)


def test_device_mismatch_is_an_error():
    e = torch.randn(2, 3, 4, 5, device=DEVICE)
    with pytest.raises(RuntimeError, match="embeddings and vectors must be on the same device"):
        op(e, torch.randn(3, 5))


@pytest.mark.parametrize(
    ("dtype", "v_dtype"),
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float16),
        (torch.float64, torch.float64),
    ],
    ids=["f32", "bf16_vf32", "f16", "f64"],
)
def test_opcheck_cuda(dtype, v_dtype, generator):
    e = randn(2, 3, 4, 96, dtype=dtype, generator=generator)
    v = randn(3, 96, dtype=v_dtype, generator=generator)
    torch.library.opcheck(torch.ops.muxkernels.hadamard_mux_fwd_cuda, (e, v))


def test_compile_fullgraph_inductor(generator):
    pytest.importorskip("triton")

    def f(e: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return op(e, v) * 2.0

    compiled = torch.compile(f, fullgraph=True)
    e = randn(2, 3, 4, 64, dtype=torch.float32, generator=generator)
    v = randn(3, 64, dtype=torch.float32, generator=generator)
    torch.testing.assert_close(compiled(e, v), f(e, v))


# (B', N, L, d) with B'·N·L·d > 2^31: instance 1 of the last rows sits beyond 2^31.
LARGE_SHAPE = (1, 2, 2**20 + 8, 1024)
LARGE_BYTES = 2 * (2 * LARGE_SHAPE[2] * LARGE_SHAPE[3]) * 2  # E, then output and poison


@pytest.mark.parametrize("alignment", ["aligned", "misaligned"])
def test_offsets_beyond_2_31(alignment):
    free, _ = torch.cuda.mem_get_info()
    if free < LARGE_BYTES + (2 << 30):
        pytest.skip(f"needs about {(LARGE_BYTES >> 30) + 2} GiB free, have {free >> 30} GiB")
    groups, n, length, d = LARGE_SHAPE
    numel = groups * n * length * d
    assert numel > 2**31
    generator = torch.Generator(device=DEVICE).manual_seed(7)
    offset = 0 if alignment == "aligned" else 1
    buffer = torch.randn(numel + offset, generator=generator, device=DEVICE, dtype=torch.bfloat16)
    e = buffer[offset:].view(LARGE_SHAPE)
    v = torch.randn(n, d, generator=generator, device=DEVICE, dtype=torch.bfloat16)
    out = poisoned_call(e, v)
    assert not out.isnan().any()
    # Rows where instance 1 starts below, at and above element 2^31, and the first rows.
    crossing = 2**31 // d - length
    for rows in (slice(0, 4), slice(crossing - 4, crossing + 4), slice(length - 4, length)):
        assert_matches(out[:, rows], e[:, :, rows].contiguous(), v)
    del buffer, e, out
    torch.cuda.empty_cache()
