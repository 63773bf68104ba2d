"""The reference ops and the public functional API (backend="reference") against tests/loops.py.

Everything is float64 on small odd shapes unless a test is about dtypes. Inputs are random
normal (never zero); demux weights are scaled so that gelu sees pre-activations of order 1.
"""

from __future__ import annotations

import itertools

import loops
import pytest
import torch
from helpers import REFERENCE, assert_close

import muxkernels as mk
from muxkernels import reference as ref
from muxkernels import transforms
from muxkernels.bench import published

EPS = 1e-5

SHAPES = [
    pytest.param(groups, n, length, d, id=f"G{groups}-N{n}-L{length}-d{d}")
    for groups, n, length, d in itertools.product((1, 2), (1, 3), (1, 4), (5, 7))
]
GATHERS = ref.GATHERS


# --- multiplexers -------------------------------------------------------------------------


def mux_params(kind: str, randn, n: int, d: int) -> tuple[torch.Tensor, ...]:
    """The transform tensors of a multiplexer: vectors, matrices, or the factors (u, h)."""
    if kind == "hadamard":
        return (randn(n, d),)
    if kind == "ortho":
        return (randn(n, d, d, scale=d**-0.5),)
    return randn(d, d), randn(d, d)


MUX = {
    "hadamard": (ref.hadamard_mux, mk.hadamard_mux, loops.hadamard_mux),
    "ortho": (ref.ortho_mux, mk.ortho_mux, loops.ortho_mux),
    "lowrank": (ref.lowrank_ortho_mux, mk.lowrank_ortho_mux, loops.lowrank_ortho_mux),
}


def run_mux(kind: str, impl: str, embeddings: torch.Tensor, params, **kwargs) -> torch.Tensor:
    reference, public, loop = MUX[kind]
    if impl == "loop":
        return loop(embeddings, *params)
    if impl == "reference":
        return reference(embeddings, *params)
    return public(embeddings, *params, backend="reference", **kwargs)


@pytest.mark.parametrize("impl", ["reference", "public"])
@pytest.mark.parametrize("kind", list(MUX))
@pytest.mark.parametrize(("groups", "n", "length", "d"), SHAPES)
def test_mux_matches_loops(randn, kind, impl, groups, n, length, d):
    embeddings = randn(groups, n, length, d)
    params = mux_params(kind, randn, n, d)
    out = run_mux(kind, impl, embeddings, params)
    assert out.shape == (groups, length, d)
    assert_close(out, run_mux(kind, "loop", embeddings, params), REFERENCE)


BACKWARDS = {
    # kind: (forward, explicit backward, loop backward, flag naming the transform's grad)
    "hadamard": (
        ref.hadamard_mux,
        ref.hadamard_mux_backward,
        loops.hadamard_mux_backward,
        "vectors_grad",
    ),
    "ortho": (ref.ortho_mux, ref.ortho_mux_backward, loops.ortho_mux_backward, "matrices_grad"),
}


@pytest.mark.parametrize("kind", list(BACKWARDS))
@pytest.mark.parametrize(("groups", "n", "length", "d"), SHAPES)
def test_mux_backward(randn, kind, groups, n, length, d):
    forward, backward, loop_backward, flag = BACKWARDS[kind]
    embeddings, (transform,) = randn(groups, n, length, d), mux_params(kind, randn, n, d)
    grad_out = randn(groups, length, d)
    d_e, d_t = backward(embeddings, transform, grad_out, **{flag: True})
    loop_de, loop_dt = loop_backward(embeddings, transform, grad_out)
    assert_close(d_e, loop_de, REFERENCE)
    assert_close(d_t, loop_dt, REFERENCE)

    e, t = embeddings.requires_grad_(), transform.requires_grad_()
    auto_de, auto_dt = torch.autograd.grad(forward(e, t), (e, t), grad_out)
    assert_close(d_e, auto_de, REFERENCE)
    assert_close(d_t, auto_dt, REFERENCE)

    d_e_only, none = backward(e, t, grad_out, **{flag: False})
    assert none is None
    assert_close(d_e_only, loop_de, REFERENCE)


