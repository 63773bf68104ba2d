"""Timing and bandwidth helpers shared by the microbenchmarks.

On a GPU, times are triton.testing.do_bench medians (L2 flushed between runs); on the
CPU, torch.utils.benchmark medians. Bandwidth is compared with a copy measured in the
same run, so ratios hold on whatever machine runs them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def median_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    from torch.utils.benchmark import Timer

    fn()  # warm up (compilation, allocator)
    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.2).median * 1e3


def copy_bandwidth_gbs(nbytes: int, device: torch.device) -> float:
    """Measured copy bandwidth in GB/s: reads + writes of a ``nbytes`` buffer."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device)
    return 2 * nbytes / ms / 1e6


def format_table(header: list[str], rows: list[list[object]]) -> str:
    """Fixed-width plain-text table."""
    cells = [header] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
