"""Registers a Python launcher as the operator ``muxkernels::<name>_triton``."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .. import _opdefs
from ._host import on_device


def _first_tensor(name: str, args: tuple) -> torch.Tensor:
    """The first tensor argument, checked to be one the kernels can run on."""
    first = next(arg for arg in args if isinstance(arg, torch.Tensor))
    if first.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"muxkernels::{name}_triton runs on CUDA tensors, or on CPU tensors under "
            f"the Triton interpreter (TRITON_INTERPRET=1); got a tensor on {first.device}"
        )
    return first


def triton_op(name: str) -> Callable[[Callable[..., object]], object]:
    """Decorator: registers ``launcher`` as ``muxkernels::<name>_triton``.

    The schema is ``muxkernels._opdefs.SCHEMAS[name]``; the implementation serves every
    device (CUDA, and CPU under the interpreter) and launches on the device of the first
    tensor argument; the fake is registered by ``load()``.
    """

    def register(launcher: Callable[..., object]) -> object:
        def implementation(*args):
            with on_device(_first_tensor(name, args)):
                return launcher(*args)

        implementation.__name__ = launcher.__name__
        implementation.__doc__ = launcher.__doc__
        return torch.library.custom_op(
            _opdefs.qualified_name(name, "triton"),
            implementation,
            mutates_args=(),
            schema=_opdefs.SCHEMAS[name],
        )

    return register
