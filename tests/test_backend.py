"""Backend choice: the backend= argument, the MUXKERNELS_BACKEND variable, and "auto".

A backend asked for explicitly that an op lacks, or that cannot run here, is an error
naming the op and who asked for it; "auto" on CPU is the cpu backend (the reference for
an op without one). With the compiled
extension built, backend="cuda" on CPU tensors runs its CPU implementation through
muxkernels.HadamardMux and must match the reference forward and backward.
"""

from __future__ import annotations

import helpers
import pytest
import torch

import muxkernels
from muxkernels import _backend, _extension, _opdefs, _triton

N, D, L, GROUPS = 3, 4, 2, 2
CPU = torch.device("cpu")
ENV_SOURCE = "the MUXKERNELS_BACKEND environment variable"


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return helpers.randn(*shape, generator=seed, dtype=dtype)


def run_op(op: str, backend: str) -> torch.Tensor:
    """Call the functional op ``op`` on small valid CPU inputs."""
    embeddings = randn(GROUPS * N, L, D)
    hidden = randn(GROUPS, N + 1 + L, D, seed=1)
    dense = {
        "weight": randn(D, 2 * D, seed=2),
        "bias": randn(D, seed=3),
        "ln_weight": randn(D, seed=4),
        "ln_bias": randn(D, seed=5),
    }
    if op == "hadamard_mux":
        return muxkernels.hadamard_mux(embeddings, randn(N, D, seed=6), backend=backend)
    if op == "ortho_mux":
        return muxkernels.ortho_mux(embeddings, randn(N, D, D, seed=6), backend=backend)
    if op == "lowrank_ortho_mux":
        u, h = randn(D, D, seed=6), randn(D, D, seed=7)
        return muxkernels.lowrank_ortho_mux(embeddings, u, h, num_instances=N, backend=backend)
    if op == "index_demux":
        return muxkernels.index_demux(hidden, **dense, num_instances=N, backend=backend)
    if op == "index_pos_demux":
        return muxkernels.index_pos_demux(hidden, randn(N, D, seed=6), **dense, backend=backend)
    mlp = {
        "weight": randn(N, D, D, seed=2),
        "bias": randn(N, D, seed=3),
        "ln_weight": randn(N, D, seed=4),
        "ln_bias": randn(N, D, seed=5),
    }
    return muxkernels.mlp_demux(hidden, **mlp, backend=backend)


OPS = [
    "hadamard_mux",
    "ortho_mux",
    "lowrank_ortho_mux",
    "index_demux",
    "index_pos_demux",
    "mlp_demux",
]
OPS_WITHOUT_CUDA = ["ortho_mux", "lowrank_ortho_mux", "mlp_demux"]

needs_extension = pytest.mark.skipif(
    not _extension.load(), reason="the compiled extension muxkernels._C is not built"
)


@pytest.fixture(autouse=True)
def _no_backend_variable(monkeypatch):
    monkeypatch.delenv(_backend.ENV_VAR, raising=False)


@pytest.fixture
def no_extension(monkeypatch):
    monkeypatch.setattr(_extension, "load", lambda: False)


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'gpu'"):
        _backend.resolve("hadamard_mux", "gpu", CPU, ("cuda",))


@pytest.mark.parametrize("op", OPS)
def test_every_op_rejects_unknown_backend(op):
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'fastest'"):
        run_op(op, "fastest")


def test_auto_on_cpu_is_the_cpu_backend_else_the_reference():
    assert _backend.resolve("hadamard_mux", "auto", CPU, ("cuda", "triton", "cpu")) == "cpu"
    assert _backend.resolve("hadamard_mux", "auto", CPU, ("cuda", "triton")) == "reference"


def test_cpu_backend_on_a_cuda_tensor_says_it_runs_on_the_cpu():
    cuda = torch.device("cuda")
    assert _backend.resolve("op", "auto", cuda, ("cpu",)) == "reference"
    with pytest.raises(RuntimeError, match=r"backend 'cpu' .*runs on CPU tensors, got cuda"):
        _backend.resolve("op", "cpu", cuda, ("cpu",))


