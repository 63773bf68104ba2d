"""Microbenchmarks of every op and implementation, with ceilings measured in the same run.

``run()`` times each workload (``muxkernels.bench.workloads``) in each mode: ``fwd``
(inference, no autograd), ``bwd`` (the backward alone, graph kept from one forward) and
``fwd+bwd``. Each row reports the median time, the bandwidth against the op's byte floor
and against a copy of the same size, the GEMM rate against torch.matmul of the same shape
where the op has a GEMM, and the speedups over the eager and compiled reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch

from .timing import copy_gbs, matmul_tflops, median_ms
from .workloads import MODES, OPS, Sizes, Workload, build

__all__ = ["MODES", "OPS", "Row", "Sizes", "format_table", "run"]


@dataclass
class Row:
    """One (op, N, mode, implementation) timing and its ratios (NaN where not defined)."""

    op: str
    n: int
    shape: str
    mode: str
    impl: str
    ms: float
    gbs: float
    of_copy: float
    tflops: float
    of_matmul: float
    vs_eager: float
    vs_compiled: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _timed_call(w: Workload, impl: str, mode: str, device: torch.device) -> Callable[[], object]:
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


def run(
    ops: Iterable[str],
    ns: Iterable[int],
    modes: Iterable[str],
    impls: Iterable[str],
    sizes: Sizes,
    device: torch.device,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Time every op × N × mode × implementation; implementations that cannot run are logged
    and skipped (a kernel backend missing here, a mode an implementation lacks)."""
    rows: list[Row] = []
    for op in ops:
        for n in ns:
            w = build(op, n, sizes, device)
            copy = copy_gbs(w.bytes["fwd"], device)
            peak = matmul_tflops(*w.gemm, sizes.dtype, device) if w.gemm else math.nan
            for mode in modes:
                times: dict[str, float] = {}
                for impl in impls:
                    if impl not in w.impls:
                        continue
                    try:
                        times[impl] = median_ms(_timed_call(w, impl, mode, device), device)
                    except (NotImplementedError, RuntimeError) as err:
                        log(f"skip {op} N={n} {mode} {impl}: {str(err).splitlines()[0][:160]}")
                for impl, ms in times.items():
                    gbs = w.bytes.get(mode, 0) / ms / 1e6
                    tflops = w.flops.get(mode, 0) / ms / 1e9
                    rows.append(
                        Row(op, n, w.shape, mode, impl, ms, gbs, gbs / copy,
                            tflops if tflops else math.nan, _ratio(tflops, peak),
                            _ratio(times.get("eager", math.nan), ms),
                            _ratio(times.get("compiled", math.nan), ms))
                    )  # fmt: skip
            del w
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


COLUMNS = ("op", "n", "mode", "impl", "ms", "gbs", "of_copy", "tflops", "of_matmul",
           "vs_eager", "vs_compiled")  # fmt: skip
HEADERS = ("op", "N", "mode", "impl", "ms", "GB/s", "of copy", "TFLOP/s", "of matmul",
           "vs eager", "vs compiled")  # fmt: skip


def format_table(rows: list[Row]) -> str:
    """A fixed-width plain-text table of the rows (NaN shown as "-")."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:.3g}"
        return str(v)

    cells = [list(HEADERS)] + [[cell(getattr(r, c)) for c in COLUMNS] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(HEADERS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
