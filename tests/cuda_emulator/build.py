"""Builds the CPU emulation of csrc/'s kernels (emu.h) into build/emulator/libmuxemu.so.

The kernel files are rewritten by translate.py and compiled with g++ (C++20, the CUDA
headers from CUDA_HOME or /usr/local/cuda) with harness.cpp, the extern "C" entry points.
Used by test_emulated_kernels.py and by the compile gate (its CUDA launch shapes); about
a minute on two cores the first time, then again only when a source changed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CSRC = ROOT / "csrc"
BUILD = ROOT / "build" / "emulator"
CUDA_INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
KERNELS = ("hadamard_mux", "hadamard_mux_bwd", "embed_mux", "demux_gather_fwd", "demux_gather_bwd")


def _translate(source: str) -> str:
    spec = importlib.util.spec_from_file_location("translate", HERE / "translate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.translate(source)


def available() -> bool:
    """Whether g++ and the CUDA headers the emulator compiles against are here."""
    return shutil.which("g++") is not None and (CUDA_INCLUDE / "cuda_runtime.h").is_file()


def build() -> Path:
    """Translates and compiles the kernels and the harness (again when a source changed)."""
    library = BUILD / "libmuxemu.so"
    sources = [*CSRC.glob("*.cu"), *CSRC.glob("*.h"), *CSRC.glob("*.cuh"), *HERE.iterdir()]
    if library.exists() and library.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return library
    BUILD.mkdir(parents=True, exist_ok=True)
    units = [HERE / "harness.cpp"]
    for name in KERNELS:
        units.append(BUILD / f"{name}.cpp")
        units[-1].write_text(_translate((CSRC / f"{name}.cu").read_text()))
    flags = ["-std=c++20", "-O1", "-fPIC", "-w", f"-I{HERE}", f"-I{CSRC}", f"-I{CUDA_INCLUDE}"]
    jobs = [
        subprocess.Popen(["g++", *flags, "-c", str(u), "-o", str(BUILD / f"{u.stem}.o")])
        for u in units
    ]
    if not all(job.wait() == 0 for job in jobs):
        raise RuntimeError("compiling the emulated kernels failed")
    objects = [str(BUILD / f"{u.stem}.o") for u in units]
    subprocess.run(["g++", "-shared", "-o", str(library), *objects, "-lpthread"], check=True)
    return library
