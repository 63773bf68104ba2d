"""Command line: ``muxkernels info``, ``check``, ``demo``, ``convert``, ``bench`` and ``gate``
(also ``python -m muxkernels``)."""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

from . import __version__, _backend, _extension, _install
from ._cli_args import (
    HelpFormatter,
    device,
    nonnegative_int,
    plain,
    positive_int,
    run_or_report,
)
from ._cpu import _compiled as _cpu_compiled
from ._selfcheck import format_rows, run_checks
from .models import convert_cli

DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def _info() -> int:
    print(f"muxkernels {__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}")
    try:
        import triton

        print(f"triton {triton.__version__}")
    except ImportError:
        print("triton: not installed")
    try:
        loaded = _extension.load()
    except ImportError:  # MUXKERNELS_REQUIRE_EXTENSION=1: said below, as without it
        loaded = False
    if loaded:
        print(f"compiled extension muxkernels._C: loaded ({_install.describe_build()})")
    else:
        why = _install.why_absent(_extension.load_error(), _install.read_record())
        print(f"compiled extension muxkernels._C: absent: {why}")
        print(f"  to build it: {_install.build_command()}")
    try:
        cpu_kernels = _cpu_compiled.load()
    except ImportError:
        cpu_kernels = False
    if cpu_kernels:
        gemms = "PyTorch's BLAS directly" if _cpu_compiled.blas_linked() else "ATen's addmm"
        what = (
            f"the cpu backend's {', '.join(_cpu_compiled.OPS)}; "
            f"lowrank_ortho_mux's GEMMs call {gemms}"
        )
        print(f"compiled cpu kernels {_cpu_compiled.MODULE}: loaded ({what})")
    else:
        error = _cpu_compiled.load_error()
        print(
            f"compiled cpu kernels {_cpu_compiled.MODULE}: absent ({type(error).__name__}: "
            f"{error}); the cpu backend runs ATen ops instead. To build them: "
            f"{_install.cpu_build_command()}"
        )
    cuda = torch.cuda.is_available()
    print(f"CUDA device: {torch.cuda.get_device_name() if cuda else 'none'}")
    device = torch.device("cuda" if cuda else "cpu")
    for backend in _backend.BACKENDS[1:]:
        ok, why = _backend.usable(backend, device)
        if backend == "cuda" and not loaded:
            why = "it needs muxkernels._C (see above)"
        state = "usable" if ok else f"unusable: {why}"
        if ok and backend == "cuda" and device.type == "cpu":
            state += " (the compiled operators' CPU implementations, for testing)"
        print(f"backend {backend:<9} on {device.type}: {state}")
    return 0


def _check(args: argparse.Namespace) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtypes = tuple(DTYPES[name] for name in args.dtypes)
    rows = run_checks(device, dtypes)
    print(f"every op and usable backend on {device}, against the float64 reference:")
    print(format_rows(rows))
    failed = [r for r in rows if r.error]
    skipped = sum(1 for r in rows if r.skipped)
    print(f"{len(rows) - len(failed) - skipped} passed, {len(failed)} failed, {skipped} skipped")
    return 1 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    if args.task == "digits":
        from .vision_demo import run_from_args

        return run_from_args(args)
    if args.plot is not None:
        print("muxkernels demo: error: --plot applies to --task digits", file=sys.stderr)
        return 2
    from .demo import DEFAULT_INSTANCES, run_demo

    run_demo(
        args.instances or DEFAULT_INSTANCES,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        quick=args.quick,
        threads=args.threads,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``muxkernels`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own parser: python -m muxkernels.bench takes the same
        from .bench.cli import main as bench

        return bench(argv[1:])
    parser = argparse.ArgumentParser(
        prog="muxkernels", description=plain(__doc__), formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=text, description=text, formatter_class=HelpFormatter, **kwargs
        )

    command("info", "versions, the compiled extension and what it was built for, usable backends")
    check = command("check", "run every op on every usable backend vs float64")
    check.add_argument("--device", type=device, help="cpu or cuda (default: cuda when available)")
    check.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["float32", "bfloat16"])
    sub.add_parser("bench", help="benchmarks: muxkernels bench --help", add_help=False)
    from .gate.cli import add_arguments as gate_arguments

    gate_arguments(command("gate", "compile every kernel for sm_90 (no GPU) and check it"))
    demo = command("demo", "train the retrieval warm-up (or digits) for several N on the CPU")
    demo.add_argument("--task", choices=("retrieval", "digits"), default="retrieval",
                      help="retrieval: the DataMUX warm-up; digits: multiplexed CNNs on "
                      "scikit-learn's digits")  # fmt: skip
    demo.add_argument("--instances", nargs="+", type=positive_int,
                      help="the Ns (default 1 2 4 8; digits: 1 2 4 8 16)")  # fmt: skip
    demo.add_argument("--steps", type=positive_int,
                      help="training steps for every N (default: per N)")  # fmt: skip
    demo.add_argument("--seed", type=nonnegative_int, default=0, help="random seed")
    demo.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    demo.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    demo.add_argument("--quick", action="store_true", help="a tiny run (seconds), for tests")
    demo.add_argument("--plot", type=Path, help="digits: also draw the results to this PNG")
    convert_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    if args.command == "demo":
        return run_or_report("muxkernels demo", lambda: _demo(args))
    if args.command == "convert":
        return convert_cli.run(args)
    if args.command == "gate":
        from .gate.cli import run as gate

        return run_or_report("muxkernels gate", lambda: gate(args))
    return run_or_report("muxkernels check", lambda: _check(args))


if __name__ == "__main__":
    sys.exit(main())
