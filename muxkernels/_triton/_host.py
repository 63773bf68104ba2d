"""Host-side helpers shared by the Triton launchers: dtypes, layout checks, the device."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence

import torch
import triton.language as tl

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def interpreting(device: torch.device) -> bool:
    """Whether kernels on ``device`` run under the Triton interpreter (CPU tensors)."""
    return device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def multiprocessors(device: torch.device) -> int:
    """The SM count of a CUDA device (asked once per device)."""
    return _multiprocessors(torch.device(device).index or 0)


def acc_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when any input is float64, float32 otherwise (the reference's compute dtype)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def tl_dtype(dtype: torch.dtype) -> tl.dtype:
    """The Triton dtype of a floating torch dtype."""
    return {
        torch.float16: tl.float16,
        torch.bfloat16: tl.bfloat16,
        torch.float32: tl.float32,
        torch.float64: tl.float64,
    }[dtype]


def on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Makes t's CUDA device current for the launch (Triton launches on the current one)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def check_contiguous(**tensors: torch.Tensor | None) -> None:
    """The kernels index every tensor as contiguous; anything else is the caller's bug."""
    for name, t in tensors.items():
        if t is not None and not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (shape {tuple(t.shape)})")


def check_grad(name: str, grad: torch.Tensor, expected: tuple[int, ...]) -> None:
    """An incoming gradient must have its output's shape ``expected``, a float dtype, and be
    contiguous."""
    if tuple(grad.shape) != expected:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(grad.shape)}")
    if grad.dtype not in FLOATS:
        raise ValueError(f"{name} must be a float tensor, got {grad.dtype}")
    check_contiguous(**{name: grad})


def outputs(
    given: Sequence[torch.Tensor | None],
    likes: Sequence[torch.Tensor],
    asked: Sequence[bool] | None = None,
) -> tuple[torch.Tensor, ...]:
    """The launcher's outputs: given[k] where not None, else a new tensor like likes[k], or an
    empty (0,) one where asked[k] is False (a gradient not asked for)."""
    asked = (True,) * len(likes) if asked is None else asked
    return tuple(
        (torch.empty_like(like) if want else like.new_empty((0,))) if out is None else out
        for out, like, want in zip(given, likes, asked, strict=True)
    )


def zeroed(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The tensors, filled with 0 (the gradients of an empty input)."""
    for t in tensors:
        t.zero_()
    return tensors