@pytest.mark.parametrize("op", OPS)
def test_every_op_auto_on_cpu_runs_the_cpu_backend(op, monkeypatch):
    calls = []
    real = _backend.resolve

    def spy(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(_backend, "resolve", spy)
    helpers.assert_close(run_op(op, "auto"), run_op(op, "reference"), helpers.BACKEND)
    assert calls == ["cpu", "reference"]


@pytest.mark.parametrize("value", ["reference", " Reference "])
def test_variable_forces_backend(monkeypatch, value):
    monkeypatch.setenv(_backend.ENV_VAR, value)
    assert _backend.resolve("hadamard_mux", "auto", CPU, ("cuda",)) == "reference"


@pytest.mark.parametrize("op", OPS)
def test_triton_on_cpu_without_interpreter_names_op_and_variable(monkeypatch, op):
    # Triton decides at import whether to interpret: import the kernels with the
    # environment the run started with, before unsetting the variable for this test.
    _triton.load()
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv(_backend.ENV_VAR, "triton")
    with pytest.raises(
        RuntimeError, match=f"{op}: backend 'triton' .*{ENV_SOURCE}.*TRITON_INTERPRET=1"
    ):
        run_op(op, "auto")


def test_invalid_variable_names_the_variable(monkeypatch):
    monkeypatch.setenv(_backend.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="MUXKERNELS_BACKEND='fast' is not one of"):
        run_op("hadamard_mux", "auto")


@pytest.mark.parametrize("value", ["triton", "cuda", "fast"])
@pytest.mark.parametrize("op", OPS)
def test_backend_argument_wins_over_variable(monkeypatch, op, value):
    """With the variable consulted, each of these values would raise."""
    monkeypatch.setenv(_backend.ENV_VAR, value)
    run_op(op, "reference")


def test_missing_operator_is_named(monkeypatch):
    monkeypatch.setattr(_backend, "usable", lambda backend, device: (True, ""))
    with pytest.raises(RuntimeError, match="lacks the operators muxkernels::nothing_cuda; rebuild"):
        _backend.resolve("hadamard_mux", "cuda", CPU, ("cuda",), ("nothing",))


def test_auto_skips_a_backend_missing_an_operator(monkeypatch):
    monkeypatch.setattr(_backend, "usable", lambda backend, device: (True, ""))
    cuda = torch.device("cuda")
    assert _backend.resolve("op", "auto", cuda, ("cuda", "triton"), ("nothing",)) == "reference"


@needs_extension
def test_auto_prefers_the_fused_projection_for_logits(monkeypatch):
    """index_demux_logits with K <= 64: auto picks the backend whose kernel never writes u."""
    from muxkernels.ops import demux_gather as dg

    _triton.load()
    monkeypatch.setattr(_backend, "usable", lambda backend, device: (True, ""))
    cuda = torch.device("cuda")
    assert _backend.resolve("index_demux", "auto", cuda, dg.KERNEL_BACKENDS, dg.KERNELS) == "cuda"
    fused = _backend.resolve("index_demux", "auto", cuda, dg.PROJECT_BACKENDS, dg.KERNELS)
    assert _opdefs.has_operator(dg.PROJECT_KERNEL, fused)


@pytest.mark.parametrize("op", OPS_WITHOUT_CUDA)
def test_cuda_argument_for_op_without_cuda_kernel(op):
    with pytest.raises(NotImplementedError, match=f"{op} has no 'cuda' backend.*backend argument"):
        run_op(op, "cuda")


@pytest.mark.usefixtures("no_extension")
@pytest.mark.parametrize("by_variable", [False, True], ids=["argument", "variable"])
def test_cuda_without_extension_says_how_to_build(monkeypatch, by_variable):
    backend = "cuda"
    source = "backend argument"
    if by_variable:
        monkeypatch.setenv(_backend.ENV_VAR, "cuda")
        backend, source = "auto", ENV_SOURCE
    with pytest.raises(
        RuntimeError,
        match=f"hadamard_mux: backend 'cuda' .*{source}.*MUXKERNELS_BUILD_CUDA=1 pip install",
    ):
        run_op("hadamard_mux", backend)


@pytest.mark.usefixtures("no_extension")
def test_auto_without_extension_is_reference(monkeypatch):
    monkeypatch.setattr(_backend, "_warned_extension_missing", False)  # said once a process
    with pytest.warns(_backend.ExtensionMissingWarning, match="cannot use the compiled CUDA"):
        chosen = _backend.resolve("hadamard_mux", "auto", torch.device("cuda"), ("cuda",))
    assert chosen == "reference"


@needs_extension
@pytest.mark.parametrize(
    ("dtype", "vector_dtype"),
    [
        (torch.float64, torch.float64),
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.float32),
    ],
    ids=["float64", "float32", "bfloat16-data-float32-vectors"],
)
@pytest.mark.parametrize("learn", [False, True], ids=["frozen", "learned"])
def test_compiled_cpu_hadamard_matches_reference(dtype, vector_dtype, learn):
    def forward_backward(backend: str):
        embeddings = randn(GROUPS * N, L, D, dtype=dtype).requires_grad_()
        vectors = randn(N, D, dtype=vector_dtype, seed=1).requires_grad_(learn)
        out = muxkernels.hadamard_mux(embeddings, vectors, backend=backend)
        out.backward(randn(*out.shape, dtype=dtype, seed=2))
        return out, embeddings.grad, vectors.grad

    out, d_embeddings, d_vectors = forward_backward("cuda")
    assert type(out.grad_fn).__name__ == "HadamardMuxBackward"
    ref_out, ref_d_embeddings, ref_d_vectors = forward_backward("reference")
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(d_embeddings, ref_d_embeddings)
    if learn:
        torch.testing.assert_close(d_vectors, ref_d_vectors)
    else:
        assert d_vectors is None


@needs_extension
def test_compiled_cpu_hadamard_gradcheck():
    embeddings = randn(GROUPS, N, L, D, dtype=torch.float64).requires_grad_()
    vectors = randn(N, D, dtype=torch.float64, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda e, v: muxkernels.HadamardMux.apply(e, v, "cuda"), (embeddings, vectors)
    )
