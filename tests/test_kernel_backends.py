"""Every public op through every kernel backend that can run on this machine's CPU.

"triton" runs under the interpreter (TRITON_INTERPRET=1) and "cuda" through the CPU
implementations of the compiled operators. Each op, gather and backend: the forward
against the reference in float32 and float64, the gradients of every floating input
against autograd through the reference in float64, and a float64 gradcheck of the
autograd Function (fast mode: the interpreter is slow).
"""

from __future__ import annotations

import pytest
import torch
from kernel_ops import BACKENDS_OF, runnable

import muxkernels as mk
from muxkernels import transforms

N, D, L, GROUPS, K = 3, 7, 2, 2, 5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, dtype: torch.dtype, seed: int, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(*shape, generator=_gen(seed), dtype=torch.float64)).to(dtype)


def _inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    length = L + N + 1
    return {
        "emb": _randn(GROUPS * N, L, D, dtype=dtype, seed=0),
        "vec": transforms.gaussian_vectors(N, D, generator=0, dtype=dtype),
        "mats": transforms.ortho_matrices(N, D, generator=1, dtype=dtype),
        "u": transforms.ortho_matrices(2, D, generator=2, dtype=dtype)[0],
        "h": transforms.ortho_matrices(2, D, generator=2, dtype=dtype)[1],
        "hid": _randn(GROUPS, length, D, dtype=dtype, seed=3),
        "w2": _randn(D, 2 * D, dtype=dtype, seed=4, scale=D**-0.5),
        "b": _randn(D, dtype=dtype, seed=5),
        "lw": _randn(D, dtype=dtype, seed=6),
        "lb": _randn(D, dtype=dtype, seed=7),
        "keys": _randn(N, D, dtype=dtype, seed=8),
        "wm": _randn(N, D, D, dtype=dtype, seed=9, scale=D**-0.5),
        "bm": _randn(N, D, dtype=dtype, seed=10),
        "lwm": _randn(N, D, dtype=dtype, seed=11),
        "lbm": _randn(N, D, dtype=dtype, seed=12),
        "pw": _randn(K, D, dtype=dtype, seed=13, scale=D**-0.5),
        "pb": _randn(K, dtype=dtype, seed=14),
        "tables": _randn(11, D, dtype=dtype, seed=15),
        "tok": torch.randint(0, 11, (GROUPS * N, L), generator=_gen(16)),
        "index": torch.randint(0, N, (GROUPS, length), generator=_gen(17)),
        "index_pos": torch.randint(0, N, (GROUPS, length), generator=_gen(18)),
    }


def _demux_kwargs(x, gather):
    return {"gather": gather, "index": x["index"] if gather == "selected" else None}


CASES = {
    "hadamard_mux": lambda x, be: mk.hadamard_mux(x["emb"], x["vec"], backend=be),
    "ortho_mux": lambda x, be: mk.ortho_mux(x["emb"], x["mats"], backend=be),
    "lowrank_ortho_mux": lambda x, be: mk.lowrank_ortho_mux(
        x["emb"], x["u"], x["h"], num_instances=N, backend=be
    ),
    "mlp_demux": lambda x, be: mk.mlp_demux(
        x["hid"], x["wm"], x["bm"], x["lwm"], x["lbm"], backend=be
    ),
    "embed_mux": lambda x, be: mk.embed_mux(
        x["tok"], x["tables"], x["tables"], x["tables"][:2], x["lw"], x["lb"], x["vec"], backend=be
    ),
}
for _gather in ("token", "sequence", "selected"):
    CASES[f"index_demux-{_gather}"] = lambda x, be, g=_gather: mk.index_demux(
        x["hid"],
        x["w2"],
        x["b"],
        x["lw"],
        x["lb"],
        num_instances=N,
        backend=be,
        **_demux_kwargs(x, g),
    )
    CASES[f"index_demux_logits-{_gather}"] = lambda x, be, g=_gather: mk.index_demux_logits(
        x["hid"],
        x["w2"],
        x["b"],
        x["lw"],
        x["lb"],
        x["pw"],
        x["pb"],
        num_instances=N,
        backend=be,
        **_demux_kwargs(x, g),
    )
    CASES[f"index_pos_demux-{_gather}"] = lambda x, be, g=_gather: mk.index_pos_demux(
        x["hid"],
        x["keys"],
        x["w2"],
        x["b"],
        x["lw"],
        x["lb"],
        backend=be,
        gather=g,
        index=x["index_pos"] if g == "selected" else None,
    )