@pytest.mark.parametrize(("n", "d"), [(1, 5), (3, 5), (3, 6), (3, 7), (4, 7), (2, 8)])
def test_lowrank_factored_equals_dense(randn, generator, n, d):
    u, h = transforms.lowrank_factors(n, d, generator=generator, dtype=torch.float64)
    dense = ref.lowrank_dense(u, h, n)
    assert_close(dense, loops.lowrank_dense(u, h, n), REFERENCE)
    embeddings = randn(2, n, 3, d)
    factored = mk.lowrank_ortho_mux(embeddings, u, h, backend="reference")
    dense_out = mk.ortho_mux(embeddings, dense, backend="reference")
    assert_close(factored, dense_out, REFERENCE)
    assert_close(factored, ref.ortho_mux(embeddings, dense), REFERENCE)


@pytest.mark.parametrize("kind", list(MUX))
def test_mux_batch_input_equals_grouped(randn, kind):
    groups, n, length, d = 2, 3, 4, 7
    embeddings = randn(groups, n, length, d)
    params = mux_params(kind, randn, n, d)
    kwargs = {"num_instances": n} if kind == "lowrank" else {}
    batch = embeddings.reshape(groups * n, length, d)
    grouped_out = run_mux(kind, "public", embeddings, params)
    assert torch.equal(run_mux(kind, "public", batch, params, **kwargs), grouped_out)


def test_mux_row_order_is_group_major():
    """Row g·N+i of the batch is instance i of group g: with v_i = one-hot(i) and row r filled
    with r+1, feature k < N of group g's mixture is (g·N+k+1)/N and features ≥ N are zero."""
    groups, n, length, d = 2, 3, 2, 5
    rows = torch.arange(1, groups * n + 1, dtype=torch.float64)
    batch = rows[:, None, None].expand(groups * n, length, d).contiguous()
    vectors = torch.eye(n, d, dtype=torch.float64)
    out = mk.hadamard_mux(batch, vectors, backend="reference")
    expected = torch.zeros(groups, length, d, dtype=torch.float64)
    for g in range(groups):
        for k in range(n):
            expected[g, :, k] = (g * n + k + 1) / n
    assert torch.equal(out, expected)


# --- demultiplexers -----------------------------------------------------------------------


def demux_inputs(op: str, randn, generator, groups, n, length, d, gather):
    """(float tensors in positional order, index) for one demux op; index only when selected."""
    d_params = (n, d) if op == "mlp" else (d,)
    positions = length + n + 1 if op == "index" else length
    hidden = randn(groups, positions, d)
    floats = [hidden]
    if op == "index_pos":
        floats.append(randn(n, d))
    if op == "mlp":
        floats.append(randn(n, d, d, scale=d**-0.5))
    else:
        floats.append(randn(d, 2 * d, scale=d**-0.5))
    floats += [
        randn(*d_params, scale=0.5),
        1 + randn(*d_params, scale=0.3),
        randn(*d_params, scale=0.3),
    ]
    index = None
    if gather == "selected":
        index = torch.randint(0, n, hidden.shape[:2], generator=generator)
    return floats, index


def run_demux(op: str, impl: str, floats, n, gather, index) -> torch.Tensor:
    if op == "index":
        if impl == "loop":
            return loops.index_demux(*floats, n, EPS, gather, index)
        if impl == "reference":
            return ref.index_demux(*floats, n, EPS, gather, index)
        return mk.index_demux(
            *floats, num_instances=n, eps=EPS, gather=gather, index=index, backend="reference"
        )
    if op == "index_pos":
        if impl == "loop":
            return loops.index_pos_demux(*floats, EPS, gather, index)
        if impl == "reference":
            return ref.index_pos_demux(*floats, EPS, gather, index)
        return mk.index_pos_demux(*floats, eps=EPS, gather=gather, index=index, backend="reference")
    if impl == "loop":
        return loops.mlp_demux(*floats, EPS)
    if impl == "reference":
        return ref.mlp_demux(*floats, EPS)
    return mk.mlp_demux(*floats, eps=EPS, backend="reference")


DEMUX_CASES = [
    pytest.param(op, gather, id=f"{op}-{gather}")
    for op in ("index", "index_pos")
    for gather in GATHERS
] + [pytest.param("mlp", "token", id="mlp")]


