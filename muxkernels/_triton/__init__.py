"""The Triton backend: kernels, launchers and their ``muxkernels::<op>_triton`` operators.

One module per op family (kernels, launcher and registration together). ``load()``
imports them once, which registers the operators with the schemas and fakes of
``muxkernels._opdefs``. Triton kernels run on CUDA tensors, and on CPU tensors under the
interpreter (``TRITON_INTERPRET=1``, set before triton is first imported), which is how
the CPU test suite checks them.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading

__all__ = ["MODULES", "load", "load_error"]

# The modules that register operators, in import order.
MODULES: tuple[str, ...] = ("hadamard_mux", "ortho_mux", "demux_gather", "mlp_demux")

_lock = threading.Lock()
_loaded: bool | None = None
_error: BaseException | None = None


def load() -> bool:
    """Imports triton and the kernel modules once; says whether the operators exist."""
    global _loaded, _error
    if _loaded is None:
        with _lock:
            if _loaded is None:
                try:
                    if importlib.util.find_spec("triton") is None:
                        raise ImportError("triton is not installed")
                    for module in MODULES:
                        importlib.import_module(f"{__name__}.{module}")
                except ImportError as err:
                    _error, _loaded = err, False
                else:
                    from .. import _opdefs

                    _opdefs.register_fakes("triton")
                    _loaded = True
    return _loaded


def load_error() -> BaseException | None:
    """Why ``load()`` failed, or None."""
    return _error
