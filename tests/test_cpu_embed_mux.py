"""The cpu backend's compiled front end (csrc/cpu/embed_mux.cpp, ``muxkernels._C_cpu``).

The operators ``embed_mux_fwd_cpu`` and ``embed_mux_bwd_cpu`` against the float64
reference (``muxkernels.reference.embed_mux``) on NaN-poisoned memory at odd sizes, with
per-row and shared (expanded) ids and repeated ids; gradcheck in float64 through the
autograd Function; opcheck; their argument checks; reductions that do not depend on the
thread count; a fullgraph compile. ``muxkernels.embed_mux`` on the cpu backend runs them in
tests/test_cpu_backend.py and the op tables of the other tests.
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

from muxkernels import reference
from muxkernels._cpu import kernels

require_cpu_kernels()

EPS = 1e-5
TYPES = 2


def _inputs(groups, n, length, d, vocab, dtype, per_row_ids=True, seed=0):
    """(ids, word, pos, typ, ln_weight, ln_bias, vectors, pids, tids, mpids, mtids): a small
    vocabulary (ids repeat), positions L + 3 rows; shared ids as expanded (L,) vectors."""
    gen = torch.Generator().manual_seed(seed)
    params = [
        randn(*shape, generator=seed + k, dtype=dtype)
        for k, shape in enumerate(
            [(vocab, d), (length + 3, d), (TYPES, d), (d,), (d,), (n, d)], start=1
        )
    ]
    ids = torch.randint(0, vocab, (groups, n, length), generator=gen)
    if per_row_ids:
        pids = torch.randint(0, length + 3, (groups, n, length), generator=gen)
        tids = torch.randint(0, TYPES, (groups, n, length), generator=gen)
        mpids = torch.randint(0, length + 3, (groups, length), generator=gen)
        mtids = torch.randint(0, TYPES, (groups, length), generator=gen)
    else:
        positions = torch.arange(length) + 2
        pids, mpids = positions.expand(groups, n, length), positions.expand(groups, length)
        zeros = torch.zeros(length, dtype=torch.long)
        tids, mtids = zeros.expand(groups, n, length), zeros.expand(groups, length)
    return (ids, *params[:6], pids, tids, mpids, mtids)


def _split(args):
    ids, *params = args[:7]
    return ids, params, args[7:]


SIZES = [  # (B', N, L, d, V): odd sizes, N = 1, L = 1, ids repeating, several chunks
    (2, 3, 5, 97, 50),
    (1, 1, 1, 8, 3),
    (3, 10, 4, 64, 20),
    (20, 4, 30, 33, 7),
]


@pytest.mark.parametrize("per_row_ids", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", SIZES)
def test_embed_mux_matches_the_reference(size, dtype, per_row_ids):
    groups, n, length, d, vocab = size
    args = _inputs(groups, n, length, d, vocab, dtype, per_row_ids)
    ids, params, id_args = _split(args)
    poison = torch.full((groups * length * d,), float("nan"), dtype=dtype)
    del poison  # the output most likely reuses the NaN block
    x = cpu_op("embed_mux_fwd")(*args, EPS)
    leaves = [p.detach().double().requires_grad_() for p in params]
    want = reference.embed_mux(ids, *leaves, *id_args, EPS)
    assert_close(x, want, KERNEL)

    grad_x = randn(*want.shape, generator=7, dtype=dtype)
    wants = torch.autograd.grad(want, leaves, grad_x.double())
    got = cpu_op("embed_mux_bwd")(grad_x, *args, EPS)
    names = ("d_word", "d_position", "d_token_type", "d_ln_weight", "d_ln_bias", "d_vectors")
    for name, g, w in zip(names, got, wants, strict=True):
        # a gradient sums many rows: bound it by the magnitude of its terms
        assert_close(g, w, KERNEL, magnitude=w.abs().max().expand_as(w), what=name)


def test_embed_mux_gradcheck():
    args = _inputs(2, 3, 4, 6, 5, torch.float64)
    ids, params, id_args = _split(args)
    leaves = [p.requires_grad_() for p in params]

    def fn(*tables):
        return kernels.embed_mux(ids, *tables, *id_args, EPS)

    assert torch.autograd.gradcheck(fn, leaves)


def test_embed_mux_word_gradient_is_zero_in_rows_no_id_names():
    args = _inputs(2, 3, 4, 16, 40, torch.float32)
    ids = args[0]
    grad_x = randn(2, 4, 16, generator=3, dtype=torch.float32)
    d_word = cpu_op("embed_mux_bwd")(grad_x, *args, EPS)[0]
    unused = torch.ones(40, dtype=torch.bool)
    unused[ids.flatten()] = False
    assert unused.any() and (d_word[unused] == 0).all() and (d_word[~unused] != 0).all()


@pytest.mark.parametrize("per_row_ids", [True, False])
def test_embed_mux_reductions_do_not_depend_on_the_thread_count(per_row_ids):
    args = _inputs(40, 4, 30, 97, 9, torch.float32, per_row_ids)
    grad_x = randn(40, 30, 97, generator=5, dtype=torch.float32)
    assert_thread_count_independent(lambda: cpu_op("embed_mux_bwd")(grad_x, *args, EPS))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    args = (*_inputs(2, 3, 5, 8, 6, dtype), EPS)
    torch.library.opcheck(cpu_op("embed_mux_fwd"), args)
    grad_x = torch.ones_like(cpu_op("embed_mux_fwd")(*args))
    torch.library.opcheck(cpu_op("embed_mux_bwd"), (grad_x, *args))


def test_embed_mux_compiles_fullgraph():
    args = _inputs(2, 3, 5, 8, 6, torch.float32, per_row_ids=False)
    ids, params, id_args = _split(args)
    leaves = [p.requires_grad_() for p in params]

    def fn(word):
        return kernels.embed_mux(ids, word, *leaves[1:], *id_args, EPS)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got, want = compiled(leaves[0]), fn(leaves[0])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    grads = [torch.autograd.grad(out.sum(), leaves[0])[0] for out in (got, want)]
    torch.testing.assert_close(*grads, rtol=0, atol=0)


def _set(index: int, value):
    def change(args: list) -> None:
        args[index] = value(args[index])

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(0, lambda t: t + 6), "input_ids values must be in [0, 6) (word_embeddings has 6"),
        (_set(7, lambda t: -t - 1), "position_ids values must be in [0, 8)"),
        (_set(10, lambda t: t + 2), "mixed_token_type_ids values must be in [0, 2)"),
        (_set(0, lambda t: t.int()), "input_ids must be an int64 CPU tensor"),
        (_set(9, lambda t: t[:, :3]), "mixed_position_ids must have shape [2, 5]"),
        (_set(8, lambda t: t[:1]), "token_type_ids must have shape [2, 3, 5]"),
        (_set(1, lambda t: t.half()), "word_embeddings must be float32 or float64"),
        (_set(3, lambda t: t.double()), "token_type_embeddings must have the data's dtype"),
        (_set(2, lambda t: t[:, :4].contiguous()), "must have d = 8 columns"),
        (_set(6, lambda t: t[:2]), "vectors must have shape (N, d) = (3, 8)"),
        (_set(5, lambda t: t[:3]), "ln_weight and ln_bias must have shape (8)"),
        (_set(11, lambda t: 0.0), "eps must be positive"),
    ],
)
def test_embed_mux_checks_its_arguments(change, message):
    args = [*_inputs(2, 3, 5, 8, 6, torch.float32), EPS]
    change(args)
    pattern = "".join("\\" + c if c in "[]()" else c for c in message)
    with pytest.raises(RuntimeError, match=pattern):
        cpu_op("embed_mux_fwd")(*args)
    grad_x = torch.ones(2, 5, 8)
    with pytest.raises(RuntimeError, match=pattern):
        cpu_op("embed_mux_bwd")(grad_x, *args)


def test_embed_mux_bwd_checks_grad_x():
    args = _inputs(2, 3, 5, 8, 6, torch.float32)
    with pytest.raises(RuntimeError, match=r"grad_x must be a contiguous Float CPU tensor"):
        cpu_op("embed_mux_bwd")(torch.ones(2, 5, 7), *args, EPS)
