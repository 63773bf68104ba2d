"""How far a result may be from a float64 computation: one table per purpose, by dtype.

Every comparison of the package's results with float64 (the tests, and ``muxkernels check``)
takes its bound from here, so that measurements on a new machine tune them in one place.
Elementwise, for a result ``got`` of an exact value ``want``::

    |got - want| <= rtol * |want| + atol * max|want| + floor

``rtol`` covers the rounding of each output element, ``atol`` the arithmetic's error relative
to the tensor's scale (which ``|want|`` alone misses where terms cancel), and ``floor`` the
spacing of subnormal numbers of the result's dtype. When the caller knows the magnitude
``m`` of the terms ``want`` sums (``m >= |want|``, where cancellation shows), the bound is
``rtol * m + floor``.

Purposes:

``KERNEL``
    One kernel (or one compiled operator's CPU implementation) against float64 on the same
    rounded inputs: outputs and gradients. Kernels accumulate in fp32 (fp64 for float64),
    so the error is about the rounding of the output: 4 units of roundoff for half
    precision (``rtol``), the accumulation's relative error for the rest.
``REFERENCE``
    A public op on the reference backend, run in the dtype, against float64 on the same
    rounded inputs: its intermediate tensors (GEMM outputs, activations) are rounded too.
``BACKEND``
    A public op, layer or model on a kernel backend against float64 (or against the
    reference backend) on the same inputs: within twice the reference backend's bound.

The values are the tightest of the tables the tests used to carry that the CPU suite
passes (run it with ``MUXKERNELS_TOLERANCE_REPORT=1`` to see the largest error / bound of
each entry). What only a GPU runs (compiled Triton kernels, bfloat16 CUDA kernels, the
benchmark shapes) is bounded by the same entries, from the rounding analysis above; the
first GPU run's report is what to tune them with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Bound:
    """``|got - want| <= rtol * |want| + atol * max|want| + floor`` (see the module)."""

    rtol: float
    atol: float

    def limit(
        self, want: torch.Tensor, dtype: torch.dtype, magnitude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The elementwise bound (float64) for a result of ``dtype`` whose exact value is
        ``want``, or that sums terms of magnitude ``magnitude`` when given."""
        floor = subnormal_spacing(dtype)
        if magnitude is not None:
            return self.rtol * magnitude.double() + floor
        size = want.double().abs()
        scale = size.max() if size.numel() else size.new_zeros(())
        return self.rtol * size + self.atol * scale + floor

    def scaled(self, factor: float) -> Bound:
        return Bound(self.rtol * factor, self.atol * factor)


def subnormal_spacing(dtype: torch.dtype) -> float:
    """The gap between subnormal numbers of ``dtype``: the rounding error of a result that
    small (float16: 2^-24)."""
    info = torch.finfo(dtype)
    return info.smallest_normal * info.eps


KERNEL: dict[torch.dtype, Bound] = {
    torch.float64: Bound(1e-12, 1e-12),
    torch.float32: Bound(1e-5, 1e-5),
    torch.float16: Bound(2e-3, 2e-4),
    torch.bfloat16: Bound(8e-3, 1e-3),
}

REFERENCE: dict[torch.dtype, Bound] = {
    torch.float64: Bound(1e-12, 1e-12),
    torch.float32: Bound(0.0, 1e-5),
    torch.float16: Bound(0.0, 2.0**-10),
    torch.bfloat16: Bound(0.0, 2.0**-7),
}

# How many times further from float64 than the reference backend a kernel backend may be
# (tests/test_half_precision.py measures both errors on the same inputs).
BACKEND_FACTOR = 2.0

BACKEND: dict[torch.dtype, Bound] = {
    dtype: b.scaled(BACKEND_FACTOR) for dtype, b in REFERENCE.items()
}

PURPOSES: dict[str, dict[torch.dtype, Bound]] = {
    "kernel": KERNEL,
    "reference": REFERENCE,
    "backend": BACKEND,
}
