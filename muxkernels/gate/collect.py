"""Builds the gate's variants: Triton specialisations and CUDA instantiations with their SASS.

The Triton sweep is split over worker processes (each compiles its share of the configs;
Triton's on-disk cache is shared, so a kernel two workers need is compiled once when the
second comes after the first). Every cubin is read with the ``cuobjdump`` Triton ships.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import tempfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from . import sass
from .variants import Variant


def _tool(name: str) -> str:
    import triton.knobs

    return getattr(triton.knobs.nvidia, name).path


def _run(*command: str) -> str:
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {out.stderr.strip()}")
    return out.stdout


def read_binary(path: Path) -> dict[str, sass.Function]:
    """Every function of a shared library with embedded sm_90 code (cuobjdump -sass)."""
    cuobjdump = _tool("cuobjdump")
    return sass.parse(_run(cuobjdump, "-res-usage", str(path)), _run(cuobjdump, "-sass", str(path)))


def read_cubin(path: Path) -> sass.Function:
    """The one function of a Triton cubin (nvdisasm without dataflow analysis, the fastest
    disassembly: most of the gate's time goes to it)."""
    sass_text = _run(_tool("nvdisasm"), "-ndf", "-c", str(path))
    return next(
        iter(sass.parse(_run(_tool("cuobjdump"), "-res-usage", str(path)), sass_text).values())
    )


def _specialisation(compiled) -> str:
    """Constexpr arguments, pointer dtypes, warps and stages of one Triton kernel."""
    names = compiled.src.fn.arg_names
    constants = [
        f"{names[path[0]]}={getattr(value, 'name', value)}"
        for path, value in sorted(compiled.src.constants.items())
        if len(path) == 1
    ]
    pointers = sorted({v[1:] for v in compiled.src.signature.values() if str(v).startswith("*")})
    meta = compiled.metadata
    return " ".join([*constants, f"ptr={'/'.join(pointers)}", f"w{meta.num_warps}",
                     f"s{meta.num_stages}"])  # fmt: skip


def triton_variant(kernel: str, compiled, scratch: Path) -> Variant:
    """The variant of one compiled Triton kernel, its cubin read from a file in ``scratch``."""
    cubin = scratch / f"{compiled.hash}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    meta = compiled.metadata
    return Variant("triton", kernel, _specialisation(compiled), read_cubin(cubin),
                   warps=meta.num_warps, shared_bytes=meta.shared)  # fmt: skip


def _triton_share(configs: list, sizes: tuple[int, int]) -> list[Variant]:
    """Worker: compiles one share of the configs and reads each distinct cubin."""
    from ..bench.workloads import Sizes
    from . import triton_launches

    groups, length = sizes
    found = triton_launches.launches(
        configs, lambda d, dtype: Sizes(groups=groups, length=length, d=d, dtype=dtype)
    )
    variants: dict[str, Variant] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for launch in found:
            if launch.error:
                variants[f"error {launch.config}"] = Variant(
                    "triton", launch.kernel, str(launch.config), sass.Function("-"),
                    configs=[str(launch.config)], error=launch.error,
                )  # fmt: skip
                continue
            variant = variants.get(launch.compiled.hash)
            if variant is None:
                variant = triton_variant(launch.kernel, launch.compiled, Path(tmp))
                variants[launch.compiled.hash] = variant
            variant.configs.append(str(launch.config))
            variant.grids.add(launch.grid)
    return list(variants.values())


def _merge(parts: list[list[Variant]]) -> list[Variant]:
    """Joins the workers' variants (the same cubin from two workers is one variant)."""
    merged: dict[tuple, Variant] = {}
    for part in parts:
        for v in part:
            key = (v.kernel, v.specialisation, v.error)
            if key in merged:
                merged[key].configs.extend(v.configs)
                merged[key].grids |= v.grids
            else:
                merged[key] = v
    return list(merged.values())


def triton_variants(configs: list, sizes: tuple[int, int], jobs: int) -> list[Variant]:
    """Every Triton specialisation the configs produce, compiled by ``jobs`` worker
    processes. The workers never inherit TRITON_INTERPRET (a process that imported Triton
    with it set interprets kernels instead of compiling them)."""
    by_op: dict[str, list] = defaultdict(list)
    for config in configs:
        by_op[config.op].append(config)
    shares: list[list] = [[] for _ in range(max(1, jobs))]
    for op_configs in sorted(by_op.values(), key=len, reverse=True):
        min(shares, key=len).extend(op_configs)  # whole ops per worker: kernels rarely shared
    shares = [share for share in shares if share]
    if not shares:
        return []
    interpret = os.environ.pop("TRITON_INTERPRET", None)
    spawn = multiprocessing.get_context("spawn")
    try:  # a worker that dies (a crash in a compiler) raises here instead of hanging
        with ProcessPoolExecutor(len(shares), mp_context=spawn) as pool:
            parts = list(pool.map(_triton_share, shares, [sizes] * len(shares)))
    finally:
        if interpret is not None:
            os.environ["TRITON_INTERPRET"] = interpret
    return _merge(parts)


def cuda_variants(configs: list, sizes: tuple[int, int]) -> tuple[list[Variant], str]:
    """Every instantiation compiled into muxkernels._C (one row each), split by the launch
    shapes (block, dynamic shared memory) the benchmark configs use it with; and a note
    when part of that could not be read."""
    import importlib

    from .. import _extension
    from . import cuda_launches

    if not _extension.load():
        return [], "muxkernels._C is not built: the CUDA kernels were not checked"
    library = Path(importlib.import_module("muxkernels._C").__file__)
    instantiations = {
        cuda_launches.normalise(name): function for name, function in read_binary(library).items()
    }
    unlaunched = dict(instantiations)
    launched: dict[tuple, Variant] = {}
    note = ""
    if cuda_launches.available():
        for launch in cuda_launches.launches(configs, *sizes):
            function = instantiations.get(launch.kernel)
            if function is None:
                raise RuntimeError(f"{launch.kernel} is launched but not in {library.name}")
            unlaunched.pop(launch.kernel, None)
            threads = launch.block[0] * launch.block[1] * launch.block[2]
            key = (launch.kernel, launch.block, launch.dynamic_shared)
            if key not in launched:
                kernel, _, arguments = launch.kernel.partition("<")
                block = "×".join(str(b) for b in launch.block if b > 1) or "1"
                launched[key] = Variant(
                    "cuda", kernel, f"{arguments.rstrip('>')} block={block}", function,
                    warps=-(-threads // 32),
                    shared_bytes=function.shared_bytes + launch.dynamic_shared,
                )  # fmt: skip
            launched[key].configs.append(str(launch.config))
            launched[key].grids.add(launch.grid)
    else:
        note = "no emulator sources here (tests/cuda_emulator): CUDA launch shapes unknown"
    rest = []
    for name, function in unlaunched.items():
        kernel, _, arguments = name.partition("<")
        rest.append(Variant("cuda", kernel, arguments.rstrip(">") or "-", function,
                            shared_bytes=function.shared_bytes))  # fmt: skip
    return [*launched.values(), *rest], note
