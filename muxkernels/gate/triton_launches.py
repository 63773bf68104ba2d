"""Every Triton kernel specialisation the launchers produce, compiled for sm_90 without a GPU.

The public ops run with ``backend="triton"`` on fake CUDA tensors (``FakeTensorMode``: shapes,
dtypes and strides, no memory) at the benchmark shapes. Inside, the Triton operators run
their real launchers instead of their fake implementations, and each kernel launch goes
through Triton's own argument binding, so it is specialised exactly as on a GPU (integers
equal to 1 or divisible by 16, pointers aligned to 16 bytes: fake tensors count as
aligned unless their storage offset says otherwise). Then, instead of launching, Triton
compiles the specialisation for ``cuda:90`` (sm_90a, as on an H100/H200) and the gate
keeps the compiled kernel: PTX, cubin and metadata. The SM count the launchers ask for is
the H200's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from unittest import mock

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from . import hopper

DATA_INPUTS = ("embeddings", "hidden", "ids", "index")  # the rest are parameters


@dataclass(frozen=True)
class Config:
    """One op run: op, mode, dtype configuration (a ``DTYPE_NAMES`` key), N and d."""

    op: str
    mode: str  # "fwd+bwd" (gradients of the data) or "fwd+bwd+params" (of every input)
    dtype: str
    n: int
    d: int

    def __str__(self) -> str:
        return f"{self.op} {self.mode} {self.dtype} N={self.n} d={self.d}"


@dataclass
class Launch:
    """One kernel launch the launchers made, and the specialisation it compiled to."""

    kernel: str
    config: Config
    grid: tuple[int, ...]
    compiled: object  # triton.compiler.CompiledKernel
    error: str = ""


class _StubDriver:
    """What Triton asks a driver for when it binds and compiles (no launch ever happens)."""

    def __init__(self, target):
        self._target = target

    def get_current_target(self):
        return self._target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


class _Pointer:
    """A tensor argument as Triton's binder sees it: dtype and address (for alignment)."""

    def __init__(self, t: torch.Tensor):
        self.dtype = t.dtype
        self._address = t.storage_offset() * t.element_size()

    def data_ptr(self) -> int:
        return self._address


@contextlib.contextmanager
def compile_only(record: Callable[[str, tuple, object], None]) -> Iterator[None]:
    """Triton launches compile for sm_90 and call ``record(kernel, grid, compiled)``
    instead of running; the Triton operators run their launchers on fake tensors."""
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    from .. import _checks
    from .._triton import _registry
    from .._triton import load as load_triton

    if not load_triton():
        raise RuntimeError("the Triton kernels do not load; is triton installed?")
    run = JITFunction.run

    def compile_instead(self, *args, grid, warmup, **kwargs):
        args = [_Pointer(a) if isinstance(a, torch.Tensor) else a for a in args]
        compiled = run(self, *args, grid=grid, warmup=True, **kwargs)
        record(self.fn.__name__, tuple(grid), compiled)
        return compiled

    opdefs = [
        getattr(torch.ops.muxkernels, name)
        for name in dir(torch.ops.muxkernels)
        if name.endswith("_triton")
    ]
    customs = [torch._library.custom_ops.OPDEFS[op._qualified_op_name] for op in opdefs]
    fakes = [custom._abstract_fn for custom in customs]
    properties = mock.Mock(multi_processor_count=hopper.SMS)
    previous = driver._active  # None without a GPU: reset_active() would look for one
    driver.set_active(_StubDriver(GPUTarget("cuda", 90, 32)))
    try:
        for custom in customs:
            custom._abstract_fn = custom._init_fn
        with (
            mock.patch.object(JITFunction, "run", compile_instead),
            mock.patch.object(_registry, "on_device", lambda t: contextlib.nullcontext()),
            mock.patch("torch.cuda.get_device_properties", return_value=properties),
            mock.patch.object(_checks, "data_checks_run", lambda t: False),  # fake: no values
            FakeTensorMode(),
        ):
            yield
    finally:
        for custom, fake in zip(customs, fakes, strict=True):
            custom._abstract_fn = fake
        driver._active = previous


# The dtype configurations: name → (data, parameters), as short names and torch dtypes.
DTYPE_NAMES = {
    "bf16": ("bf16", "bf16"),
    "fp16": ("fp16", "fp16"),
    "fp32": ("fp32", "fp32"),
    "bf16+fp32": ("bf16", "fp32"),
    "fp16+fp32": ("fp16", "fp32"),
}
_TORCH = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPES = {name: (_TORCH[data], _TORCH[params]) for name, (data, params) in DTYPE_NAMES.items()}


def _run(config: Config, sizes_for: Callable) -> None:
    """Runs one config's op through the triton backend (forward, or forward + backward)."""
    from ..bench import workloads

    data_dtype, param_dtype = DTYPES[config.dtype]
    sizes = sizes_for(config.d, data_dtype)
    w = workloads.build(config.op, config.n, sizes, torch.device("cuda"), compiled=False)
    inputs = {
        k: t.to(param_dtype) if k not in DATA_INPUTS and t.is_floating_point() else t
        for k, t in w.inputs.items()
    }
    learning = {"fwd+bwd": w.trainable, "fwd+bwd+params": tuple(inputs)}[config.mode]
    for k in learning:
        if inputs[k].is_floating_point():
            inputs[k].requires_grad_()
    _backward(w.impls["triton"](inputs))


def _backward(out: torch.Tensor) -> None:
    """Runs the backward of every custom autograd Function behind ``out`` (the ones whose
    backward launches kernels), each with gradients of ones. The autograd engine itself
    cannot run on fake CUDA tensors without a driver, so the graph is walked by hand."""
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "_forward_cls"):  # a torch.autograd.Function of ours
            grads = [
                torch.ones(m.shape, dtype=m.dtype, device=m.device) for m in node._input_metadata
            ]
            node.apply(*grads)
        stack.extend(next_node for next_node, _ in node.next_functions)


def launches(configs: list[Config], sizes_for: Callable) -> list[Launch]:
    """Runs every config and returns the launches, one per (config, kernel launch); a
    config that fails to compile gives one Launch with ``error`` set."""
    found: list[Launch] = []
    current: list[Config] = []

    def record(kernel: str, grid: tuple, compiled: object) -> None:
        found.append(Launch(kernel, current[0], grid, compiled))

    with compile_only(record):
        for config in configs:
            current[:] = [config]
            try:
                _run(config, sizes_for)
            except Exception as err:  # a compile error of any kind is a finding
                message = f"{type(err).__name__}: {err}".strip().splitlines()
                found.append(Launch("-", config, (), None, error=message[0][:300]))
    return found
