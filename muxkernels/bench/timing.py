"""Timing and ceilings measured in the same run as the ops they are compared with.

On a GPU, times are ``triton.testing.do_bench`` medians with the L2 cache flushed before
every call. By default the call is first captured in a CUDA graph and do_bench times its
replay, so the time is the GPU's alone and Python's launch cost (tens of microseconds
per op, the same for every implementation) does not hide the kernels; a call that cannot
be captured is timed directly, and the result says which. On the CPU, times are
``torch.utils.benchmark`` medians. A copy of the op's own byte count gives the bandwidth
ceiling and ``torch.matmul`` of the op's GEMM shape the compute ceiling. On the CPU,
implementations compared side by side are timed in interleaved rounds (``rounds``), in a
process whose allocator keeps freed memory (``keep_freed_memory``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

WARMUP_MS, REP_MS = 5, 25  # do_bench's warm-up and measuring windows per timing
CPU_MIN_RUN_S = 0.02  # torch.utils.benchmark's minimum measuring time per timing on the CPU
# The same for an end-to-end pass, which takes milliseconds on the CPU: 20 ms held two or
# three passes, and a ratio's median of five rounds moved 5-10 % from run to run (sequence
# N=5: 1.10x in one run, 0.97x in the next); 100 ms holds about a dozen.
CPU_PASS_MIN_RUN_S = 0.1
# On the CPU, implementations compared with each other are timed in turn, this many rounds
# (interleaved), and each keeps the median of its rounds: the load of a shared machine
# drifts over seconds, so timing one implementation after the other skews their ratios.
CPU_ROUNDS = 5
# glibc's mallopt parameters, and the size below which it may take a block from mmap: never
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _NEVER = -1, -3, 2**31 - 1


@dataclass(frozen=True)
class Timing:
    """A median in milliseconds and how it was taken: "graph" (CUDA graph replay),
    "direct" (Python calls on the GPU) or "cpu"."""

    ms: float
    method: str


@contextlib.contextmanager
def side_stream(device: torch.device) -> Iterator[None]:
    """Run the block on a fresh CUDA stream (nothing on the CPU). A CUDA graph can only be
    captured off the default stream, and an autograd backward runs on its forward's stream,
    so a measurement that keeps a forward to time its backward builds it in here."""
    if device.type != "cuda":
        yield
        return
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    try:
        with torch.cuda.stream(stream):
            yield
    finally:
        torch.cuda.current_stream(device).wait_stream(stream)


def _capture(fn: Callable[[], object]) -> Callable[[], object] | None:
    """``fn`` captured in a CUDA graph (its replay), or None when it cannot be captured.

    Captures on the current stream (a side stream of its own when that is the default
    stream), after a warm-up call on it."""
    stream = torch.cuda.current_stream()
    if stream == torch.cuda.default_stream():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, stream=stream):
            fn()
    except RuntimeError:  # an op that syncs with the host, or works on another stream
        torch.cuda.synchronize()
        return None
    return graph.replay


def time_call(
    fn: Callable[[], object],
    device: torch.device,
    *,
    graph: bool = True,
    min_run_s: float = CPU_MIN_RUN_S,
) -> Timing:
    """Median time of ``fn()`` after a warm-up call (which compiles, autotunes, allocates).

    ``graph=False`` times Python calls on a GPU too (end-to-end timings, where the launch
    cost is part of what a user sees). ``min_run_s``: the measuring time on the CPU.
    """
    fn()
    if device.type == "cuda":
        from triton.testing import do_bench

        replay = _capture(fn) if graph else None
        run, method = (replay, "graph") if replay is not None else (fn, "direct")
        ms = do_bench(run, warmup=WARMUP_MS, rep=REP_MS, return_mode="median")
        return Timing(float(ms), method)
    from torch.utils.benchmark import Timer

    timer = Timer("fn()", globals={"fn": fn})
    return Timing(timer.blocked_autorange(min_run_time=min_run_s).median * 1e3, "cpu")


def keep_freed_memory() -> str | None:
    """Make glibc keep freed memory in the process (no trimming of the heap, no mmap for
    large blocks), for the rest of the process; returns a description, or None elsewhere.

    By default glibc hands large blocks back to the kernel when they are freed, so a
    tensor allocated on every call (the dense 13 MB gradient of an embedding table, say)
    faults in fresh pages each time: on the CPU machine this made one backward 0.5 ms in
    one run and 3 ms in the next, whichever implementation it was. Kept memory is reused
    warm, as with the jemalloc or tcmalloc that PyTorch's CPU performance guide suggests,
    and every implementation gets the same allocator."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc
        return None
    if not (mallopt(_M_MMAP_THRESHOLD, _NEVER) and mallopt(_M_TRIM_THRESHOLD, _NEVER)):
        return None
    return "glibc keeping freed memory (mallopt)"


def rounds(device: torch.device) -> int:
    """How many interleaved rounds implementations compared side by side get here: one on a
    GPU (do_bench's median is steady there), ``CPU_ROUNDS`` on the CPU."""
    return CPU_ROUNDS if device.type == "cpu" else 1


def median_of(timings: list[Timing]) -> Timing:
    """The median of several rounds' timings of one call (the lower middle one of an even
    number), with its method."""
    ordered = sorted(timings, key=lambda t: t.ms)
    return ordered[(len(ordered) - 1) // 2]


def median_ms(
    fn: Callable[[], object],
    device: torch.device,
    *,
    graph: bool = True,
    min_run_s: float = CPU_MIN_RUN_S,
) -> float:
    """``time_call(fn, device, graph=graph, min_run_s=min_run_s).ms``."""
    return time_call(fn, device, graph=graph, min_run_s=min_run_s).ms


def copy_gbs(nbytes: int, device: torch.device) -> float:
    """Copy bandwidth in GB/s moving ``nbytes`` in all (half read, half written)."""
    src = torch.empty(max(nbytes // 2, 1), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return nbytes / median_ms(lambda: dst.copy_(src), device) / 1e6


def matmul_tflops(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device) -> float:
    """torch.matmul's rate in TFLOP/s for an (m, k) @ (k, n) product."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    return 2 * m * k * n / median_ms(lambda: a @ b, device) / 1e9