PARAMS = [
    pytest.param(case, backend, id=f"{case}-{backend}")
    for case in CASES
    for backend in BACKENDS_OF[case.split("-")[0]]
]


def _skip_unlessrunnable(case: str, backend: str) -> None:
    if not runnable(case.split("-")[0], backend):
        pytest.skip(f"{backend} cannot run {case} here (needs TRITON_INTERPRET=1 or _C)")


@pytest.mark.parametrize(("case", "backend"), PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_matches_reference(case, backend, dtype):
    _skip_unlessrunnable(case, backend)
    x = _inputs(dtype)
    got, want = CASES[case](x, backend), CASES[case](x, "reference")
    assert got.dtype == want.dtype == dtype
    tol = {torch.float32: 2e-5, torch.float64: 1e-10}[dtype]
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize(("case", "backend"), PARAMS)
def test_gradients_match_reference_autograd(case, backend):
    _skip_unlessrunnable(case, backend)
    x = _inputs(torch.float64)
    leaves = [v.requires_grad_() for v in x.values() if v.is_floating_point()]
    grad_out = None
    grads = {}
    for be in (backend, "reference"):
        out = CASES[case](x, be)
        if grad_out is None:
            grad_out = torch.randn(out.shape, generator=_gen(99), dtype=out.dtype)
        grads[be] = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    for got, want in zip(grads[backend], grads["reference"], strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(("case", "backend"), PARAMS)
def test_gradcheck(case, backend):
    _skip_unlessrunnable(case, backend)
    x = _inputs(torch.float64)
    names = [k for k, v in x.items() if v.is_floating_point()]

    def run(*leaves):
        return CASES[case](dict(x, **dict(zip(names, leaves, strict=True))), backend)

    leaves = tuple(x[k].clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(run, leaves, fast_mode=True)


GPU_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


@pytest.mark.gpu
@pytest.mark.parametrize(("case", "backend"), PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_gpu_forward_and_gradients_match_reference(case, backend, dtype):
    """The same cases on CUDA tensors, against the reference on the same (rounded) inputs."""
    cuda = torch.device("cuda")
    if not runnable(case.split("-")[0], backend, cuda):
        pytest.skip(f"{backend} cannot run {case} on CUDA here")
    x = {k: v.to(cuda) for k, v in _inputs(dtype).items()}
    leaves = [v.requires_grad_() for v in x.values() if v.is_floating_point()]
    results = {}
    for be in (backend, "reference"):
        out = CASES[case](x, be)
        grad_out = torch.ones_like(out)
        results[be] = (out, torch.autograd.grad(out, leaves, grad_out, allow_unused=True))
    tol = GPU_TOLERANCE[dtype]
    (out, grads), (ref, ref_grads) = results[backend], results["reference"]
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol)
    for got, want in zip(grads, ref_grads, strict=True):
        if want is not None:
            scale = want.float().abs().max().clamp_min(1.0)
            torch.testing.assert_close(
                got.float() / scale, want.float() / scale, rtol=tol, atol=tol
            )


@pytest.mark.parametrize("backend", BACKENDS_OF["index_demux_logits"])
def test_logits_wider_than_the_fused_projection(backend):
    """K = 70 > 64 columns: the demux kernel writes u and a Linear follows."""
    if not runnable("index_demux_logits", backend):
        pytest.skip(f"{backend} cannot run index_demux_logits here")
    x = _inputs(torch.float64)
    x["pw"] = _randn(70, D, dtype=torch.float64, seed=20, scale=D**-0.5)
    x["pb"] = _randn(70, dtype=torch.float64, seed=21)
    leaves = [x[k].requires_grad_() for k in ("hid", "w2", "pw", "pb")]
    case = CASES["index_demux_logits-token"]
    got, want = case(x, backend), case(x, "reference")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    grads = [torch.autograd.grad(out.sum(), leaves) for out in (got, want)]
    for g, w in zip(*grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)
