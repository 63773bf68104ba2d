"""Registers a Python launcher as the operator ``muxkernels::<name>_triton``."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .. import _opdefs


def _check_runnable(name: str, args: tuple) -> None:
    for arg in args:
        if isinstance(arg, torch.Tensor):
            if arg.device.type == "cuda":
                return
            if os.environ.get("TRITON_INTERPRET") != "1":
                raise RuntimeError(
                    f"muxkernels::{name}_triton runs on CUDA tensors, or on CPU tensors under "
                    f"the Triton interpreter (TRITON_INTERPRET=1); got a tensor on {arg.device}"
                )
            return


def triton_op(name: str) -> Callable[[Callable[..., object]], object]:
    """Decorator: registers ``launcher`` as ``muxkernels::<name>_triton``.

    The schema is ``muxkernels._opdefs.SCHEMAS[name]``; the implementation serves every
    device (CUDA, and CPU under the interpreter); the fake is registered by ``load()``.
    """

    def register(launcher: Callable[..., object]) -> object:
        def implementation(*args):
            _check_runnable(name, args)
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
