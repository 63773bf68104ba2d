"""The cpu backend's size-dependent forms against the float64 reference.

The cpu backend picks, by input size, the form with the fewest ATen calls (small inputs)
or the least arithmetic (large ones), and builds the projected token gather a few groups
at a time past ``CHUNK_BYTES``; the op tables of the other tests use small inputs only.
Here every demultiplexer and gather runs on both sides of ``SMALL_ELEMENTS`` and across
chunks, in float32, float64 and bfloat16 (computed in float32), forward and gradients,
each test twice: with the compiled kernels (``muxkernels._C_cpu``, where built) and in the
ATen form the backend runs without them.
"""

from __future__ import annotations

import pytest
import torch
from helpers import BACKEND, assert_close, float64_grads, randn

import muxkernels as mk
import muxkernels._cpu as cpu_backend
from muxkernels import reference
from muxkernels._cpu import _chunks, _compiled, demultiplex, multiplex


@pytest.fixture(autouse=True, params=["kernels", "aten"])
def form(request, monkeypatch):
    """The demuxes and embed_mux with the compiled kernels, or in ATen ops as without them."""
    if request.param == "kernels" and not _compiled.available():
        pytest.skip(f"muxkernels._C_cpu is not built ({_compiled.load_error()!r})")
    if request.param == "aten":
        monkeypatch.setattr(cpu_backend, "runs_kernels", lambda data: False)
    return request.param


