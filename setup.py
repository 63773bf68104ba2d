"""Build script for muxkernels' optional compiled extensions: ``muxkernels._C`` (CUDA
kernels) and ``muxkernels._C_cpu`` (the cpu backend's fused kernels, csrc/cpu/).

Package metadata lives in pyproject.toml; this file only adds the extensions. torch is
not a build requirement on purpose: the extension must be built against the torch you
already have, so install with

    pip install --no-build-isolation -e .     (editable; places _C*.so in muxkernels/)
    pip install --no-build-isolation .

Without the extensions the package is pure Python and fully usable (Triton and reference
backends, and a cpu backend made of ATen ops); the compiled operators add the CUDA C++
backend and the cpu backend's fused kernels.

Environment variables
---------------------
MUXKERNELS_BUILD_CUDA
    unset  auto: build ``muxkernels._C`` when torch was built with CUDA
           (``torch.version.cuda``) and nvcc is found, otherwise install pure Python and
           print a note saying why. Either way the decision and its reason are recorded in
           ``muxkernels/_build_info.json``, which ``muxkernels info`` (and a ``cuda``
           backend that cannot run) reads to say why the extension is missing; pip's build
           isolation (a plain ``pip install .``) shows there as torch not importable.
    ``1``  build it, and fail loudly if that is impossible.
    ``0``  never build it (pure Python install).
MUXKERNELS_BUILD_CPU
    unset or ``1``: build ``muxkernels._C_cpu`` whenever torch is importable at build time
    (any torch, CPU-only included; it needs only a C++ compiler). It is an optional
    extension: a failed compile prints a warning and the install goes on without it (the
    cpu backend then runs ATen ops; ``muxkernels info`` says so). ``0``: never build it.
MUXKERNELS_CUDA_ARCH
    GPU architectures to compile for: entries separated by ``;``, ``,`` or spaces. An entry
    is a compute capability with or without a dot or an ``sm_`` / ``compute_`` prefix, and
    with an optional ``a`` (arch-specific) or ``f`` (family) suffix: ``90a``, ``9.0a``,
    ``sm_90a``, ``80``, ``8.6``, ``100f``. Every entry produces SASS
    (``-gencode arch=compute_XX,code=sm_XX``). In addition, PTX is embedded for the
    highest entry *with its suffix dropped* (``code=compute_XX``; suffixed PTX would not
    run on other GPUs), so newer GPUs can JIT-compile the kernels.
    Default ``90a``: sm_90a SASS (H100/H200) + compute_90 PTX.
    Example ``80;90a``: sm_80 and sm_90a SASS + compute_90 PTX.
CUDA_HOME (or CUDA_PATH)
    CUDA toolkit root. Default: ``/usr/local/cuda`` if it has ``bin/nvcc``, else the
    directory above the ``nvcc`` found on PATH.
MAX_JOBS
    Number of parallel compile jobs, read by torch's ninja build as for any torch
    extension (default: all cores).

Compiler flags: ``-O3 -DNDEBUG``, no ``--use_fast_math`` (the kernels use IEEE
arithmetic); nvcc compiles the kernel files (which include only CUDA headers) as C++17,
the binding files (csrc/bindings/, one per op) are compiled with torch's own C++ standard
(C++20 for torch >= 2.10, whose headers require it). The CUDA headers that some torch
wheels ship instead of the toolkit (``cusparse.h``, ``cublas_v2.h``, ... in
``site-packages/nvidia/cu13/include`` or ``cu12/include``) are searched after the system
include directories.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from setuptools import setup

ROOT = Path(__file__).resolve().parent
EXT_NAME = "muxkernels._C"
DEFAULT_CUDA_ARCH = "90a"
INSTALL_HELPERS = ROOT / "muxkernels" / "_install.py"


def _note(message: str) -> None:
    print(f"muxkernels setup: {message}", file=sys.stderr, flush=True)


def _build_mode() -> str:
    """Returns 'auto', 'force' or 'skip' from MUXKERNELS_BUILD_CUDA."""
    value = os.environ.get("MUXKERNELS_BUILD_CUDA", "").strip()
    if value == "":
        return "auto"
    if value == "1":
        return "force"
    if value == "0":
        return "skip"
    raise SystemExit(f"MUXKERNELS_BUILD_CUDA must be unset, 0 or 1, got {value!r}")


def _install_helpers() -> ModuleType:
    """muxkernels/_install.py (standard library only), loaded by path: the package itself
    imports torch, which pip's isolated build environment does not have."""
    spec = importlib.util.spec_from_file_location("_muxkernels_install", INSTALL_HELPERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_cuda_arch(spec: str) -> list[str]:
    """Turns a MUXKERNELS_CUDA_ARCH value into nvcc -gencode flags (see module docstring)."""
    entries: list[tuple[int, str]] = []
    for raw in re.split(r"[;,\s]+", spec.strip()):
        if not raw:
            continue
        match = re.fullmatch(r"(?:sm_|compute_)?(\d+)(?:\.(\d))?([af]?)", raw.lower())
        if match is None:
            raise SystemExit(
                f"MUXKERNELS_CUDA_ARCH: cannot parse {raw!r} (expected e.g. 80, 8.0, 90a, sm_90a)"
            )
        major, minor, suffix = match.groups()
        number = int(major) * 10 + int(minor) if minor is not None else int(major)
        if (number, suffix) not in entries:
            entries.append((number, suffix))
    if not entries:
        raise SystemExit("MUXKERNELS_CUDA_ARCH lists no architecture")
    flags = [f"-gencode=arch=compute_{n}{s},code=sm_{n}{s}" for n, s in entries]
    ptx = max(n for n, _ in entries)
    flags.append(f"-gencode=arch=compute_{ptx},code=compute_{ptx}")
    return flags


def _wheel_cuda_include_dirs(cuda_version: str | None) -> list[str]:
    """CUDA include directories shipped in the nvidia wheels torch depends on."""
    try:
        import nvidia  # type: ignore[import-not-found]
    except ImportError:
        return []
    majors = ["cu13", "cu12"]
    if cuda_version:
        preferred = f"cu{cuda_version.split('.')[0]}"
        majors = [preferred] + [m for m in majors if m != preferred]
    for base in list(getattr(nvidia, "__path__", [])):
        for major in majors:
            include = Path(base) / major / "include"
            if include.is_dir():
                return [str(include)]
    return []


def _cuda_extension() -> tuple[list[Any], dict[str, Any]]:
    """Returns ([the CUDAExtension], {build_ext command}), or ([], {}) to skip it.

    The decision and its reason are written to muxkernels/_build_info.json, which
    ``muxkernels info`` reads to say why the extension is missing and how to build it."""
    mode = _build_mode()
    install = _install_helpers()
    cuda_home = install.find_cuda_home()
    if cuda_home is not None:
        os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension at import
    torch_error: BaseException | None = None
    try:
        import torch
    except ImportError as err:
        torch, torch_error = None, err
    version = None if torch is None else torch.__version__
    cuda = None if torch is None else torch.version.cuda
    build, reason = install.build_decision(mode, torch_error, version, cuda, cuda_home)
    if not build:
        install.write_record(False, reason, version, cuda)
        if mode == "force":
            raise SystemExit(f"muxkernels setup: {install.BUILD_ENV_VAR}=1 but {reason}")
        hint = "" if mode == "skip" else f" Set {install.BUILD_ENV_VAR}=1 to make this an error."
        _note(f"not building {EXT_NAME}: {reason}; installing pure Python.{hint}")
        return [], {}

    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    arch_flags = parse_cuda_arch(os.environ.get("MUXKERNELS_CUDA_ARCH", DEFAULT_CUDA_ARCH))
    cxx_flags = ["-O3", "-DNDEBUG"]
    for include in _wheel_cuda_include_dirs(torch.version.cuda):
        cxx_flags += ["-idirafter", include]
    nvcc_flags = ["-O3", "-DNDEBUG", "-std=c++17", *arch_flags]
    install.write_record(True, f"{reason}, nvcc {' '.join(arch_flags)}", version, cuda)

    os.chdir(ROOT)  # setuptools wants source paths relative to setup.py
    # One binding file per op (csrc/bindings/*.cpp, the only ones that include torch) and one
    # kernel file per kernel (csrc/*.cu); ninja compiles them in parallel (MAX_JOBS).
    sources = sorted(glob.glob("csrc/bindings/*.cpp")) + sorted(glob.glob("csrc/*.cu"))
    _note(
        f"building {EXT_NAME} with CUDA {torch.version.cuda} from {cuda_home} "
        f"(torch {torch.__version__}); nvcc arch flags: {' '.join(arch_flags)}"
    )
    extension = CUDAExtension(
        name=EXT_NAME,
        sources=sources,
        include_dirs=[str(ROOT / "csrc")],
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
    )
    return [extension], {"build_ext": BuildExtension.with_options(use_ninja=True)}


# The cpu kernels vectorize branch-free float code: neither flag changes a result (no
# reassociation, no fast-math); they let the compiler if-convert comparisons and inline sqrt.
CPU_FLAGS = ["-O3", "-DNDEBUG", "-fno-trapping-math", "-fno-math-errno"]


def _cpu_extension() -> tuple[list[Any], dict[str, Any]]:
    """Returns ([the CppExtension of csrc/cpu/], {build_ext command}), or ([], {}) when torch
    is not importable or ``MUXKERNELS_BUILD_CPU=0``."""
    value = os.environ.get("MUXKERNELS_BUILD_CPU", "").strip()
    if value not in ("", "0", "1"):
        raise SystemExit(f"MUXKERNELS_BUILD_CPU must be unset, 0 or 1, got {value!r}")
    if value == "0":
        _note("not building muxkernels._C_cpu: MUXKERNELS_BUILD_CPU=0")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError as err:
        _note(f"not building muxkernels._C_cpu: torch could not be imported ({err})")
        return [], {}
    flags, link = list(CPU_FLAGS), []
    if sys.platform.startswith("linux"):  # OpenMP threads through at::parallel_for
        flags.append("-fopenmp")
        link.append("-fopenmp")
    _note(f"building muxkernels._C_cpu (torch {torch.__version__}): {' '.join(flags)}")
    os.chdir(ROOT)
    extension = CppExtension(
        name="muxkernels._C_cpu",
        sources=sorted(glob.glob("csrc/cpu/*.cpp")),
        include_dirs=[str(ROOT / "csrc")],
        extra_compile_args=flags,
        extra_link_args=link,
        optional=True,
    )
    return [extension], {"build_ext": BuildExtension.with_options(use_ninja=True)}


cuda_modules, cuda_cmd = _cuda_extension()
cpu_modules, cpu_cmd = _cpu_extension()
setup(ext_modules=cuda_modules + cpu_modules, cmdclass={**cpu_cmd, **cuda_cmd})
