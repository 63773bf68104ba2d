"""Microbenchmarks of every op and implementation, with ceilings measured in the same run.

``measure()`` times one workload (``muxkernels.bench.workloads``) in each mode: ``fwd``
(inference, no autograd), ``bwd`` (the backward alone, graph kept from one forward) and
``fwd+bwd``. Each row reports the median time, the bandwidth over the op's byte floor and
its fraction of a copy of the same size, the GEMM rate and its fraction of torch.matmul on
the op's GEMM shape, and the speedups over the eager reference, its torch.compile and the
published layers' form. An implementation that fails (any exception: a Triton kernel that
does not compile or exceeds the chip's resources, out of memory, a backend missing here)
gives a row with its error and no time, and the measurement goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch

from . import timing
from .workloads import Sizes, Workload, build

IMPLS = ("eager", "compiled", "published", "cpu", "triton", "cuda")
BASELINES = ("eager", "compiled", "published")  # what the speedup columns divide by


@dataclass
class Row:
    """One (op, N, mode, implementation) timing and its ratios (NaN where not defined).

    ``timing`` is how the median was taken: "graph", "direct" or "cpu" (see ``timing``),
    or "failed", with ``error`` saying why (``ms`` and the ratios are then NaN).
    """

    op: str
    n: int
    shape: str
    mode: str
    impl: str
    ms: float
    timing: str
    gbs: float
    of_copy: float
    tflops: float
    of_matmul: float
    vs_eager: float
    vs_compiled: float
    vs_published: float
    error: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def timed_call(w: Workload, impl: str, mode: str) -> Callable[[], object]:
    """A no-argument call running ``impl`` of ``w`` in ``mode``: the forward without
    autograd, the backward of one kept forward (retain_graph), or both."""
    fn = w.impls[impl]
    if mode == "fwd":

        def forward() -> object:
            with torch.no_grad():
                return fn(w.inputs)

        return forward
    x = {k: (v.detach().requires_grad_(k in w.trainable) if v.is_floating_point() else v)
         for k, v in w.inputs.items()}  # fmt: skip
    leaves = [x[k] for k in w.trainable]
    out = fn(x)
    grad_out = torch.randn_like(out)
    if mode == "bwd":
        return lambda: torch.autograd.grad(out, leaves, grad_out, retain_graph=True)
    return lambda: torch.autograd.grad(fn(x), leaves, grad_out)


def _ratio(num: float, den: float) -> float:
    return num / den if den and not math.isnan(den) else math.nan


def error_text(err: BaseException) -> str:
    """``Type: first non-empty line of the message`` (at most 300 characters)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def measure(
    op: str,
    n: int,
    modes: Iterable[str],
    impls: Iterable[str],
    sizes: Sizes,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Time ``op`` at N = ``n`` in every mode and implementation. An implementation that
    fails gives a row with its error (and is logged); the others are still timed."""
    w = build(op, n, sizes, device)
    copy = timing.copy_gbs(w.bytes["fwd"], device)
    peak = timing.matmul_tflops(*w.gemm, sizes.dtype, device) if w.gemm else math.nan
    rows: list[Row] = []
    for mode in modes:
        times = _time_impls(w, mode, [i for i in impls if i in w.impls], device, log)
        base = {b: _ms(times.get(b)) for b in BASELINES}
        for impl, t in times.items():
            if isinstance(t, str):
                nan = math.nan
                rows.append(Row(op, n, w.shape, mode, impl, nan, "failed", nan, nan, nan, nan,
                                nan, nan, nan, error=t))  # fmt: skip
                continue
            gbs = w.bytes.get(mode, 0) / t.ms / 1e6
            tflops = w.flops.get(mode, 0) / t.ms / 1e9 or math.nan
            rows.append(
                Row(op, n, w.shape, mode, impl, t.ms, t.method, gbs, gbs / copy, tflops,
                    _ratio(tflops, peak), *(_ratio(base[b], t.ms) for b in BASELINES))
            )  # fmt: skip
    return rows


def _time_impls(
    w: Workload, mode: str, impls: list[str], device: torch.device, log: Callable[[str], None]
) -> dict[str, timing.Timing | str]:
    """Each implementation's timing of ``w`` in ``mode``, or its error text. Timed in turn,
    ``timing.rounds(device)`` times (interleaved, so the load of a shared CPU affects them
    alike), keeping each one's median; a failure is recorded once and not retried."""
    rounds: dict[str, list[timing.Timing]] = {impl: [] for impl in impls}
    errors: dict[str, str] = {}
    for _ in range(timing.rounds(device)):
        for impl in (i for i in impls if i not in errors):
            try:
                with timing.side_stream(device):  # the kept forward on the capture stream
                    rounds[impl].append(timing.time_call(timed_call(w, impl, mode), device))
            except Exception as err:  # any failure: recorded in its row, the run goes on
                errors[impl] = error_text(err)
                log(f"failed: {w.op} N={w.n} {mode} {impl}: {errors[impl]}")
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return {impl: errors.get(impl) or timing.median_of(rounds[impl]) for impl in impls}


def _ms(t: timing.Timing | str | None) -> float:
    return t.ms if isinstance(t, timing.Timing) else math.nan


def run(
    ops: Iterable[str],
    ns: Iterable[int],
    modes: Iterable[str],
    impls: Iterable[str],
    sizes: Sizes,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """``measure`` every op at every N."""
    modes, impls, ns = tuple(modes), tuple(impls), tuple(ns)
    return [
        row for op in ops for n in ns for row in measure(op, n, modes, impls, sizes, device, log)
    ]
