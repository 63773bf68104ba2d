"""What each layer between the caller and a kernel costs, per call, on a tiny input.

    python benchmarks/bench_op_overhead.py            # GPU: the triton and cuda backends
    TRITON_INTERPRET=1 python benchmarks/bench_op_overhead.py --device cpu   # harness only

For the hadamard mux at B'=1, N=2, L=1, d=8 (the kernel itself takes ~nothing), host
time per call of: the Python launcher alone (triton), the registered operator
``torch.ops.muxkernels.hadamard_mux_fwd_<backend>`` (one dispatcher boundary), the public
op (validation, backend choice, the autograd Function) without and with autograd
recording. The differences are the price of each layer; a hot path crosses one operator
boundary per direction.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import muxkernels
from muxkernels import _backend


def per_call_us(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """Mean host wall time of ``fn()`` over ``calls`` calls, device work included."""
    for _ in range(10):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def layers(backend: str, device: torch.device) -> dict[str, Callable[[], object]]:
    e = torch.randn(1, 2, 1, 8, device=device)
    v = torch.randn(2, 8, device=device)
    e_grad = e.clone().requires_grad_()
    calls = {}
    if backend == "triton":
        from muxkernels._triton.hadamard_mux import hadamard_mux_fwd

        calls["launcher"] = lambda: hadamard_mux_fwd(e, v)
    operator = getattr(torch.ops.muxkernels, f"hadamard_mux_fwd_{backend}")
    calls["operator"] = lambda: operator(e, v)
    calls["public op, no grad"] = lambda: muxkernels.hadamard_mux(e, v, backend=backend)
    calls["public op, autograd"] = lambda: muxkernels.hadamard_mux(e_grad, v, backend=backend)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"hadamard_mux_fwd per-call host time on {device}, torch {torch.__version__}")
    for backend in ("triton", "cuda"):
        ok, why = _backend.usable(backend, device)
        if not ok:
            print(f"{backend}: skipped ({why})")
            continue
        previous = None
        for name, fn in layers(backend, device).items():
            us = per_call_us(fn, device, args.calls)
            extra = "" if previous is None else f"  (+{us - previous:.1f} us)"
            print(f"{backend:<7} {name:<22} {us:8.1f} us{extra}")
            previous = us


if __name__ == "__main__":
    main()
