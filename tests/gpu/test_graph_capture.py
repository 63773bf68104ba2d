"""On a CUDA device: the ops that take ids capture into a CUDA graph on every backend.

``embed_mux`` and the selected gather check their ids' values with a host read, which a
graph capture cannot hold; the check is skipped while capturing (``data_checks_run``),
so the bench times these ops' eager and kernel rows from graph replays as it does the
compiled ones. Outside a capture bad ids still fail with the error that names them.
"""

from __future__ import annotations

import pytest
import torch

import muxkernels as mk
from muxkernels import _backend
from muxkernels.ops.demux_gather import KERNEL_BACKENDS as DEMUX_BACKENDS
from muxkernels.ops.embed_mux import KERNEL_BACKENDS as EMBED_BACKENDS

pytestmark = pytest.mark.gpu

N, GROUPS, LENGTH, D, VOCAB = 3, 2, 7, 64, 50


def _usable(backends: tuple[str, ...]) -> list[str]:
    cuda = torch.device("cuda")
    return ["reference", *(b for b in backends if _backend.usable(b, cuda)[0])]


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, device="cuda")


def _replayed(fn, ids: torch.Tensor, new_ids: torch.Tensor) -> torch.Tensor:
    """fn(ids) captured in a graph, replayed after new_ids were copied into ids."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn(ids)  # warm-up: compiles, allocates, checks the ids
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(ids)
    ids.copy_(new_ids)
    graph.replay()
    torch.cuda.synchronize()
    return out.clone()


@pytest.mark.parametrize("backend", _usable(EMBED_BACKENDS))
def test_embed_mux_captures(backend):
    tables = (_randn(VOCAB, D), _randn(LENGTH, D), _randn(1, D), _randn(D), _randn(D))
    vectors = _randn(N, D)

    def embed(ids):
        return mk.embed_mux(ids, *tables, vectors, backend=backend)

    ids = torch.randint(0, VOCAB, (GROUPS * N, LENGTH), device="cuda")
    new_ids = torch.randint(0, VOCAB, ids.shape, device="cuda")
    torch.testing.assert_close(_replayed(embed, ids, new_ids), embed(new_ids))
    with pytest.raises(ValueError, match=rf"input_ids holds values in \[.*, {VOCAB}\] but"):
        embed(torch.full_like(ids, VOCAB))


@pytest.mark.parametrize("backend", _usable(DEMUX_BACKENDS))
def test_selected_gather_captures(backend):
    length = LENGTH + N + 1
    hidden, params = (
        _randn(GROUPS, length, D),
        (_randn(D, 2 * D) / D, _randn(D), _randn(D), _randn(D)),
    )

    def demux(index):
        return mk.index_demux(hidden, *params, num_instances=N, gather="selected", index=index,
                              backend=backend)  # fmt: skip

    index = torch.randint(0, N, (GROUPS, length), device="cuda")
    new_index = torch.randint(0, N, index.shape, device="cuda")
    torch.testing.assert_close(_replayed(demux, index, new_index), demux(new_index))
    with pytest.raises(ValueError, match=r"index holds values in \[-1, -1\] but instance"):
        demux(torch.full_like(index, -1))