def expected_demux_shape(op, gather, groups, n, length, d) -> tuple[int, ...]:
    positions = length + n + 1 if op == "index" else length
    if gather == "sequence":
        return (groups, n, d)
    if gather == "selected":
        return (groups, positions, d)
    return (groups, n, positions, d)


@pytest.mark.parametrize("impl", ["reference", "public"])
@pytest.mark.parametrize(("op", "gather"), DEMUX_CASES)
@pytest.mark.parametrize(("groups", "n", "length", "d"), SHAPES)
def test_demux_matches_loops(randn, generator, op, gather, impl, groups, n, length, d):
    floats, index = demux_inputs(op, randn, generator, groups, n, length, d, gather)
    out = run_demux(op, impl, floats, n, gather, index)
    assert out.shape == expected_demux_shape(op, gather, groups, n, length, d)
    assert_close(out, run_demux(op, "loop", floats, n, gather, index), REFERENCE)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize(("groups", "n", "length", "d"), SHAPES)
def test_index_demux_split_equals_concat(randn, generator, dtype, groups, n, length, d):
    floats, _ = demux_inputs("index", randn, generator, groups, n, length, d, "token")
    floats = [t.to(dtype) for t in floats]
    split = ref.index_demux(*floats, n, EPS, "token")
    concat = published.index_demux_token(*floats, n, EPS)  # the published (…, 2d) form
    assert_close(split, concat, REFERENCE)


# --- gradcheck of the public ops ------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MUX))
def test_mux_gradcheck(randn, kind):
    n, d = 3, 5
    embeddings = randn(2, n, 2, d).requires_grad_()
    params = [p.requires_grad_() for p in mux_params(kind, randn, n, d)]
    assert torch.autograd.gradcheck(
        lambda e, *ps: run_mux(kind, "public", e, ps), (embeddings, *params)
    )


@pytest.mark.parametrize(("op", "gather"), DEMUX_CASES)
def test_demux_gradcheck(randn, generator, op, gather):
    n = 3
    floats, index = demux_inputs(op, randn, generator, 2, n, 1, 5, gather)
    floats = [t.requires_grad_() for t in floats]
    assert torch.autograd.gradcheck(
        lambda *fs: run_demux(op, "public", fs, n, gather, index), tuple(floats)
    )


# --- low-precision inputs ---------------------------------------------------------------------

# (data dtype, parameter dtype); the bound: REFERENCE of muxkernels._tolerances.
LOW_PRECISION = [
    pytest.param(torch.float32, torch.float32, id="fp32"),
    pytest.param(torch.float16, torch.float16, id="fp16"),
    pytest.param(torch.float16, torch.float32, id="fp16-fp32params"),
    pytest.param(torch.bfloat16, torch.bfloat16, id="bf16"),
    pytest.param(torch.bfloat16, torch.float32, id="bf16-fp32params"),
]


@pytest.mark.parametrize(("dtype", "param_dtype"), LOW_PRECISION)
@pytest.mark.parametrize("kind", list(MUX))
def test_mux_low_precision(randn, kind, dtype, param_dtype):
    n, d = 3, 16
    embeddings = randn(2, n, 4, d, dtype=dtype)
    params = [p.to(param_dtype) for p in mux_params(kind, randn, n, d)]
    out = run_mux(kind, "public", embeddings, params)
    expected = run_mux(kind, "public", embeddings.double(), [p.double() for p in params])
    assert out.dtype == dtype
    assert_close(out, expected, REFERENCE)


@pytest.mark.parametrize(("dtype", "param_dtype"), LOW_PRECISION)
@pytest.mark.parametrize(("op", "gather"), DEMUX_CASES)
def test_demux_low_precision(randn, generator, op, gather, dtype, param_dtype):
    n = 3
    floats, index = demux_inputs(op, randn, generator, 2, n, 4, 16, gather)
    floats = [floats[0].to(dtype)] + [t.to(param_dtype) for t in floats[1:]]
    out = run_demux(op, "public", floats, n, gather, index)
    expected = run_demux(op, "public", [t.double() for t in floats], n, gather, index)
    assert out.dtype == dtype
    assert_close(out, expected, REFERENCE)
