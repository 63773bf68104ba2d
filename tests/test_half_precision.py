"""Half precision as accurate as the reference: every kernel backend's float16 and bfloat16
forward outputs and gradients lie within 2x of the reference backend's error against a
float64 computation of the same inputs.

The reference computes in float32 and rounds each output once, so its error is about one
rounding of the output. A kernel path gets there only if nothing it combines (the small
GEMMs' outputs A, C and pre, their gradients, the low-rank intermediates) is rounded to half
first. Errors are relative RMS errors over a whole tensor (max errors of a few elements
would compare two equally valid roundings by chance). Runs the backends this machine has:
triton under the interpreter, cuda through the compiled operators' CPU implementations.
The interpreter has no bfloat16 tl.dot, so bfloat16 GEMM paths (ortho, low rank) are
checked on a GPU only (tests/gpu); and it rounds float32 to bfloat16 by truncation (a GPU
rounds to nearest), which doubles the error of every bfloat16 result it stores: there the
bound is 2x the error of the float64 values truncated to bfloat16, the best a truncating
store can do, when that is larger than the reference's.
"""

from __future__ import annotations

import os

import pytest
import torch
from op_cases import BACKENDS_OF, CASES, inputs, op_of, runnable

from muxkernels._tolerances import BACKEND_FACTOR

DATA = ("emb", "hid", "tables", "tok", "index", "index_pos")  # the rest are parameters
FLOOR = 2.0**-20  # an error this small passes whatever the reference's


def _run(case: str, x: dict[str, torch.Tensor], backend: str):
    """The case's output and the gradients of every float input that takes part."""
    leaves = {k: t.clone().requires_grad_() for k, t in x.items() if t.is_floating_point()}
    out = CASES[case]({**x, **leaves}, backend)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(99)).to(out.dtype)
    used = [k for k in leaves if leaves[k].requires_grad]
    grads = torch.autograd.grad(out, [leaves[k] for k in used], grad_out, allow_unused=True)
    return out, {k: g for k, g in zip(used, grads, strict=True) if g is not None}


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-300)).item()


def _truncated_bf16(x: torch.Tensor) -> torch.Tensor:
    """x rounded toward zero to bfloat16 (as the Triton interpreter stores bfloat16)."""
    bits = x.float().view(torch.int32) & -65536  # keep sign, exponent, 7 mantissa bits
    return bits.view(torch.float32).to(torch.bfloat16)


def _bound(backend: str, ref: torch.Tensor, oracle: torch.Tensor) -> float:
    """The error a backend may reach: the reference's, or for bfloat16 under the Triton
    interpreter that of the truncated float64 values if larger."""
    bound = _error(ref, oracle)
    interpreted = backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1"
    if interpreted and ref.dtype == torch.bfloat16:
        bound = max(bound, _error(_truncated_bf16(oracle), oracle))
    return bound


def _cancelling(x: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Inputs whose demux terms are large and nearly cancel: every hidden row and key is
    one large row (norm ~16·√d) plus small noise, W = [M | -M], and the MLP bias is
    -M_i·base. So A + C (and pre + b) is ~0.05 of A or C: a rounding of A or C to half
    before the sum would show as an error ~10x the reference's."""
    gen = torch.Generator().manual_seed(21)
    d = x["hid"].shape[-1]
    base = 16 * torch.randn(d, generator=gen, dtype=torch.float64)

    def near_base(*shape: int) -> torch.Tensor:
        noise = 0.05 * torch.randn(*shape, d, generator=gen, dtype=torch.float64)
        return (base + noise).to(dtype)

    m = x["w2"][:, :d].double()
    y = {**x, "hid": near_base(*x["hid"].shape[:-1]), "keys": near_base(x["keys"].shape[0])}
    y["w2"] = torch.cat([m, -m], dim=1).to(x["w2"].dtype)
    y["bm"] = -(x["wm"].double() @ base).to(x["bm"].dtype)
    return y


def _inputs(dtype: torch.dtype, fp32_params: bool, cancelling: bool) -> dict[str, torch.Tensor]:
    x = inputs(dtype, n=3, d=64, length=6, groups=2)
    if cancelling:
        x = _cancelling(x, dtype)
    if fp32_params:
        x = {k: t.float() if k not in DATA and t.is_floating_point() else t for k, t in x.items()}
    return x


CASES_AND_BACKENDS = [
    pytest.param(case, backend, cancelling, id=f"{case}-{backend}" + ("-cancelling" * cancelling))
    for case in CASES
    for backend in BACKENDS_OF[op_of(case)]
    for cancelling in ((False, True) if "demux" in case else (False,))
]


@pytest.mark.parametrize("fp32_params", [False, True], ids=["params-half", "params-fp32"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("case", "backend", "cancelling"), CASES_AND_BACKENDS)
def test_half_precision_matches_the_reference(case, backend, cancelling, dtype, fp32_params):
    if not runnable(op_of(case), backend):
        pytest.skip(f"{backend} cannot run {op_of(case)} here")
    gemm = op_of(case) in ("ortho_mux", "lowrank_ortho_mux")
    if backend == "triton" and gemm and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter has no bfloat16 tl.dot (checked on a GPU)")
    x = _inputs(dtype, fp32_params, cancelling)
    oracle_out, oracle_grads = _run(case, {k: t.double() if t.is_floating_point() else t
                                           for k, t in x.items()}, "reference")  # fmt: skip
    ref_out, ref_grads = _run(case, x, "reference")
    got_out, got_grads = _run(case, x, backend)
    assert got_out.dtype == ref_out.dtype == dtype
    pairs = [("output", got_out, ref_out, oracle_out)]
    pairs += [(f"d{k}", got_grads[k], ref_grads[k], oracle_grads[k]) for k in oracle_grads]
    for name, got, ref, oracle in pairs:
        assert got.dtype == ref.dtype, name
        err, bound = _error(got, oracle), _bound(backend, ref, oracle)
        assert err <= BACKEND_FACTOR * bound + FLOOR, (
            f"{name}: {backend} error {err:.3g} vs the reference's {bound:.3g}"
        )
