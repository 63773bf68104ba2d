"""Input validation shared by every op: each failure names the argument and the shapes seen.

Shape and value problems raise ``ValueError``; dtype problems raise ``TypeError``. Nothing is
fixed up silently (in particular a batch that is not a multiple of N is never truncated).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FLOAT_DTYPE_SET = frozenset(FLOAT_DTYPES)


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def check_tensor(name: str, t: object) -> torch.Tensor:
    """``t`` must be a tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_rank(name: str, t: torch.Tensor, ranks: int | Iterable[int], layout: str) -> None:
    """``t.dim()`` must be one of ``ranks``; ``layout`` spells the expected shape."""
    allowed = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    if t.dim() not in allowed:
        raise ValueError(f"{name} must have shape {layout}, got rank {t.dim()} shape {_shape(t)}")


def check_floating(name: str, t: torch.Tensor) -> None:
    """``t`` must be fp16, bf16, fp32 or fp64."""
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype} "
            f"(shape {_shape(t)})"
        )


def check_integer(name: str, t: torch.Tensor) -> None:
    """``t`` must hold integers (ids or indices): not float, complex or bool."""
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")


def check_nonempty(name: str, t: torch.Tensor) -> None:
    """Empty inputs are refused: an op on zero rows is almost always a caller's bug."""
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {_shape(t)})")


def check_same_device(ref_name: str, ref: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Every tensor in ``others`` must live on ``ref``'s device."""
    for name, t in others.items():
        if t is not None and t.device != ref.device:
            raise ValueError(
                f"{name} is on {t.device} but {ref_name} is on {ref.device}; "
                "move them to one device"
            )


def check_float_tensor(
    name: str, t: object, ranks: int | tuple[int, ...], layout: str
) -> torch.Size:
    """``t`` is a non-empty floating tensor of one of ``ranks``; returns its shape.

    One call for the four checks every floating input gets (the ops call it on every
    call, so it reads each attribute once)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPE_SET:
        check_floating(name, t)
    shape = t.shape
    if len(shape) != ranks if isinstance(ranks, int) else len(shape) not in ranks:
        check_rank(name, t, ranks, layout)
    if 0 in shape:
        check_nonempty(name, t)
    return shape


def check_param(
    name: str,
    t: object,
    shape: tuple[int, ...],
    what: str,
    data_name: str,
    data: torch.Tensor,
) -> None:
    """A parameter of ``data``: a tensor of exactly ``shape``, of the data's dtype (or
    float32), on the data's device."""
    if params_fit(data, ((t, shape),)):
        return
    check_tensor(name, t)
    if t.shape != shape:
        check_shape(name, t, shape, what)
    if t.dtype != data.dtype:
        check_param_dtype(name, t, data_name, data)
    if t.device != data.device:
        check_same_device(data_name, data, **{name: t})


def params_fit(data: torch.Tensor, params: Iterable[tuple[object, tuple[int, ...]]]) -> bool:
    """Whether every ``(t, shape)`` is a tensor of exactly ``shape`` in ``data``'s dtype on
    ``data``'s device: the common case of ``check_param``, in a few attribute reads (the
    ops check their parameters on every call). False sends the caller to ``check_param``,
    which allows float32 parameters of half-precision data and names what is wrong.

    On the CPU the device test reads ``is_cpu``: ``tensor.device`` builds a new object.
    """
    dtype, cpu = data.dtype, data.is_cpu
    device = None if cpu else data.device
    for t, shape in params:
        if not (isinstance(t, torch.Tensor) and t.dtype is dtype and t.shape == shape):
            return False
        if not (t.is_cpu if cpu else t.device == device):
            return False
    return True


def check_param_dtype(name: str, t: torch.Tensor, data_name: str, data: torch.Tensor) -> None:
    """A parameter must share the data's dtype, or be float32 (kept in full precision)."""
    check_floating(name, t)
    allowed = {data.dtype, torch.float32}
    if data.dtype == torch.float64:
        allowed = {torch.float64}
    if t.dtype not in allowed:
        want = " or ".join(sorted(str(d) for d in allowed))
        raise TypeError(
            f"{name} has dtype {t.dtype}; with {data_name} in {data.dtype} it must be {want}"
        )


def check_dim(name: str, t: torch.Tensor, dim: int, expected: int, what: str) -> None:
    """``t.shape[dim]`` must equal ``expected``; ``what`` says where the number comes from."""
    if t.shape[dim] != expected:
        raise ValueError(
            f"{name} has size {t.shape[dim]} in dim {dim % t.dim()} (shape {_shape(t)}), "
            f"but {what} is {expected}"
        )


def check_shape(name: str, t: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
    """``t`` must have exactly the shape ``expected``."""
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)} ({what}), got {_shape(t)}")


def _bounds(low: float | None, high: float | None) -> str:
    if high is None:
        return f">= {low}"
    if low is None:
        return f"<= {high}"
    return f"in [{low}, {high}]"


