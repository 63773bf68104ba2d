"""Two broken Triton kernels through the compile gate (run by test_gate.py in a process
without TRITON_INTERPRET): one that spills registers, one that does not compile. Prints the
gate's problems for each as one JSON line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
import triton
import triton.language as tl

from muxkernels.gate import collect, sass, triton_launches
from muxkernels.gate.variants import Variant


@triton.jit
def _spilling_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr):
    """Holds BLOCK values per program in one warp: far more than 255 registers."""
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    tl.store(out_ptr + offs, tl.sort(x * x + 1.0))  # keeps every value live


@triton.jit
def _broken_kernel(x_ptr, BLOCK: tl.constexpr):
    tl.store(x_ptr + tl.arange(0, BLOCK), 1.0)  # BLOCK = 3: not a power of two


def _spills() -> list[str]:
    found = []
    with triton_launches.compile_only(lambda name, grid, compiled: found.append(compiled)):
        x, out = torch.empty(8192, device="cuda"), torch.empty(8192, device="cuda")
        _spilling_kernel[(1,)](x, out, BLOCK=8192, num_warps=1)
    with tempfile.TemporaryDirectory() as tmp:
        return collect.triton_variant("_spilling_kernel", found[0], Path(tmp)).problems()


def _does_not_compile() -> list[str]:
    def broken_run(config, sizes_for):
        _broken_kernel[(1,)](torch.empty(4, device="cuda"), BLOCK=3)

    triton_launches._run = broken_run  # the gate's per-config step, stood in for
    config = triton_launches.Config("broken", "fwd", "bf16", 2, 8)
    (launch,) = triton_launches.launches([config], None)
    variant = Variant("triton", launch.kernel, str(config), sass.Function("-"), error=launch.error)
    return variant.problems()


if __name__ == "__main__":
    print(json.dumps({"spills": _spills(), "does_not_compile": _does_not_compile()}))
