"""Timing and ceilings measured in the same run as the ops they are compared with.

On a GPU, times are ``triton.testing.do_bench`` medians (L2 flushed between calls); on the
CPU, ``torch.utils.benchmark`` medians. A copy of the op's own byte count gives the
bandwidth ceiling and ``torch.matmul`` of the op's GEMM shape the compute ceiling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def median_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Median wall time of ``fn()`` in milliseconds (after a warm-up call)."""
    fn()  # compile, autotune, allocate
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=10, rep=50, return_mode="median"))
    from torch.utils.benchmark import Timer

    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.1).median * 1e3


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
