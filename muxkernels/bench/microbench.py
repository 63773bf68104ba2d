"""Microbenchmarks of every op and implementation, with ceilings measured in the same run.

``measure()`` times one workload (``muxkernels.bench.workloads``) in each mode: ``fwd``
(inference, no autograd), ``bwd`` (the backward alone, graph kept from one forward) and
``fwd+bwd``. Each row reports the median time, the bandwidth over the op's byte floor and
its fraction of a copy of the same size, the GEMM rate and its fraction of torch.matmul on
the op's GEMM shape, and the speedups over the eager reference, its torch.compile and the
published concat form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch

from . import timing
from .workloads import Sizes, Workload, build

IMPLS = ("eager", "compiled", "concat", "triton", "cuda")
BASELINES = ("eager", "compiled", "concat")  # what the speedup columns divide by


@dataclass
class Row:
    """One (op, N, mode, implementation) timing and its ratios (NaN where not defined).

    ``timing`` is how the median was taken: "graph", "direct" or "cpu" (see ``timing``).
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
    vs_concat: float

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


def measure(
    op: str,
    n: int,
    modes: Iterable[str],
    impls: Iterable[str],
    sizes: Sizes,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Time ``op`` at N = ``n`` in every mode and implementation; an implementation that
    cannot run (a kernel backend missing here, out of memory) is logged and skipped."""
    w = build(op, n, sizes, device)
    copy = timing.copy_gbs(w.bytes["fwd"], device)
    peak = timing.matmul_tflops(*w.gemm, sizes.dtype, device) if w.gemm else math.nan
    rows: list[Row] = []
    for mode in modes:
        times: dict[str, timing.Timing] = {}
        for impl in impls:
            if impl not in w.impls:
                continue
            try:
                with timing.side_stream(device):  # the kept forward on the capture stream
                    times[impl] = timing.time_call(timed_call(w, impl, mode), device)
            except (NotImplementedError, RuntimeError) as err:  # includes out of memory
                log(f"skip {op} N={n} {mode} {impl}: {str(err).splitlines()[0][:160]}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        base = {b: times[b].ms if b in times else math.nan for b in BASELINES}
        for impl, t in times.items():
            gbs = w.bytes.get(mode, 0) / t.ms / 1e6
            tflops = w.flops.get(mode, 0) / t.ms / 1e9 or math.nan
            rows.append(
                Row(op, n, w.shape, mode, impl, t.ms, t.method, gbs, gbs / copy, tflops,
                    _ratio(tflops, peak), *(_ratio(base[b], t.ms) for b in BASELINES))
            )  # fmt: skip
    return rows


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
