"""What the tests share: the comparison with a float64 computation (bounds from
``muxkernels._tolerances``, the one table), NaN-poisoned outputs, seeded random inputs,
float64 oracles, and the skips and tables of the kernel tests.

Set ``MUXKERNELS_TOLERANCE_REPORT=1`` to have pytest print, after the run, the largest
error each purpose and dtype reached as a fraction of its bound (tests/conftest.py): the
numbers to tune the table with on a new machine.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from muxkernels import _extension, _opdefs
from muxkernels import reference as ref
from muxkernels._cpu import _compiled as _cpu_compiled
from muxkernels._tolerances import BACKEND, KERNEL, PURPOSES, REFERENCE, Bound

__all__ = [
    "BACKEND",
    "KERNEL",
    "REFERENCE",
    "WORST",
    "assert_close",
    "float64",
    "float64_grads",
    "magnitude",
    "mlp_reference",
    "multiplex_tables",
    "nan_like",
    "on_poisoned_memory",
    "randn",
    "require_cuda_extension",
    "seeded",
]

# The largest error / bound ratio seen per (purpose, dtype) in this run.
WORST: dict[tuple[str, str], float] = {}


def assert_close(
    got: torch.Tensor,
    want: torch.Tensor,
    bound: dict[torch.dtype, Bound] = KERNEL,
    *,
    dtype: torch.dtype | None = None,
    magnitude: torch.Tensor | None = None,
    what: str = "",
) -> None:
    """``got`` has ``want``'s shape, no NaN (an output element nobody wrote keeps its poison)
    and lies within the bound of the exact ``want`` (float64) elementwise, computed on got's
    device.

    ``bound``: a purpose table of ``muxkernels._tolerances`` (KERNEL, REFERENCE, BACKEND),
    read at ``dtype`` (default: got's); ``magnitude``: that of the terms ``want`` sums.
    """
    label = f"{what}: " if what else ""
    assert got.shape == want.shape, f"{label}shape {tuple(got.shape)} != {tuple(want.shape)}"
    got64 = got.detach().double()
    assert not got64.isnan().any(), f"{label}NaN in the output (an element was not written)"
    want64 = want.detach().to(got64.device, torch.float64)
    dtype = got.dtype if dtype is None else dtype
    rule = bound[dtype]
    size = None if magnitude is None else magnitude.detach().to(got64.device, torch.float64)
    err = (got64 - want64).abs()
    ratio = (err / rule.limit(want64, dtype, size)).max().item() if err.numel() else 0.0
    purpose = next(name for name, table in PURPOSES.items() if table is bound)
    key = (purpose, str(dtype).removeprefix("torch."))
    WORST[key] = max(WORST.get(key, 0.0), ratio)
    assert ratio <= 1.0, (
        f"{label}error {err.max().item():.3g} is {ratio:.3g}x the bound "
        f"(rtol={rule.rtol:g}, atol={rule.atol:g}; {purpose} {key[1]})"
    )


def assert_thread_count_independent(fn, counts: tuple[int, ...] = (1, 2, 3)) -> None:
    """``fn()`` returns bit-identical tensors (a tuple of them) with each number of torch
    threads in ``counts``: its reductions are split by size, not by the thread count."""
    threads = torch.get_num_threads()
    try:
        results = []
        for count in counts:
            torch.set_num_threads(count)
            results.append(fn())
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for x, y in zip(results[0], other, strict=True):
            assert torch.equal(x, y)


# --- NaN poison -------------------------------------------------------------------------------


def nan_like(like: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """A tensor of ``like``'s dtype and device (and shape, unless given) full of NaN: an output
    for a kernel to write, where an element it skips stays NaN (``assert_close`` fails)."""
    size = tuple(like.shape) if shape is None else shape
    return torch.full(size, math.nan, dtype=like.dtype, device=like.device)


def on_poisoned_memory(fn, numel: int, dtype: torch.dtype, device: torch.device):
    """``fn()`` after filling and freeing a block of ``numel`` elements with NaN, so that the
    CUDA caching allocator most likely hands that block to the (first) output ``fn``
    allocates: an element the kernel skips stays NaN."""
    poison = torch.full((numel,), math.nan, dtype=dtype, device=device)
    del poison
    result = fn()
    torch.cuda.synchronize(device)
    return result


# --- inputs -----------------------------------------------------------------------------------


def seeded(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` with a fixed seed."""
    return torch.Generator(device=device).manual_seed(seed)


def randn(
    *shape: int,
    generator: torch.Generator | int,
    dtype: torch.dtype = torch.float64,
    scale: float = 1.0,
    misaligned: bool = False,
) -> torch.Tensor:
    """Seeded normal samples (never exactly zero) times ``scale``, in ``dtype``, on the
    generator's device (an int: the seed of a fresh CPU generator): drawn in float64 on the
    CPU, in float32 on a GPU (fast at benchmark sizes). ``misaligned``: a contiguous view
    starting one element past a 16-byte boundary (a slice of a larger buffer), which forces
    the kernels' element-wise paths."""
    if isinstance(generator, int):
        generator = seeded(generator)
    device = generator.device
    draw = torch.float64 if device.type == "cpu" else torch.float32
    numel = math.prod(shape) + int(misaligned)
    flat = (scale * torch.randn(numel, generator=generator, device=device, dtype=draw)).to(dtype)
    view = flat[int(misaligned) :].view(shape)
    assert view.is_contiguous() and (view.data_ptr() % 16 != 0) == misaligned
    return view


# --- float64 oracles --------------------------------------------------------------------------


def float64(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Detached float64 copies of the floating tensors (others unchanged)."""
    return [t.detach().double() if t.is_floating_point() else t for t in tensors]


def float64_grads(fn, inputs, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The gradients of ``fn(*inputs)`` for ``grad_out``, by autograd in float64."""
    leaves = [t.detach().double().requires_grad_() for t in inputs]
    return torch.autograd.grad(fn(*leaves), leaves, grad_out.double())


def magnitude(fn, *inputs: torch.Tensor) -> torch.Tensor:
    """``fn`` on the inputs' absolute values in float64: for a function linear in each input
    (the multiplexers), the magnitude of the terms its output sums."""
    return fn(*(t.detach().double().abs() for t in inputs))


# --- the kernel tests' skips and tables -------------------------------------------------------


def require_cuda_extension() -> None:
    """Skips the calling test module (call it at module level) without a CUDA device or
    without the extension; with MUXKERNELS_REQUIRE_EXTENSION=1 a missing extension raises
    ImportError instead (a collection error)."""
    have_extension = _extension.load()
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device", allow_module_level=True)
    if not have_extension:
        pytest.skip(
            f"muxkernels._C is not built ({_extension.load_error()!r})", allow_module_level=True
        )


def require_cpu_kernels() -> None:
    """Skips the calling test module (call it at module level) without the compiled cpu
    kernels ``muxkernels._C_cpu``; with MUXKERNELS_REQUIRE_EXTENSION=1 a missing module
    raises ImportError instead (a collection error)."""
    if not _cpu_compiled.available():
        pytest.skip(
            f"muxkernels._C_cpu is not built ({_cpu_compiled.load_error()!r})",
            allow_module_level=True,
        )


def cpu_op(name: str):
    """The compiled cpu operator ``muxkernels::<name>_cpu``."""
    return _opdefs.kernel(name, "cpu")


def multiplex_tables() -> tuple[tuple[str, ...], dict, dict, dict]:
    """(KINDS, FORWARD, BACKWARD, OPS) of the Triton multiplex kernels, by kind: FORWARD[kind]
    = (launcher, reference), BACKWARD[kind] = launcher, OPS[kind] = (forward operator name,
    backward operator name). Imports the kernel modules: call it after the tests' skips."""
    from muxkernels._triton import hadamard_mux, ortho_mux

    kinds = ("hadamard", "ortho", "lowrank")
    forward = {
        "hadamard": (hadamard_mux.hadamard_mux_fwd, ref.hadamard_mux),
        "ortho": (ortho_mux.ortho_mux_fwd, ref.ortho_mux),
        "lowrank": (ortho_mux.lowrank_ortho_mux_fwd, ref.lowrank_ortho_mux),
    }
    backward = {
        "hadamard": hadamard_mux.hadamard_mux_bwd,
        "ortho": ortho_mux.ortho_mux_bwd,
        "lowrank": ortho_mux.lowrank_ortho_mux_bwd,
    }
    ops = {
        "hadamard": ("hadamard_mux_fwd_triton", "hadamard_mux_bwd_triton"),
        "ortho": ("ortho_mux_fwd_triton", "ortho_mux_bwd_triton"),
        "lowrank": ("lowrank_ortho_mux_fwd_triton", "lowrank_ortho_mux_bwd_triton"),
    }
    return kinds, forward, backward, ops


def mlp_reference(pre, bias, ln_weight, ln_bias, eps):
    """docs/design.md §4 from pre = h @ W_stackᵀ:
    u[:, i] = LN_i(gelu(pre[..., i·d:(i+1)·d] + b_i))."""
    groups, length, _ = pre.shape
    n, d = bias.shape
    z = pre.view(groups, length, n, d).transpose(1, 2) + bias[:, None, :]
    branches = [
        F.layer_norm(F.gelu(z[:, i]), (d,), ln_weight[i], ln_bias[i], eps) for i in range(n)
    ]
    return torch.stack(branches, dim=1)
