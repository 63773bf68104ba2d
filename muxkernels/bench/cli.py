"""``muxkernels bench``: every op and backend, and the multiplexed model end to end.

On a GPU (the default when one is present): every op × implementation × mode at N in
{2, 5, 10, 20, 40}, d=768, L=128, bf16, then the end-to-end throughput against N (a
12-layer, 768-wide encoder, published layers vs ours). On the CPU: the same harness on the
cpu backend (and the reference) at small sizes and a small encoder, on one thread, the
implementations timed in interleaved rounds; kernel timings need a GPU. A failure (an
implementation, a workload, the end-to-end run) is recorded in the results and the run
goes on; with --out, every finished (op, N) is on disk at once.

    muxkernels bench                                  # everything, tables on screen
    muxkernels bench --out results/ --readme README.md   # + JSON, CSV, PNG; README section
    muxkernels bench --ops index_demux --n 40 --modes fwd fwd+bwd --no-e2e
    muxkernels bench --report results/results.json --readme README.md   # re-render only
    muxkernels bench --resume results/results.json --out results    # measure what it lacks
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .. import __version__, _backend
from .._cli_args import (
    HelpFormatter,
    device,
    existing_file,
    nonnegative_float,
    plain,
    positive_int,
    run_or_report,
)
from . import end_to_end, microbench, report, timing, vision
from .workloads import MODES, OPS, Sizes

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
NS = (2, 5, 10, 20, 40)
E2E_NS = (1, 2, 5, 10, 20, 40)
CPU_SIZES = {"groups": 2, "length": 16, "d": 64, "images": (8, 1, 8, 8)}
CPU_IMPLS = ("eager", "published", "cpu")
E2E_TASKS = ("sequence", "token", vision.CNN_TASK)
GPU_BATCH_SIZES, CPU_BATCH_SIZES = (32, 64, 128, 256, 512), (4, 8, 16, 32)
# Seconds of --budget-s the op measurements leave to the end-to-end run that follows them:
# about 30 s on a 2-core CPU (measured); on an H200 about 10 s of timed passes (2 tasks x
# 15 configurations x ~8 passes of <= 40 ms) plus model set-up and kernel compiles.
E2E_RESERVE_S = 60


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="muxkernels bench",
        description=plain(__doc__.split("\n\n")[0]),
        formatter_class=HelpFormatter,
        epilog=plain("\n\n".join(__doc__.split("\n\n")[1:])),
    )
    p.add_argument("--device", type=device, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--threads", type=positive_int,
                   help="torch CPU threads (default: 1 on the CPU, where the benchmark sizes "
                   "are too small for a second thread to pay, and waiting for one on a busy "
                   "machine swamps the timings; torch's default on a GPU)")  # fmt: skip
    ops = p.add_argument_group("ops")
    ops.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    ops.add_argument("--n", type=positive_int, nargs="+", default=list(NS), help="the Ns")
    ops.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ops.add_argument("--impls", nargs="+", choices=microbench.IMPLS,
                     help=f"default: all on a GPU, {' '.join(CPU_IMPLS)} on the CPU")  # fmt: skip
    ops.add_argument("--dtype", choices=list(DTYPES), help="default: bf16 (GPU), fp32 (CPU)")
    ops.add_argument("--groups", type=positive_int,
                     help="B' (default 64 on a GPU, 2 on the CPU)")  # fmt: skip
    ops.add_argument("--length", type=positive_int,
                     help="L (default 128 on a GPU, 16 on the CPU)")  # fmt: skip
    ops.add_argument("--d", type=positive_int,
                     help="hidden size (default 768 on a GPU, 64 on the CPU)")  # fmt: skip
    ops.add_argument("--no-ops", action="store_true", help="skip the op microbenchmarks")
    e2e = p.add_argument_group("end to end")
    e2e.add_argument("--e2e-n", type=positive_int, nargs="+", default=list(E2E_NS),
                     help="the Ns")  # fmt: skip
    e2e.add_argument("--e2e-tasks", nargs="+", choices=E2E_TASKS,
                     default=list(E2E_TASKS))  # fmt: skip
    e2e.add_argument("--e2e-size", choices=("paper", "small"),
                     help="paper: 12 layers, d=768 (GPU default); small (CPU default)")  # fmt: skip
    e2e.add_argument("--batch-sizes", type=positive_int, nargs="+",
                     help="N=1 batch sizes searched (default 32..512 GPU, 4..32 CPU)")  # fmt: skip
    e2e.add_argument("--no-e2e", action="store_true", help="skip the end-to-end run")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="write results.json, ops.csv, end_to_end.csv, "
                     "bench.png (with matplotlib) here")  # fmt: skip
    out.add_argument("--format", choices=("table", "csv", "json"), default="table",
                     help="what goes to stdout (progress goes to stderr)")  # fmt: skip
    out.add_argument("--readme", type=Path, help="rewrite this README's results section")
    out.add_argument("--report", type=existing_file, metavar="RESULTS_JSON",
                     help="measure nothing: render a saved results.json")  # fmt: skip
    out.add_argument("--budget-s", type=nonnegative_float,
                     help="start no measurement after this many seconds; the ops stop "
                     f"{E2E_RESERVE_S} s earlier when the end-to-end run is still to come; "
                     "what was left is listed as not measured")  # fmt: skip
    out.add_argument("--resume", type=existing_file, metavar="RESULTS_JSON",
                     help="add to a saved run of the same sizes: measure only the end to end "
                     "run if it lacks one, and the (op, N) pairs it lacks")  # fmt: skip
    return p


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, cwd=Path(__file__).parent)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _meta(
    command: str,
    device: torch.device,
    sizes: Sizes,
    e2e_size: end_to_end.EncoderSize | None,
    allocator: str | None,
) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    gpu = device.type == "cuda"
    if gpu:
        name = torch.cuda.get_device_name(device)
    else:
        threads = torch.get_num_threads()
        plural = "" if threads == 1 else "s"
        name = f"CPU ({platform.processor() or platform.machine()}, {threads} thread{plural})"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": name,
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda if gpu else None,
        "python": platform.python_version(),
        "muxkernels": __version__,
        "commit": _commit(),
        "backends": [
            b for b in _backend.OPERATOR_BACKENDS if gpu and _backend.usable(b, device)[0]
        ],
        "command": command,
        "dtype": str(sizes.dtype).removeprefix("torch."),
        "sizes": {
            "groups": sizes.groups,
            "length": sizes.length,
            "d": sizes.d,
            "images": list(sizes.images),
        },
        "end_to_end_size": vars(e2e_size).copy() if e2e_size else None,
        "allocator": allocator,
        "unmeasured": [],
        "errors": [],
    }


def _sizes(args: argparse.Namespace, gpu: bool) -> Sizes:
    base = Sizes() if gpu else Sizes(**CPU_SIZES)
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if gpu else torch.float32)
    return Sizes(
        groups=args.groups or base.groups,
        length=args.length or base.length,
        d=args.d or base.d,
        dtype=dtype,
        images=base.images,
    )


def _emit(results: report.Results, args: argparse.Namespace) -> None:
    """stdout in the chosen format; files under --out; the README section."""
    if args.format == "json":
        print(report.to_json(results), end="")
    elif args.format == "csv":
        print(report.to_csv(results["ops"]), end="")
    files_dir = args.out or (args.report.parent if args.report else None)
    if args.out:
        written = report.write_files(results, args.out)
        for path in written:
            _log(f"wrote {path}")
        if args.out / "bench.png" not in written:
            _log("skipped bench.png: matplotlib is not installed (pip install matplotlib)")
    if args.readme:
        png = files_dir / "bench.png" if files_dir else None
        base = args.readme.resolve().parent

        def rel(path: Path) -> str:
            return os.path.relpath(path.resolve(), base)

        section = report.readme_section(
            results,
            rel(png) if png and png.exists() else None,
            rel(files_dir) if files_dir else ".",
        )
        report.update_readme(args.readme, section)
        _log(f"rewrote the results section of {args.readme}")


def _resumed(saved: report.Results, meta: dict) -> report.Results:
    """A saved run to add to: the same device kind, dtype and op sizes, or an error. Its
    end-to-end rows, if any, are kept (and not measured again)."""
    differ = [k for k in ("gpu", "dtype", "sizes") if saved["meta"].get(k) != meta[k]]
    if differ:
        theirs = ", ".join(f"{k}={saved['meta'].get(k)}" for k in differ)
        mine = ", ".join(f"{k}={meta[k]}" for k in differ)
        raise ValueError(f"--resume: the saved run has {theirs}, this one {mine}; "
                         "pass the options of the saved run")  # fmt: skip
    if not saved["end_to_end"]:
        saved["meta"]["end_to_end_size"] = meta["end_to_end_size"]
    saved["meta"]["command"] += "; " + meta["command"]
    saved["meta"]["unmeasured"], saved["meta"]["errors"] = [], []  # measured again now
    return saved


def _encoder_size(args: argparse.Namespace, gpu: bool) -> end_to_end.EncoderSize | None:
    if args.no_e2e:
        return None
    choice = args.e2e_size or ("paper" if gpu else "small")
    return end_to_end.PAPER if choice == "paper" else end_to_end.SMALL


def _measure_end_to_end(
    args: argparse.Namespace,
    results: report.Results,
    size: end_to_end.EncoderSize,
    device: torch.device,
    dtype: torch.dtype,
    deadline: float,
) -> None:
    """The end-to-end rows, unless the deadline has passed (then listed as not measured);
    a failure is recorded in meta["errors"], not raised."""
    if time.monotonic() > deadline:
        results["meta"]["unmeasured"].append("end to end")
        _log("not measured (--budget-s): end to end")
        return
    gpu = device.type == "cuda"
    start = time.monotonic()
    encoder_tasks = [t for t in args.e2e_tasks if t != vision.CNN_TASK]
    try:
        rows = end_to_end.run_end_to_end(
            args.e2e_n, encoder_tasks, size, device=device, dtype=dtype,
            batch_sizes=args.batch_sizes or (GPU_BATCH_SIZES if gpu else CPU_BATCH_SIZES),
            log=_log,
        ) if encoder_tasks else []  # fmt: skip
        if vision.CNN_TASK in args.e2e_tasks:
            rows += vision.run_cnn_end_to_end(args.e2e_n, device=device, dtype=dtype, log=_log)
    except Exception as err:  # any failure: recorded, the results so far are kept
        results["meta"]["errors"].append(f"end to end: {microbench.error_text(err)}")
        _log(f"failed: {results['meta']['errors'][-1]}")
        return
    _log(f"end to end: {len(rows)} rows in {time.monotonic() - start:.1f} s")
    results["end_to_end"] = [r.as_dict() for r in rows]
    if args.format == "table":
        print(report.text_table(results["end_to_end"], report.E2E_COLUMNS), flush=True)
    if args.out:
        report.write_files(results, args.out, with_plot=False)


def _measure_ops(
    args: argparse.Namespace,
    results: report.Results,
    sizes: Sizes,
    device: torch.device,
    deadline: float,
) -> None:
    """Every op at every N, each (op, N) saved as soon as it is measured; past the
    deadline, (op, N) pairs are listed as not measured. A workload that cannot be built
    or measured at all is recorded in meta["errors"]."""
    impls = args.impls or (microbench.IMPLS if device.type == "cuda" else CPU_IMPLS)
    measured = {(r["op"], r["n"]) for r in results["ops"]}
    for op in args.ops:
        for n in args.n:
            if (op, n) in measured:
                continue
            if time.monotonic() > deadline:
                results["meta"]["unmeasured"].append(f"{op} N={n}")
                continue
            _log(f"{op} N={n} ...")
            start = time.monotonic()
            try:
                rows = microbench.measure(op, n, args.modes, impls, sizes, device, _log)
            except Exception as err:  # any failure: recorded, the next (op, N) goes on
                results["meta"]["errors"].append(f"{op} N={n}: {microbench.error_text(err)}")
                _log(f"failed: {results['meta']['errors'][-1]}")
                continue
            _log(f"{op} N={n}: {len(rows)} rows in {time.monotonic() - start:.1f} s")
            results["ops"] += [r.as_dict() for r in rows]
            if args.format == "table" and rows:
                print(report.text_table([r.as_dict() for r in rows], report.OPS_COLUMNS),
                      flush=True)  # fmt: skip
            if args.out:  # at once, so a run cut short keeps every finished (op, N)
                report.write_files(results, args.out, with_plot=False)
    if results["meta"]["unmeasured"]:
        _log("not measured (--budget-s): " + ", ".join(results["meta"]["unmeasured"]))


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.no_ops and args.no_e2e and not args.report:
        parser.error("--no-ops with --no-e2e measures nothing (--report re-renders a saved run)")
    if args.report and args.resume:
        parser.error("--report measures nothing and --resume measures more: pass one of them")
    if args.readme and not args.readme.is_file():
        parser.error(f"--readme {str(args.readme)!r} is not a file")
    return run_or_report(parser.prog, lambda: _run(args, argv))


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    """The bench of parsed, valid arguments."""
    if args.report:
        results = report.read_json(args.report)
        if args.format == "table":
            print(report.text_table(results["end_to_end"], report.E2E_COLUMNS))
            print(report.text_table(results["ops"], report.OPS_COLUMNS))
        _emit(results, args)
        return 0
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or (threads if gpu else 1))
    allocator = None if gpu else timing.keep_freed_memory()
    try:
        return _measure(args, argv, device, allocator)
    finally:
        torch.set_num_threads(threads)


def _measure(
    args: argparse.Namespace, argv: list[str], device: torch.device, allocator: str | None
) -> int:
    """Everything a run measures, on ``device``, then its output; ``allocator`` is the
    process's allocator setting, for the results' description."""
    start = time.monotonic()
    deadline = math.inf if args.budget_s is None else start + args.budget_s
    gpu = device.type == "cuda"
    sizes, size = _sizes(args, gpu), _encoder_size(args, gpu)
    command = " ".join(["muxkernels bench", *argv])
    meta = _meta(command, device, sizes, size, allocator)
    results = {"meta": meta, "ops": [], "end_to_end": []}
    if args.resume:
        results = _resumed(report.read_json(args.resume), results["meta"])
    _log(report.describe(results["meta"]))
    if not gpu:
        _log("note: on the CPU this times the cpu backend and the reference at small sizes "
             "and a small encoder; kernel timings need a GPU")  # fmt: skip
    e2e_to_come = size is not None and not results["end_to_end"]
    if not args.no_ops:
        reserve = E2E_RESERVE_S if e2e_to_come else 0
        _measure_ops(args, results, sizes, device, deadline - reserve)
    if e2e_to_come:
        _measure_end_to_end(args, results, size, device, sizes.dtype, deadline)
    failures = report.failed(results)
    if failures:
        _log(f"{len(failures)} failure(s), recorded in the results:\n" + "\n".join(failures))
    _emit(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