def as_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (a bound of None is open).

    Integer-like values are accepted: int, numpy integers, anything with ``__index__``, and
    0-d integer tensors. bool, floats (even 2.0: a float id or count is a caller's bug, never
    truncated) and other types are a ``ValueError`` naming ``name`` and the range.
    """
    if type(value) is int and (low is None or value >= low) and (high is None or value <= high):
        return value  # the common case, without the checks below
    number = value
    if isinstance(value, torch.Tensor):
        integer = not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
        number = value.item() if value.dim() == 0 and integer else None
    elif isinstance(value, bool) or type(value).__name__ == "bool_":
        number = None
    elif not isinstance(value, int):
        try:
            number = operator.index(value)
        except TypeError:
            number = None
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{name} must be an integer {_bounds(low, high)}, got {value!r}")
    return int(number)


def as_number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    above: bool = False,
) -> float:
    """``value`` as a finite float in [low, high] (``above=True``: strictly above ``low``).

    Real numbers are accepted: int, float, numpy numbers and 0-d real tensors; bool, NaN,
    infinities and other types are a ``ValueError`` naming ``name`` and the range.
    """
    number = value
    if isinstance(value, torch.Tensor):
        real = value.dim() == 0 and not (value.is_complex() or value.dtype == torch.bool)
        number = value.item() if real else None
    elif isinstance(value, bool) or type(value).__name__ == "bool_":
        number = None
    elif not isinstance(value, int | float):
        try:
            number = float(value) if hasattr(value, "__float__") else None
        except (TypeError, ValueError):
            number = None
    ok = number is not None and math.isfinite(number)
    ok = ok and (low is None or (number > low if above else number >= low))
    ok = ok and (high is None or number <= high)
    if not ok:
        where = f"> {low}" if above and high is None else _bounds(low, high)
        if above and high is not None:
            where = f"in ({low}, {high}]"
        raise ValueError(f"{name} must be a finite number {where}, got {value!r}")
    return float(number)


def layer_sizes(
    num_instances: object, hidden_size: object, layer_norm_eps: object = 1e-5
) -> tuple[int, int, float]:
    """A layer's N (>= 1), d (>= 1) and LayerNorm eps (> 0), as int, int, float."""
    return (
        check_num_instances(num_instances),
        as_int("hidden_size", hidden_size, 1),
        as_number("layer_norm_eps", layer_norm_eps, 0.0, above=True),
    )


def check_num_instances(num_instances: object) -> int:
    """N: an integer >= 1 (numpy integers and 0-d integer tensors too); returns it as int."""
    return as_int("num_instances", num_instances, 1)


def group_batch(name: str, t: torch.Tensor, num_instances: int) -> torch.Tensor:
    """View a caller's batch (B, ...) as (B', N, ...): row g·N+i is instance i of group g.

    A batch that is not a multiple of N is an error: the published DataMUX code silently
    drops the remainder, and we never lose rows silently (see ``muxkernels.pad_batch``).
    """
    batch = t.shape[0]
    if batch % num_instances != 0:
        raise ValueError(
            f"{name} has batch size {batch} (shape {_shape(t)}), which is not a multiple of "
            f"num_instances={num_instances}; pad it with muxkernels.pad_batch or drop rows yourself"
        )
    return t.reshape(batch // num_instances, num_instances, *t.shape[1:])


INDEX_DTYPES = frozenset((torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8))


def check_index(name: str, index: torch.Tensor, shape: tuple[int, ...], num_instances: int) -> None:
    """An instance-index tensor: integer dtype, the given shape, values in [0, N).

    The value check is ``check_values_below`` (one host read; skipped while torch.compile
    traces or a CUDA graph is captured), after a direct look at the bounds of a CPU index
    (the common case, on every call of a selected gather).
    """
    if not (isinstance(index, torch.Tensor) and index.dtype in INDEX_DTYPES):
        check_tensor(name, index)
        raise TypeError(f"{name} must be an integer tensor, got {index.dtype}")
    if index.shape != shape:
        check_shape(name, index, shape, "one instance index per (group, position)")
    if index.is_cpu and not torch.compiler.is_compiling():
        low, high = torch.aminmax(index)
        if low.item() >= 0 and high.item() < num_instances:
            return
    what = f"instance indices must lie in [0, {num_instances - 1}] (num_instances={num_instances})"
    check_values_below([(name, index, num_instances, what)])


def data_checks_run(t: torch.Tensor) -> bool:
    """Whether a check that reads ``t``'s values can run now.

    Not while torch.compile traces (data-dependent checks cannot be traced), nor on a CUDA
    tensor while the current stream captures a CUDA graph: reading device data on the host
    would end the capture. A captured graph replays with whatever its input buffers hold,
    so check values before capturing.
    """
    if torch.compiler.is_compiling():
        return False
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


def check_values_below(checks: Iterable[tuple[str, torch.Tensor, int, str]]) -> None:
    """Each ``(name, t, limit, what)``: integer ``t`` holds values in [0, limit), or
    ``ValueError("{name} holds values in [lo, hi] but {what}")``.

    One ``aminmax`` per tensor (once for a tensor given twice with the same limit); on CUDA
    their bounds come to the host in one read, so the checks of a call cost one device
    sync, and none where ``data_checks_run`` says they cannot run (the tensors of one call
    share a device).
    """
    checks = [c for c in checks if c[1].numel() > 0]
    checks = [c for i, c in enumerate(checks)
              if not any(c[1] is o[1] and c[2] == o[2] for o in checks[:i])]  # fmt: skip
    if not checks or not data_checks_run(checks[0][1]):
        return
    if checks[0][1].is_cpu:  # no device sync to save: read each, no stacking
        bounds = [[bound.item() for bound in torch.aminmax(t)] for _, t, _, _ in checks]
    else:  # the bounds of all, one host read (stack promotes to a common integer dtype)
        bounds = torch.stack([torch.stack(torch.aminmax(t)) for _, t, _, _ in checks]).tolist()
    for (name, _, limit, what), (lo, hi) in zip(checks, bounds, strict=True):
        if lo < 0 or hi >= limit:
            raise ValueError(f"{name} holds values in [{lo}, {hi}] but {what}")


def check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    """``value`` must be one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_int_at_least(name: str, value: object, low: int) -> int:
    """``value`` must be an integer >= ``low`` (see ``as_int``); returns it as int."""
    return as_int(name, value, low)


def check_number_in(name: str, value: object, low: float, high: float) -> float:
    """``value`` must be a finite real number in [low, high] (see ``as_number``)."""
    return as_number(name, value, low, high)
