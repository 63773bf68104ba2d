"""The CUDA kernels of ``muxkernels._C``: every instantiation, and the launches at the
benchmark shapes.

Instantiations: every kernel compiled into the built extension (its sm_90a SASS, read with
``cuobjdump``), which is every one the launchers can reach (``d`` up to 8192); each is
checked whether or not the benchmark shapes use it.

Launches: the launchers of csrc/ compiled for the CPU emulator (``tests/cuda_emulator``,
so this part needs the source tree) run in record-only mode at the benchmark shapes: they
choose their paths, template arguments, grids, blocks and dynamic shared memory exactly as
on a GPU, and the emulator notes each launch instead of running it. Pointers are aligned
stand-in addresses (the launchers only test their alignment).
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ROOT / "tests" / "cuda_emulator"
DTYPE_CODES = {"fp16": 0, "bf16": 1, "fp32": 2, "fp64": 3}
GATHERS = {"token": 0, "sequence": 1, "selected": 2}
_ADDRESS = 1 << 20  # any 16-byte aligned address; never dereferenced in record mode


@dataclass(frozen=True)
class CudaConfig:
    """One launcher call: op, mode, data dtype, parameter dtype, N, d and the gather."""

    op: str
    mode: str
    dtype: str
    param_dtype: str
    n: int
    d: int

    def __str__(self) -> str:
        params = "" if self.param_dtype == self.dtype else f"+{self.param_dtype}"
        return f"{self.op} {self.mode} {self.dtype}{params} N={self.n} d={self.d}"


@dataclass
class CudaLaunch:
    kernel: str  # normalised: "demux_gather_fwd_kernel<BFloat16, 8, 3>"
    config: CudaConfig
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    dynamic_shared: int


def normalise(name: str) -> str:
    """A kernel's name with its template arguments, namespaces and parameters dropped:
    ``void muxkernels::(anonymous namespace)::k<muxkernels::detail::Half, 8>(…)`` and
    g++'s ``muxkernels::{anonymous}::k<muxkernels::detail::Half, 8>`` → ``k<Half, 8>``."""
    name = re.sub(r"^.*\[with auto F = (.*)\]$", r"\1", name)
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"\((?!anonymous namespace\)).*$", "", name)  # parameters
    return re.sub(r"[\w{}()]+(?: namespace\))?::", "", name).replace("{anonymous}", "")


def available() -> bool:
    """Whether the emulator sources (a source checkout) and g++ are here."""
    return (EMULATOR / "build.py").is_file() and _builder().available()


def _builder():
    spec = importlib.util.spec_from_file_location("muxemu_build", EMULATOR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Recorder:
    """The emulated launchers in record-only mode."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(str(_builder().build()))
        self.lib.emu_record(1)

    def take(self, config: CudaConfig) -> list[CudaLaunch]:
        found = []
        name = ctypes.create_string_buffer(1024)
        dims = (ctypes.c_int64 * 7)()
        for i in range(self.lib.emu_record_count()):
            self.lib.emu_record_get(i, name, len(name), dims)
            kernel = normalise(name.value.decode())
            found.append(CudaLaunch(kernel, config, tuple(dims[0:3]), tuple(dims[3:6]), dims[6]))
        self.lib.emu_record(1)  # clears
        return found


def _pointer(k: int = 0) -> ctypes.c_void_p:
    return ctypes.c_void_p(_ADDRESS * (k + 1))


def _sizes(*values: int):
    return (ctypes.c_int64 * len(values))(*values)


def _launch(lib, config: CudaConfig, groups: int, length: int) -> int:
    """Calls the launcher(s) of one config; returns the launchers' status (0 = ok)."""
    i64, n, d = ctypes.c_int64, config.n, config.d
    dt, pt = DTYPE_CODES[config.dtype], DTYPE_CODES[config.param_dtype]
    if config.op == "hadamard_mux" and config.mode == "fwd":
        return lib.emu_hadamard_mux_fwd(
            _pointer(0), _pointer(1), _pointer(2), i64(groups), i64(n), i64(length), i64(d), dt, pt
        )
    if config.op == "hadamard_mux":
        partial = _pointer(4) if config.mode == "bwd+params" else ctypes.c_void_p(0)
        return lib.emu_hadamard_mux_bwd(
            _pointer(0), _pointer(1), _pointer(2), pt, _pointer(3), partial,
            i64(groups), i64(n), i64(length), i64(d), dt,
        )  # fmt: skip
    if config.op == "embed_mux":
        ids = (ctypes.c_void_p * 5)(*(_pointer(k).value for k in range(5)))
        tables = (ctypes.c_void_p * 3)(*(_pointer(5 + k).value for k in range(3)))
        params = (ctypes.c_void_p * 3)(*(_pointer(8 + k).value for k in range(3)))
        return lib.emu_embed_mux_fwd(
            ids, tables, params, (ctypes.c_int * 3)(pt, pt, pt), _pointer(11),
            _sizes(groups, n, length, d), ctypes.c_double(1e-5), dt,
        )  # fmt: skip
    gather = {"index_demux_sequence": "sequence", "index_demux_selected": "selected"}.get(
        config.op, "token"
    )
    a_groups = 1 if config.op == "index_pos_demux" else groups
    if config.op != "index_pos_demux":
        length = length + n + 1  # the index prefix
    # a and c, the ops' GEMM outputs, are float32 for half data (muxkernels.ops._precise)
    terms = DTYPE_CODES["fp32"] if config.dtype in ("bf16", "fp16") else dt
    args = (
        _pointer(0), terms, _pointer(1), _pointer(2), pt, _pointer(3), pt, _pointer(4),
        _sizes(groups, a_groups, n, length, d), ctypes.c_double(1e-5), GATHERS[gather],
        i64(min(n, length - 1)), terms, dt,
    )  # fmt: skip
    if config.mode == "fwd":
        return lib.emu_demux_gather_fwd(*args, _pointer(5))
    buffers = (ctypes.c_void_p * 5)(*(_pointer(6 + k).value for k in range(5)))
    return lib.emu_demux_gather_bwd(*args, buffers, (ctypes.c_int64 * 4)(), 0)


def launches(configs: list[CudaConfig], groups: int, length: int) -> list[CudaLaunch]:
    """The launches the launchers make for each config (B' = groups, L = length)."""
    recorder = _Recorder()
    found = []
    for config in configs:
        status = _launch(recorder.lib, config, groups, length)
        if status != 0:
            raise RuntimeError(f"the CUDA launcher refused {config} (status {status})")
        found.extend(recorder.take(config))
    return found