N, D = 3, 16
# (B', L): B'·L'·d below SMALL_ELEMENTS, and above it (L' = L + N + 1)
SIZES = {"small": (2, 5), "large": (3, _chunks.SMALL_ELEMENTS // (3 * D) + 1)}
GATHERS = ("token", "sequence", "selected")


def _inputs(groups: int, length: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    prefixed = length + N + 1
    return {
        "hidden": randn(groups, prefixed, D, generator=1, dtype=dtype),
        "weight": randn(D, 2 * D, generator=2, dtype=dtype, scale=D**-0.5),
        "bias": randn(D, generator=3, dtype=dtype),
        "ln_weight": randn(D, generator=4, dtype=dtype),
        "ln_bias": randn(D, generator=5, dtype=dtype),
        "keys": randn(N, D, generator=6, dtype=dtype),
        "proj_weight": randn(5, D, generator=7, dtype=dtype, scale=D**-0.5),
        "proj_bias": randn(5, generator=8, dtype=dtype),
    }


def _index(groups: int, length: int) -> torch.Tensor:
    return torch.randint(0, N, (groups, length), generator=torch.Generator().manual_seed(9))


def _index_demux(x, gather, index, backend, project=False):
    demux = (x["hidden"], x["weight"], x["bias"], x["ln_weight"], x["ln_bias"])
    kwargs = {"num_instances": N, "gather": gather, "index": index, "backend": backend}
    if project:
        return mk.index_demux_logits(*demux, x["proj_weight"], x["proj_bias"], **kwargs)
    return mk.index_demux(*demux, **kwargs)


def _index_pos_demux(x, gather, index, backend):
    args = (x["hidden"], x["keys"], x["weight"], x["bias"], x["ln_weight"], x["ln_bias"])
    return mk.index_pos_demux(*args, gather=gather, index=index, backend=backend)


DEMUX = ("hidden", "weight", "bias", "ln_weight", "ln_bias")
READS = {  # the inputs each case reads (its differentiable leaves)
    "index_demux": DEMUX,
    "index_demux_logits": (*DEMUX, "proj_weight", "proj_bias"),
    "index_pos_demux": (*DEMUX, "keys"),
}
CASES = {
    "index_demux": lambda x, g, i, be: _index_demux(x, g, i, be),
    "index_demux_logits": lambda x, g, i, be: _index_demux(x, g, i, be, project=True),
    "index_pos_demux": _index_pos_demux,
}


def _index_for(gather: str, x: dict[str, torch.Tensor]) -> torch.Tensor | None:
    if gather != "selected":
        return None
    return _index(*x["hidden"].shape[:2])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_forward_matches_float64_reference(case, gather, size, dtype):
    x = _inputs(*SIZES[size], dtype)
    index = _index_for(gather, x)
    got = CASES[case](x, gather, index, "cpu")
    x64 = {k: v.double() for k, v in x.items()}
    want = CASES[case](x64, gather, index, "reference")
    assert got.dtype == dtype
    assert_close(got, want, BACKEND)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("case", CASES)
def test_gradients_match_float64_reference(case, gather, size):
    x = _inputs(*SIZES[size], torch.float32)
    index = _index_for(gather, x)
    names = READS[case]

    def run(backend):
        def call(*leaves):
            return CASES[case](
                dict(x, **dict(zip(names, leaves, strict=True))), gather, index, backend
            )

        return call

    leaves = [x[name].clone().requires_grad_() for name in names]
    out = run("cpu")(*leaves)
    grad_out = randn(*out.shape, generator=10, dtype=out.dtype)
    got = torch.autograd.grad(out, leaves, grad_out)
    want = float64_grads(run("reference"), [x[name] for name in names], grad_out)
    for name, g, w in zip(names, got, want, strict=True):
        assert_close(g, w, BACKEND, what=name)


def test_projected_token_gather_in_chunks(monkeypatch):
    """Chunks of one group each (the chunk's intermediates exceed CHUNK_BYTES): the same
    logits as in one piece."""
    x = _inputs(4, 6, torch.float64)
    whole = _index_demux(x, "token", None, "cpu", project=True)
    monkeypatch.setattr(_chunks, "CHUNK_BYTES", 1)
    assert len(_chunks.group_chunks(4, 10)) == 4
    chunked = _index_demux(x, "token", None, "cpu", project=True)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", SIZES)
def test_selected_gather_reads_only_the_prefix_rows(size):
    """The selected gather's p is h[g, index[g,t]] among the N prefix rows: changing any
    other hidden row changes only the c term of its own position."""
    groups, length = SIZES[size]
    x = _inputs(groups, length, torch.float64)
    index = _index(groups, length + N + 1)
    base = _index_demux(x, "selected", index, "cpu")
    moved = dict(x, hidden=x["hidden"].clone())
    moved["hidden"][:, -1] += 1.0  # the last position: never an index row (L >= 1)
    changed = _index_demux(moved, "selected", index, "cpu")
    torch.testing.assert_close(changed[:, :-1], base[:, :-1], rtol=0, atol=0)
    want = reference.index_demux(
        *(moved[k] for k in ("hidden", "weight", "bias", "ln_weight", "ln_bias")),
        N,
        1e-5,
        "selected",
        index,
    )
    torch.testing.assert_close(changed, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("per_row_ids", [False, True])
def test_embed_mux_chunks_only_without_gradients(monkeypatch, per_row_ids, form):
    """In the ATen form, embed_mux is built one group at a time past CHUNK_BYTES without
    gradients, with the same output as in one piece; with gradients it stays in one piece
    (one word lookup), shared (L,) and per-row ids alike. (The compiled kernel builds each
    output row in cache, and is not chunked.)"""
    if form == "kernels":
        pytest.skip("the compiled embed_mux kernel does not chunk")
    groups, n, length, d, vocab = 4, 3, 5, 8, 11
    gen = torch.Generator().manual_seed(0)
    tables = [
        randn(rows, d, generator=i, dtype=torch.float64) for i, rows in enumerate((vocab, 9, 2))
    ]
    affine = [
        randn(d, generator=3, dtype=torch.float64),
        randn(d, generator=4, dtype=torch.float64),
    ]
    leaves = [t.requires_grad_() for t in (*tables, *affine)]
    input_ids = torch.randint(0, vocab, (groups, n, length), generator=gen)
    if per_row_ids:
        ids = {
            "position_ids": torch.randint(0, 9, (groups, n, length), generator=gen),
            "token_type_ids": torch.randint(0, 2, (groups, n, length), generator=gen),
            "mixed_position_ids": torch.randint(0, 9, (groups, length), generator=gen),
        }
    else:
        ids = {"position_ids": torch.arange(length), "mixed_position_ids": torch.arange(length)}
    vectors = randn(n, d, generator=5, dtype=torch.float64)

    def run():
        x = mk.embed_mux(input_ids, *leaves, vectors, **ids, backend="cpu")
        return x, torch.autograd.grad(x, leaves, torch.ones_like(x))

    whole, whole_grads = run()
    with torch.no_grad():
        whole_inference = mk.embed_mux(input_ids, *leaves, vectors, **ids, backend="cpu")
    monkeypatch.setattr(_chunks, "CHUNK_BYTES", 1)
    assert len(_chunks.group_chunks(groups, 10)) == groups
    lookups = []
    embedding = torch.nn.functional.embedding
    monkeypatch.setattr(
        torch.nn.functional, "embedding", lambda i, t: lookups.append(t) or embedding(i, t)
    )
    with torch.no_grad():
        chunked = mk.embed_mux(input_ids, *leaves, vectors, **ids, backend="cpu")
    assert sum(t is leaves[0] for t in lookups) == groups  # one lookup of words per chunk
    torch.testing.assert_close(chunked, whole_inference, rtol=0, atol=1e-12)
    torch.testing.assert_close(chunked, whole.detach(), rtol=0, atol=1e-12)
    lookups.clear()
    trained, trained_grads = run()
    # with gradients, one piece: one dense word-table gradient, not one per chunk
    assert sum(t is leaves[0] for t in lookups) == 1
    torch.testing.assert_close(trained, whole, rtol=0, atol=1e-12)
    for got, want in zip(trained_grads, whole_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def _hadamard_case(x: dict[str, torch.Tensor], backend: str) -> torch.Tensor:
    return mk.hadamard_mux(x["embeddings"], x["vectors"], backend=backend)


def _embed_case(x: dict[str, torch.Tensor], backend: str) -> torch.Tensor:
    tables = (x["word"], x["position"], x["token_type"], x["ln_weight"], x["ln_bias"])
    return mk.embed_mux(x["ids"], *tables, x["vectors"], backend=backend)


SUMS = {  # the ops that sum over instances, their inputs (float ones are differentiable)
    "hadamard_mux": (
        _hadamard_case,
        {"embeddings": (3, N, 5, D), "vectors": (N, D)},
    ),
    "embed_mux": (
        _embed_case,
        {"word": (7, D), "position": (5, D), "token_type": (2, D), "ln_weight": (D,),
         "ln_bias": (D,), "vectors": (N, D)},
    ),
}  # fmt: skip


@pytest.mark.parametrize("form", ["product", "running"])
@pytest.mark.parametrize("op", SUMS)
def test_sums_over_instances_in_both_forms(monkeypatch, op, form):
    """The product-and-reduce form (small inputs) and the running sum (past
    RUNNING_SUM_ELEMENTS): output and gradients against the float64 reference, in
    inference and with gradients."""
    monkeypatch.setattr(multiplex, "RUNNING_SUM_ELEMENTS", 0 if form == "running" else 1 << 40)
    case, shapes = SUMS[op]
    x = {k: randn(*shape, generator=i) for i, (k, shape) in enumerate(shapes.items())}
    x["ids"] = torch.randint(0, 7, (3, N, 5), generator=torch.Generator().manual_seed(9))
    names = list(shapes)

    def run(backend):
        return lambda *leaves: case(dict(x, **dict(zip(names, leaves, strict=True))), backend)

    _assert_cpu_matches_reference(run, [x[k] for k in names], names)


def _assert_cpu_matches_reference(run, inputs: list[torch.Tensor], names: list[str]) -> None:
    """``run(backend)(*inputs)`` on the cpu backend, in inference and with gradients,
    against the reference in float64: the output and every input's gradient."""
    want = run("reference")(*(t.double() for t in inputs))
    with torch.no_grad():
        assert_close(run("cpu")(*inputs), want, BACKEND)
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = run("cpu")(*leaves)
    assert_close(out, want, BACKEND)
    grad_out = randn(*out.shape, generator=10)
    got = torch.autograd.grad(out, leaves, grad_out)
    want_grads = float64_grads(run("reference"), inputs, grad_out)
    for name, g, w in zip(names, got, want_grads, strict=True):
        assert_close(g, w, BACKEND, what=name)


@pytest.mark.parametrize("form", ["stacked", "branch_by_branch"])
def test_mlp_demux_in_both_forms(monkeypatch, form):
    """The stacked GEMM (small inputs) and the branch-by-branch loop (large ones), in
    inference and with gradients: output and gradients against the float64 reference."""
    by_branch = form == "branch_by_branch"
    monkeypatch.setattr(demultiplex, "RUNNING_SUM_ELEMENTS", 0 if by_branch else 1 << 40)
    monkeypatch.setattr(demultiplex, "LAST_LEVEL_BYTES", 0 if by_branch else 1 << 40)
    shapes = {"hidden": (2, 5, D), "weight": (N, D, D), "bias": (N, D), "ln_weight": (N, D),
              "ln_bias": (N, D)}  # fmt: skip
    x = {k: randn(*shape, generator=i) for i, (k, shape) in enumerate(shapes.items())}
    names = list(shapes)

    def run(backend):
        return lambda *leaves: mk.mlp_demux(*leaves, backend=backend)

    _assert_cpu_matches_reference(run, [x[k] for k in names], names)
