"""The CUDA kernels of csrc/ run on the CPU by the emulator (emu.h) against the reference.

For machines without a GPU: this checks the kernels' indexing, row layouts, reductions,
shared memory and synchronisation (vector and element-wise paths, every gather, odd
sizes), not their speed or anything specific to the hardware. Every tensor a kernel gets
sits inside a larger buffer whose guard elements are NaN (inputs: an out-of-bounds read
shows as NaN) and must be unchanged afterwards (outputs: out-of-bounds writes). Part of
the default test run; alone:

    python3 -m pytest -q tests/cuda_emulator

It compiles the kernel files with g++ (C++20, the CUDA headers from CUDA_HOME or
/usr/local/cuda) into build/emulator/ on first use, about a minute on two cores.
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import assert_close, randn

from muxkernels import reference


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


emulator = _load("build")
DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}
GATHER_CODES = {"token": 0, "sequence": 1, "selected": 2}
GUARD = 64  # elements on each side of every buffer
EPS = 1e-5

if not emulator.available():
    pytest.skip("needs g++ and the CUDA headers", allow_module_level=True)

LIB = ctypes.CDLL(str(emulator.build()))
I64 = ctypes.c_int64


def kernel_takes(d: int, dtype: torch.dtype, shift: int, vector_rows: int, other_rows: int):
    """Whether a row kernel takes rows of d elements: up to vector_rows on its vector path
    (16-byte rows, aligned), up to other_rows element-wise. The bindings compute longer
    rows with ATen ops; the launchers refuse them (status cudaErrorInvalidValue, 1)."""
    vector = (d * dtype.itemsize) % 16 == 0 and not shift
    return d <= (vector_rows if vector else other_rows)


class Guarded:
    """A tensor at offset GUARD (+ `shift` elements: 1 misaligns it) in a larger buffer whose
    other elements are NaN (-777 for integers)."""

    def __init__(self, shape, dtype, shift=0, value=None):
        numel = torch.Size(shape).numel()
        self.buffer = torch.full((numel + 2 * GUARD + shift,), -777, dtype=dtype)
        if dtype.is_floating_point:
            self.buffer.fill_(float("nan"))
        self.start = GUARD + shift
        self.tensor = self.buffer[self.start : self.start + numel].view(shape)
        if value is not None:
            self.tensor.copy_(value)
        self.before = self.buffer.clone()

    @property
    def ptr(self) -> ctypes.c_void_p:
        return ctypes.c_void_p(self.tensor.data_ptr())

    def guards_unchanged(self) -> bool:
        inside = torch.zeros_like(self.buffer, dtype=torch.bool)
        inside[self.start : self.start + self.tensor.numel()] = True
        now, before = self.buffer[~inside], self.before[~inside]
        return torch.equal(now.isnan(), before.isnan()) and torch.equal(
            now.nan_to_num(), before.nan_to_num()
        )


def guarded(t: torch.Tensor, shift: int = 0) -> Guarded:
    return Guarded(tuple(t.shape), t.dtype, shift, t)


def pointers(*bufs) -> ctypes.Array:
    return (ctypes.c_void_p * len(bufs))(*(0 if b is None else b.tensor.data_ptr() for b in bufs))


def sizes(*values: int) -> ctypes.Array:
    return (I64 * len(values))(*values)


def finish(code: int, outputs, inputs) -> None:
    assert code == 0, f"the launcher returned {code}"
    assert LIB.emu_violations() == 0, "a launch the GPU would refuse"
    assert all(b.guards_unchanged() for b in outputs), "a write out of bounds"
    assert all(b.guards_unchanged() for b in inputs), "an input was written"


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(7)


# ---------------------------------------------------------------------------
# hadamard mux
# ---------------------------------------------------------------------------

HADAMARD_SHAPES = [(2, 1, 5, 5), (2, 3, 1, 97), (3, 5, 7, 768), (1, 3, 2, 1029), (2, 2, 70, 16)]


@pytest.mark.parametrize("shift", [0, 1], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("shape", HADAMARD_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_hadamard_mux_fwd(dtype, shape, shift, gen):
    groups, n, length, d = shape
    e, v = (
        guarded(randn(*shape, generator=gen, dtype=dtype), shift),
        guarded(randn(n, d, generator=gen, dtype=dtype)),
    )
    out = Guarded((groups, length, d), dtype, shift)
    code = LIB.emu_hadamard_mux_fwd(
        e.ptr, v.ptr, out.ptr, I64(groups), I64(n), I64(length), I64(d),
        DTYPE_CODES[dtype], DTYPE_CODES[dtype],
    )  # fmt: skip
    finish(code, [out], [e, v])
    assert_close(out.tensor, reference.hadamard_mux(e.tensor.double(), v.tensor.double()), what="x")


@pytest.mark.parametrize("shift", [0, 1], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("vectors_grad", [True, False], ids=["dv", "no_dv"])
@pytest.mark.parametrize("v_fp32", [False, True], ids=["v_same", "v_fp32"])
@pytest.mark.parametrize("shape", HADAMARD_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_hadamard_mux_bwd(dtype, shape, v_fp32, vectors_grad, shift, gen):
    groups, n, length, d = shape
    e = guarded(randn(*shape, generator=gen, dtype=dtype), shift)
    v = guarded(randn(n, d, generator=gen, dtype=torch.float32 if v_fp32 else dtype), shift)
    dx = guarded(randn(groups, length, d, generator=gen, dtype=dtype), shift)
    d_e = Guarded(shape, dtype, shift)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    chunks = LIB.emu_hadamard_mux_bwd_chunks(I64(groups * length), I64(n))
    partial = Guarded((chunks, n, d), acc) if vectors_grad else None
    code = LIB.emu_hadamard_mux_bwd(
        dx.ptr, e.ptr, v.ptr, DTYPE_CODES[v.tensor.dtype], d_e.ptr,
        partial.ptr if partial else ctypes.c_void_p(0), I64(groups), I64(n), I64(length), I64(d),
        DTYPE_CODES[dtype],
    )  # fmt: skip
    finish(code, [d_e] + ([partial] if partial else []), [dx, e, v])
    want_e, want_v = reference.hadamard_mux_backward(
        e.tensor.double(), v.tensor.double(), dx.tensor.double(), vectors_grad=True
    )
    assert_close(d_e.tensor, want_e, what="dE")
    if vectors_grad:  # the caller's sum over chunks, as csrc/bindings/hadamard_mux.cpp does it
        assert_close((partial.tensor.sum(0) / n).to(v.tensor.dtype), want_v, what="dv")


# ---------------------------------------------------------------------------
# embed + mux
# ---------------------------------------------------------------------------

VOCAB = (11, 9, 2)


@pytest.mark.parametrize("shift", [0, 1], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("params_fp32", [False, True], ids=["params_same", "params_fp32"])
@pytest.mark.parametrize(
    "shape",
    [(2, 1, 1, 5), (2, 3, 4, 97), (2, 5, 3, 768), (1, 3, 2, 1100), (1, 2, 2, 4096)],
    ids=str,
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_embed_mux_fwd(dtype, shape, params_fp32, shift, gen):
    groups, n, length, d = shape
    param_dtype = torch.float32 if params_fp32 else dtype

    def ids(high: int, *size: int) -> Guarded:
        return guarded(torch.randint(0, high, size, generator=gen))

    id_bufs = [ids(VOCAB[0], groups, n, length), ids(VOCAB[1], groups, n, length),
               ids(VOCAB[2], groups, n, length), ids(VOCAB[1], groups, length),
               ids(VOCAB[2], groups, length)]  # fmt: skip
    tables = [guarded(randn(size, d, generator=gen, dtype=dtype), shift) for size in VOCAB]
    params = [guarded(1 + 0.1 * randn(d, generator=gen, dtype=param_dtype)),
              guarded(0.1 * randn(d, generator=gen, dtype=param_dtype)),
              guarded(randn(n, d, generator=gen, dtype=param_dtype))]  # fmt: skip
    out = Guarded((groups, length, d), dtype, shift)
    takes = kernel_takes(d, dtype, shift, 8192, 2048)
    code = LIB.emu_embed_mux_fwd(
        pointers(*id_bufs), pointers(*tables), pointers(*params),
        (ctypes.c_int * 3)(*[DTYPE_CODES[param_dtype]] * 3), out.ptr,
        sizes(groups, n, length, d), ctypes.c_double(EPS), DTYPE_CODES[dtype],
    )  # fmt: skip
    if not takes:
        assert code == 1, "the kernel took a row longer than its registers hold"
        return
    finish(code, [out], id_bufs + tables + params)
    i, p, t, mp, mt = (b.tensor for b in id_bufs)
    word, pos, typ = (b.tensor.double() for b in tables)
    w, b, v = (b.tensor.double() for b in params)
    want = reference.embed_mux(i, word, pos, typ, w, b, v, p, t, mp, mt, EPS)
    assert_close(out.tensor, want, what="x")


# ---------------------------------------------------------------------------
# demux gather, forward and backward
# ---------------------------------------------------------------------------

# (B', N, L', d, Ga)
DEMUX_CASES = [
    (2, 3, 6, 97, 2),
    (2, 3, 6, 5, 1),
    (1, 1, 1, 5, 1),
    (2, 5, 9, 768, 1),
    (2, 3, 5, 4096, 2),
    (2, 2, 3, 1029, 1),
    (1, 2, 40, 64, 1),
    (2, 11, 3, 8, 2),
]


@pytest.mark.parametrize("shift", [0, 1], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("params_fp32", [False, True], ids=["params_same", "params_fp32"])
@pytest.mark.parametrize("gather", list(GATHER_CODES))
@pytest.mark.parametrize("case", DEMUX_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_demux_gather(dtype, case, gather, params_fp32, shift, gen):
    groups, n, length, d, a_groups = case
    param_dtype = torch.float32 if params_fp32 else dtype
    # a and c (the GEMM outputs) and the LayerNorm parameters in float32 with params_fp32,
    # as the ops pass them for half data
    a = guarded(randn(a_groups, n, d, generator=gen, dtype=param_dtype), shift)
    c = guarded(randn(groups, length, d, generator=gen, dtype=param_dtype), shift)
    w = guarded(1 + 0.1 * randn(d, generator=gen, dtype=param_dtype), shift)
    b = guarded(0.1 * randn(d, generator=gen, dtype=param_dtype), shift)
    index = guarded(torch.randint(0, n, (groups, length), generator=gen))
    position = min(n, length - 1)
    args = (
        a.ptr, DTYPE_CODES[param_dtype], c.ptr, w.ptr, DTYPE_CODES[param_dtype], b.ptr,
        DTYPE_CODES[param_dtype], index.ptr, sizes(groups, a_groups, n, length, d),
        ctypes.c_double(EPS), GATHER_CODES[gather], I64(position), DTYPE_CODES[param_dtype],
        DTYPE_CODES[dtype],
    )  # fmt: skip
    inputs = [a, c, w, b, index]

    def fn(*leaves):
        return reference.demux_gather(*leaves, EPS, gather, index.tensor, position)

    leaves = [t.tensor.double().requires_grad_() for t in (a, c, w, b)]
    want_u = fn(*leaves)
    shape = tuple(want_u.shape)  # the gather's output shape, as the reference gives it
    u = Guarded(shape, dtype, shift)
    code = LIB.emu_demux_gather_fwd(*args, u.ptr)
    if not kernel_takes(d, dtype, shift, 8192, 2048):
        assert code == 1, "the kernel took a row longer than its registers hold"
        return
    finish(code, [u], inputs)
    assert_close(u.tensor, want_u, what="u")

    grad_u = guarded(randn(*shape, generator=gen, dtype=dtype), shift)
    want = torch.autograd.grad(want_u, leaves, grad_u.tensor.double())
    dc = Guarded((groups, length, d), param_dtype, shift)
    if gather == "sequence":  # as the binding does: positions not read keep zero
        dc.tensor.zero_()
        dc.before = dc.buffer.clone()
    plan = (I64 * 4)()  # grad_u and dc take part in choosing the path
    planned = LIB.emu_demux_gather_bwd(*args, pointers(grad_u, dc, None, None, None), plan, 1)
    if not kernel_takes(d, dtype, shift, 4096, 1024):
        assert planned == -1, "the kernel took a row longer than its registers hold"
        return
    assert planned == 0
    _, _, blocks, da_tiles = plan
    da_partial = Guarded((groups, da_tiles, n, d), torch.float32)
    ln_partial = Guarded((2, blocks, d), torch.float32)
    dpre = Guarded((groups, length, d), torch.float32) if gather == "selected" else None
    buffers = pointers(grad_u, dc, da_partial, ln_partial, dpre)
    outputs = [dc, da_partial, ln_partial] + ([dpre] if dpre else [])
    finish(LIB.emu_demux_gather_bwd(*args, buffers, plan, 0), outputs, [*inputs, grad_u])
    # The callers' sums over the partial buffers, as csrc/bindings/demux_gather.cpp does them.
    da = da_partial.tensor.sum(1)
    da = da.sum(0, keepdim=True) if a_groups == 1 else da
    ln = ln_partial.tensor.sum(1)
    got = (da.to(param_dtype), dc.tensor, ln[0].to(param_dtype), ln[1].to(param_dtype))
    for name, g, expected in zip(("da", "dc", "d_ln_weight", "d_ln_bias"), got, want, strict=True):
        assert_close(g, expected, what=name)
