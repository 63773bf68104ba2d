"""Backend selection: ``reference``, ``cpu``, ``triton``, ``cuda``, or ``auto``.

Order of precedence: an explicit ``backend=`` argument, then the ``MUXKERNELS_BACKEND``
environment variable, then ``auto``. ``auto`` picks ``cpu`` for CPU tensors (the
``reference`` for an op without it) and, for CUDA tensors, the first backend in the op's
preference list that is built and usable, else ``reference``. A backend asked for
explicitly (argument or variable) that the op lacks or that cannot run here is an error,
never a silent fallback.

``reference`` and ``cpu`` are made of ATen ops; ``triton`` and ``cuda`` call the
``muxkernels::<name>_<backend>`` operators, which must be registered to be used.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Literal

import torch

from . import _extension, _install, _opdefs, _triton

Backend = Literal["auto", "reference", "cpu", "triton", "cuda"]
BACKENDS: tuple[str, ...] = ("auto", "reference", "cpu", "triton", "cuda")
OPERATOR_BACKENDS: tuple[str, ...] = ("triton", "cuda")  # run registered muxkernels:: operators
ENV_VAR = "MUXKERNELS_BACKEND"
# Compared with ``==``: reading ``device.type`` builds its string through a C++ stream,
# which costs more than the rest of choosing a backend for a small CPU tensor.
CPU = torch.device("cpu")


def _triton_usable(device: torch.device) -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if not _triton.load():
        return False, f"the Triton kernels failed to load: {_triton.load_error()!r}"
    if device.type == "cuda":
        return True, ""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, ""
    return False, f"triton kernels need a CUDA tensor (or TRITON_INTERPRET=1), got {device}"


def _cuda_usable(device: torch.device) -> tuple[bool, str]:
    if not _extension.load():
        return False, (
            "the compiled extension muxkernels._C is not built or does not load: "
            + _install.explain(_extension.load_error())
        )
    if device.type in ("cuda", "cpu"):
        return True, ""
    return False, f"the cuda backend runs on CUDA (or, for testing, CPU) tensors, got {device}"


def _env_backend() -> str | None:
    """The backend ``MUXKERNELS_BACKEND`` names (stripped, lower case), or None when it is
    unset, empty or "auto"; ValueError when it names none.

    Reads the dict behind ``os.environ`` where CPython has one (``os.environ[...] = ...``
    and ``del`` update it): ``os.environ.get`` raises and catches a KeyError inside when
    the variable is unset, which costs more on every op call than the rest of choosing a
    backend for a small CPU tensor.
    """
    if _ENVIRON_DATA is not None:
        raw = _ENVIRON_DATA.get(_ENVIRON_KEY)
        value = None if raw is None else os.environ.decodevalue(raw)
    else:
        value = os.environ.get(ENV_VAR)
    if not value or not value.strip():
        return None
    env = value.strip().lower()
    if env not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={env!r} is not one of {BACKENDS}")
    return env if env != "auto" else None


def requested(backend: str) -> str:
    """The backend asked for: ``backend``, or for "auto" the one ``MUXKERNELS_BACKEND``
    names (still "auto" when it names none)."""
    if backend == "auto":
        return _env_backend() or "auto"
    return backend


_ENVIRON_DATA = getattr(os.environ, "_data", None)
if isinstance(_ENVIRON_DATA, dict) and hasattr(os.environ, "encodekey"):
    _ENVIRON_KEY = os.environ.encodekey(ENV_VAR)
else:
    _ENVIRON_DATA = None


class ExtensionMissingWarning(UserWarning):
    """``auto`` runs other backends on a GPU because the compiled CUDA kernels are missing."""


_warned_extension_missing = False


def _warn_extension_missing() -> None:
    """Says once per process why ``auto`` cannot use the compiled CUDA kernels on a GPU,
    and how to build them, instead of running the other backends silently."""
    global _warned_extension_missing
    if _warned_extension_missing:
        return
    _warned_extension_missing = True
    warnings.warn(
        "muxkernels: backend='auto' cannot use the compiled CUDA kernels, so it runs the "
        f"triton or reference backend: {_install.explain(_extension.load_error())}",
        ExtensionMissingWarning,
        stacklevel=4,
    )


def usable(backend: str, device: torch.device) -> tuple[bool, str]:
    """Whether ``backend`` can run on ``device`` here, and if not, why."""
    if backend == "reference":
        return True, ""
    if backend == "cpu":
        if device == CPU:
            return True, ""
        return False, f"the cpu backend runs on CPU tensors, got {device}"
    if backend == "triton":
        return _triton_usable(device)
    if backend == "cuda":
        return _cuda_usable(device)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def _missing(backend: str, kernels: tuple[str, ...]) -> list[str]:
    if backend not in OPERATOR_BACKENDS:
        return []
    return [name for name in kernels if not _opdefs.has_operator(name, backend)]


def runs(backend: str, device: torch.device, kernels: tuple[str, ...]) -> bool:
    """Whether ``backend`` can run an op needing the operators ``kernels`` on ``device``."""
    return usable(backend, device)[0] and not _missing(backend, kernels)


@torch.compiler.assume_constant_result
def resolve(
    op: str,
    backend: str,
    device: torch.device,
    implemented: tuple[str, ...],
    kernels: tuple[str, ...] = (),
) -> str:
    """The backend that runs ``op`` on ``device``.

    ``implemented`` lists the op's backends besides ``reference`` (always implemented), the
    CUDA ones in ``auto``'s order of preference (fastest first). ``kernels`` names the operators
    (``muxkernels::<name>_<backend>``) a backend must have registered to run the op, so a
    stale build is never picked. Under torch.compile the choice is made once, at trace
    time, and baked into the graph.
    """
    source = "backend argument"
    if backend == "auto":
        env = _env_backend()
        if env is not None:
            backend, source = env, f"the {ENV_VAR} environment variable"
    elif backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device == CPU:
            return "cpu" if "cpu" in implemented else "reference"
        if "cuda" in implemented and not _extension.load():
            _warn_extension_missing()
        for candidate in implemented:
            if runs(candidate, device, kernels):
                return candidate
        return "reference"
    if backend == "reference":
        return backend
    if backend not in implemented:
        have = ", ".join(("reference", *implemented))
        raise NotImplementedError(
            f"{op} has no {backend!r} backend yet (asked for by {source}); it has: {have}"
        )
    ok, why = usable(backend, device)
    if not ok:
        raise RuntimeError(f"{op}: backend {backend!r} (asked for by {source}) cannot run: {why}")
    missing = _missing(backend, kernels)
    if missing:
        names = ", ".join(_opdefs.qualified_name(m, backend) for m in missing)
        hint = ""
        if backend == "cuda":
            hint = f"; rebuild the extension: {_install.build_command()}"
        raise RuntimeError(
            f"{op}: backend {backend!r} (asked for by {source}) lacks the operators {names}{hint}"
        )
    return backend
