"""The cpu backend's compiled kernels (csrc/cpu/, ``muxkernels._C_cpu``).

The operators ``demux_gather_{fwd,bwd}_cpu``, ``index_demux_{fwd,bwd}_cpu`` and
``index_pos_demux_{fwd,bwd}_cpu``: the demux core against the
float64 reference formula on NaN-poisoned memory, gradcheck in float64, opcheck, their
argument checks, reductions that do not depend on the thread count, and what
``muxkernels info`` says. The public ops on the cpu backend run them in
tests/test_cpu_backend.py (both forms) and in the op tables of the other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    KERNEL,
    assert_close,
    assert_thread_count_independent,
    cpu_op,
    randn,
    require_cpu_kernels,
)

from muxkernels._cpu import kernels

require_cpu_kernels()

EPS = 1e-5
GATHERS = ("token", "sequence", "selected")


def _terms(groups, a_groups, n, length, d, dtype, gather, seed=0):
    a = randn(a_groups, n, d, generator=seed, dtype=dtype)
    c = randn(groups, length, d, generator=seed + 1, dtype=dtype)
    w = randn(d, generator=seed + 2, dtype=dtype)
    b = randn(d, generator=seed + 3, dtype=dtype)
    index = None
    if gather == "selected":
        index = torch.randint(0, n, (groups, length), generator=torch.Generator().manual_seed(seed))
    return a, c, w, b, index


def _reference(a, c, w, b, gather, index, position):
    """u from the formula, in float64: LN(gelu(a[g',i] + c[g,t])) gathered."""
    a, c, w, b = (t.double() for t in (a, c, w, b))
    a = a.expand(c.shape[0], *a.shape[1:])
    if gather == "token":
        pre = a.unsqueeze(2) + c.unsqueeze(1)
    elif gather == "sequence":
        pre = a + c[:, position : position + 1]
    else:
        pre = torch.gather(a, 1, index.unsqueeze(2).expand(*c.shape)) + c
    return F.layer_norm(F.gelu(pre), (c.shape[-1],), w, b, EPS)


def _poison(numel: int, dtype: torch.dtype) -> None:
    """Frees a NaN block the next output of that size most likely reuses."""
    poison = torch.full((numel,), float("nan"), dtype=dtype)
    del poison


SIZES = [  # (B', Ga, N, L', d): odd sizes, N = 1, a broadcast, several chunks
    (2, 2, 3, 5, 97),
    (3, 1, 1, 1, 8),
    (1, 1, 4, 7, 33),
    (5, 1, 4, 50, 97),
    (5, 5, 4, 50, 97),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("size", SIZES)
def test_demux_gather_matches_the_formula(size, gather, dtype):
    groups, a_groups, n, length, d = size
    a, c, w, b, index = _terms(groups, a_groups, n, length, d, dtype, gather)
    position = length - 1
    _poison(groups * n * length * d, dtype)
    u = cpu_op("demux_gather_fwd")(a, c, w, b, EPS, gather, index, position, dtype)
    assert_close(u, _reference(a, c, w, b, gather, index, position), KERNEL)

    leaves = [t.double().requires_grad_() for t in (a, c, w, b)]
    want_u = _reference(*leaves, gather, index, position)
    grad_u = randn(*want_u.shape, generator=7, dtype=dtype)
    want = torch.autograd.grad(want_u, leaves, grad_u.double())
    got = cpu_op("demux_gather_bwd")(grad_u, a, c, w, b, EPS, gather, index, position)
    for name, g, ref in zip(("da", "dc", "d_ln_weight", "d_ln_bias"), got, want, strict=True):
        # a gradient sums many rows: bound it by the magnitude of its terms
        assert_close(g, ref, KERNEL, magnitude=ref.abs().max().expand_as(ref), what=name)


@pytest.mark.parametrize("gather", GATHERS)
def test_demux_gather_reductions_do_not_depend_on_the_thread_count(gather):
    a, c, w, b, index = _terms(7, 1, 4, 60, 97, torch.float32, gather)
    grad_u = randn(*cpu_op("demux_gather_fwd")(a, c, w, b, EPS, gather, index, 3, a.dtype).shape,
                   generator=5, dtype=torch.float32)  # fmt: skip
    assert_thread_count_independent(
        lambda: cpu_op("demux_gather_bwd")(grad_u, a, c, w, b, EPS, gather, index, 3)
    )


def _demux_inputs(groups, n, length, d, dtype, seed=0):
    return (
        randn(groups, length, d, generator=seed, dtype=dtype),
        randn(d, 2 * d, generator=seed + 1, dtype=dtype, scale=d**-0.5),
        randn(d, generator=seed + 2, dtype=dtype),
        randn(d, generator=seed + 3, dtype=dtype),
        randn(d, generator=seed + 4, dtype=dtype),
    )


@pytest.mark.parametrize("gather", GATHERS)
def test_index_demux_gradcheck(gather):
    n, length = 2, 5
    inputs = [t.requires_grad_() for t in _demux_inputs(2, n, length, 6, torch.float64)]
    index = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]]) if gather == "selected" else None

    def fn(*leaves):
        return kernels.index_demux(*leaves, n, EPS, gather, index)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("gather", GATHERS)
def test_index_pos_demux_gradcheck(gather):
    hidden, weight, bias, ln_w, ln_b = _demux_inputs(2, 3, 5, 6, torch.float64)
    keys = randn(3, 6, generator=11, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (hidden, keys, weight, bias, ln_w, ln_b)]
    index = torch.randint(0, 3, (2, 5), generator=torch.Generator().manual_seed(1))
    index = index if gather == "selected" else None

    def fn(*leaves):
        return kernels.index_pos_demux(*leaves, EPS, gather, index)

    assert torch.autograd.gradcheck(fn, inputs)


def _opcheck_cases():
    for gather in GATHERS:
        for dtype in (torch.float32, torch.float64):
            yield gather, dtype


@pytest.mark.parametrize(("gather", "dtype"), list(_opcheck_cases()))
def test_opcheck(gather, dtype):
    a, c, w, b, index = _terms(2, 1, 3, 5, 8, dtype, gather)
    torch.library.opcheck(cpu_op("demux_gather_fwd"), (a, c, w, b, EPS, gather, index, 2, dtype))
    grad_u = torch.ones_like(cpu_op("demux_gather_fwd")(a, c, w, b, EPS, gather, index, 2, dtype))
    torch.library.opcheck(cpu_op("demux_gather_bwd"), (grad_u, a, c, w, b, EPS, gather, index, 2))
    hidden, weight, bias, ln_w, ln_b = _demux_inputs(2, 3, 6, 8, dtype)
    index = None if gather != "selected" else torch.randint(0, 3, (2, 6))
    args = (hidden, weight, bias, ln_w, ln_b, 3, EPS, gather, index)
    torch.library.opcheck(cpu_op("index_demux_fwd"), args)
    u, a, c = cpu_op("index_demux_fwd")(*args)
    torch.library.opcheck(
        cpu_op("index_demux_bwd"), (torch.ones_like(u), hidden, weight, a, c, ln_w, ln_b, *args[5:])
    )
    keys = randn(3, 8, generator=12, dtype=dtype)
    args = (hidden, keys, weight, bias, ln_w, ln_b, EPS, gather, index)
    torch.library.opcheck(cpu_op("index_pos_demux_fwd"), args)
    u, a, c = cpu_op("index_pos_demux_fwd")(*args)
    grad_args = (torch.ones_like(u), hidden, keys, weight, a, c, ln_w, ln_b, *args[6:])
    torch.library.opcheck(cpu_op("index_pos_demux_bwd"), grad_args)


def test_index_demux_compiles_fullgraph():
    hidden, weight, bias, ln_w, ln_b = _demux_inputs(2, 3, 6, 8, torch.float32)

    def fn(h):
        return kernels.index_demux(h, weight, bias, ln_w, ln_b, 3, EPS, "token", None)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(hidden), fn(hidden), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x: x.update(a=x["a"].half()), "a must have the data's dtype"),
        (lambda x: x.update(c=x["c"].half(), a=x["a"].half()), "c must be float32 or float64"),
        (lambda x: x.update(a=x["a"][:, :, :4].contiguous()), "a must have shape"),
        (lambda x: x.update(ln_bias=x["ln_bias"][:3]), "ln_weight and ln_bias must have shape"),
        (lambda x: x.update(index=x["index"] + 3), "index values must be in [0, N) = [0, 3)"),
        (lambda x: x.update(index=None), "index is required"),
        (lambda x: x.update(gather="tokens"), "gather must be"),
        (lambda x: x.update(eps=0.0), "eps must be positive"),
        (lambda x: x.update(c=x["c"].unsqueeze(0)), "must have rank 3"),
    ],
)
def test_demux_gather_checks_its_arguments(change, message):
    a, c, w, b, index = _terms(2, 2, 3, 5, 8, torch.float32, "selected")
    x = {
        "a": a,
        "c": c,
        "ln_weight": w,
        "ln_bias": b,
        "eps": EPS,
        "gather": "selected",
        "index": index,
    }
    change(x)
    with pytest.raises(
        RuntimeError, match=message.replace("[", r"\[").replace(")", r"\)").replace("(", r"\(")
    ):
        cpu_op("demux_gather_fwd")(
            x["a"], x["c"], x["ln_weight"], x["ln_bias"], x["eps"], x["gather"], x["index"], 0,
            x["c"].dtype,
        )  # fmt: skip


