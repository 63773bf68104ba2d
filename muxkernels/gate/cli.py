"""``muxkernels gate``: compile every kernel for sm_90 without a GPU and check its resources.

Exit status 0 when every variant passes, 1 when any fails (each failure printed on one
line), 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .._cli_args import HelpFormatter, positive_int, run_or_report
from ..bench.vision import IMAGE_OPS
from ..bench.workloads import OPS
from . import collect, cuda_launches, triton_launches

NS = (2, 5, 10, 20, 40)
WIDTHS = (768, 4096)
GROUPS, LENGTH = 64, 128  # the benchmark's B' and L
# Triton: each run is a forward and a backward (every forward specialisation is also a
# training one), with gradients of the data only or of every input too. CUDA launchers are
# called one by one.
TRITON_MODES = ("fwd+bwd", "fwd+bwd+params")
CUDA_MODES = ("fwd", "bwd", "bwd+params")
# The ops with kernels of their own: the image multiplexer modes run the ortho_mux and
# hadamard_mux kernels (or no kernel at all), so they add no kernel to compile.
KERNEL_OPS = tuple(op for op in OPS if op not in IMAGE_OPS)
CUDA_OPS = ("hadamard_mux", "embed_mux", "index_demux", "index_demux_sequence",
            "index_demux_selected", "index_pos_demux")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="write the Markdown report here (docs/kernels.md)")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=min(2, os.cpu_count() or 1),
        help="processes compiling Triton kernels (default: %(default)s)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=("triton", "cuda"),
        default=["triton", "cuda"],
        help="what to check (default: both)",
    )
    parser.add_argument(
        "--n",
        nargs="+",
        type=positive_int,
        default=list(NS),
        help="numbers of instances N (default: %(default)s)",
    )
    parser.add_argument(
        "--d",
        nargs="+",
        type=positive_int,
        default=list(WIDTHS),
        help="hidden sizes d (default: %(default)s)",
    )
    parser.add_argument(
        "--ops",
        nargs="+",
        choices=KERNEL_OPS,
        default=list(KERNEL_OPS),
        help="ops to compile (default: all)",
    )
    parser.add_argument("--dtypes", nargs="+", choices=list(triton_launches.DTYPES),
                        default=list(triton_launches.DTYPES),
                        help="data (and parameter) dtypes (default: all)")  # fmt: skip


def _triton_configs(args: argparse.Namespace) -> list:
    from ..bench import workloads

    return [
        triton_launches.Config(op, mode, dtype, n, d)
        for op in args.ops
        if "triton" in workloads.kernel_backends(op)
        for mode in TRITON_MODES
        for dtype in args.dtypes
        for n in args.n
        for d in args.d
    ]


def _cuda_configs(args: argparse.Namespace) -> list:
    return [
        cuda_launches.CudaConfig(op, mode, data, params, n, d)
        for op in args.ops
        if op in CUDA_OPS
        for mode in (("fwd",) if op == "embed_mux" else CUDA_MODES)
        for data, params in (triton_launches.DTYPE_NAMES[name] for name in args.dtypes)
        for n in args.n
        for d in args.d
    ]


def run(args: argparse.Namespace) -> int:
    start = time.monotonic()
    variants, notes = [], []
    if "triton" in args.backends:
        variants += collect.triton_variants(_triton_configs(args), (GROUPS, LENGTH),
                                            args.jobs)  # fmt: skip
    if "cuda" in args.backends:
        cuda, note = collect.cuda_variants(_cuda_configs(args), (GROUPS, LENGTH))
        variants += cuda
        notes += [note] if note else []
    problems = [p for v in variants for p in v.problems()]
    from . import report

    command = "muxkernels gate" + (f" --out {args.out}" if args.out else "")
    text = report.document(variants, problems, notes, command)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    else:
        print(report.tables(variants))
    took = time.monotonic() - start
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    verdict = "passed" if not problems else f"failed ({len(problems)} problems)"
    print(f"gate {verdict}: {len(variants)} kernel variants in {took:.0f} s", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="muxkernels gate",
        description="Compile every kernel for sm_90 (no GPU needed) and check registers, "
        "spills, shared memory, occupancy and load widths.",
        formatter_class=HelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_or_report("muxkernels gate", lambda: run(args))
