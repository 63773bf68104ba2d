"""Microbenchmarks of the multiplex and demultiplex ops: kernels beside eager PyTorch,
torch.compile of the reference and the published concat form, with a copy and torch.matmul
of the same size measured in the same run.

    python benchmarks/bench_ops.py                       # GPU: every op, N in {2,10,40}, bf16
    python benchmarks/bench_ops.py --ops hadamard_mux index_demux --n 10 40 --modes fwd
    python benchmarks/bench_ops.py --device cpu --small  # the harness on a CPU (no kernels)

Columns: ms (median), GB/s over the op's byte floor and its fraction of the measured copy
bandwidth ("of copy"), TFLOP/s of the op's GEMMs and its fraction of torch.matmul's rate
for the same GEMM shape ("of matmul"), and speedups over the eager and compiled reference.
"""

from __future__ import annotations

import argparse

import torch

from muxkernels.bench import MODES, OPS, Sizes, format_table, run

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
IMPLS = ("eager", "compiled", "concat", "triton", "cuda")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--n", type=int, nargs="+", default=[2, 10, 40])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=None)
    parser.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="B'=2, L=16, d=64 (CPU harness)")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = Sizes(dtype=DTYPES[args.dtype])
    if args.small:
        sizes = Sizes(mux_groups=2, demux_groups=2, length=16, d=64, dtype=sizes.dtype)
    impls = args.impls
    if device.type == "cpu":
        print("note: a CPU run times the reference paths only; kernel timings need a GPU")
        impls = impls or ["eager", "concat"]
    print(f"{device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
          f"{args.dtype}, torch {torch.__version__}", flush=True)  # fmt: skip
    for op in args.ops:  # one table per op, printed as soon as it is measured
        rows = run([op], args.n, args.modes, impls or IMPLS, sizes, device)
        print(format_table(rows), flush=True)


if __name__ == "__main__":
    main()
