"""Hadamard mux forward: every backend beside eager PyTorch, torch.compile and a copy.

    python benchmarks/bench_hadamard_mux.py                 # GPU: B'=64, L=128, d=768, bf16
    python benchmarks/bench_hadamard_mux.py --groups 4 --length 32   # quick CPU run

The op moves (N+1)·B'·L·d elements (reads N inputs, writes one output), so its floor is
that traffic at copy speed; "of copy" is the fraction of the copy bandwidth measured in
this same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import copy_bandwidth_gbs, format_table, median_ms

import muxkernels
from muxkernels import _backend, reference

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def bench(n: int, groups: int, length: int, d: int, dtype: torch.dtype, device: torch.device):
    """Rows of (impl, ms, GB/s, fraction of copy, speedup over eager) for one N."""
    emb = torch.randn(groups, n, length, d, device=device, dtype=dtype)
    vec = muxkernels.transforms.gaussian_vectors(n, d, generator=0, device=device)
    nbytes = (n + 1) * groups * length * d * emb.element_size()
    copy = copy_bandwidth_gbs(nbytes // 2, device)
    impls = {
        "reference eager": lambda: reference.hadamard_mux(emb, vec),
        "reference compiled": (lambda f: lambda: f(emb, vec))(
            torch.compile(reference.hadamard_mux)
        ),
    }
    for backend in ("triton", "cuda"):
        if _backend.usable(backend, device)[0]:
            try:
                muxkernels.hadamard_mux(emb, vec, backend=backend)
            except NotImplementedError:
                continue
            impls[backend] = (lambda b: lambda: muxkernels.hadamard_mux(emb, vec, backend=b))(
                backend
            )
    rows, eager_ms = [], None
    for name, fn in impls.items():
        ms = median_ms(fn, device)
        eager_ms = eager_ms or ms
        gbs = nbytes / ms / 1e6
        rows.append([n, name, ms, gbs, gbs / copy, eager_ms / ms])
    return rows, copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2, 10, 40])
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        print("note: CPU run; kernel timings need a GPU, this only exercises the harness")
    rows = []
    for n in args.n:
        r, copy = bench(n, args.groups, args.length, args.d, DTYPES[args.dtype], device)
        rows += r
    print(
        f"hadamard mux forward, B'={args.groups} L={args.length} d={args.d} {args.dtype}, "
        f"{device}, copy {copy:.0f} GB/s"
    )
    print(format_table(["N", "impl", "ms", "GB/s", "of copy", "vs eager"], rows))


if __name__ == "__main__":
    main()