def test_index_demux_checks_its_arguments():
    hidden, weight, bias, ln_w, ln_b = _demux_inputs(2, 3, 6, 8, torch.float32)
    with pytest.raises(RuntimeError, match=r"num_instances must be in \[1, L'\) = \[1, 6\)"):
        cpu_op("index_demux_fwd")(hidden, weight, bias, ln_w, ln_b, 6, EPS, "token", None)
    with pytest.raises(RuntimeError, match=r"weight must have shape \(8, 16\)"):
        cpu_op("index_demux_fwd")(
            hidden, weight[:, :8].contiguous(), bias, ln_w, ln_b, 3, EPS, "token", None
        )


def test_index_pos_demux_checks_its_arguments():
    hidden, weight, bias, ln_w, ln_b = _demux_inputs(2, 3, 6, 8, torch.float32)
    keys = randn(3, 8, generator=12, dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"keys must have shape \(N, 8\)"):
        cpu_op("index_pos_demux_fwd")(hidden, keys[:, :4].contiguous(), weight, bias, ln_w, ln_b,
                                  EPS, "token", None)  # fmt: skip
    with pytest.raises(RuntimeError, match="keys must have the data's dtype"):
        cpu_op("index_pos_demux_fwd")(hidden, keys.double(), weight, bias, ln_w, ln_b, EPS,
                                  "token", None)  # fmt: skip


def test_info_says_the_cpu_kernels_are_loaded():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-m", "muxkernels", "info"], capture_output=True, text=True, env=env,
        check=True,
    ).stdout  # fmt: skip
    assert "compiled cpu kernels muxkernels._C_cpu: loaded" in out
