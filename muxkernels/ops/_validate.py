"""Argument checks shared by the functional ops (kept apart so each op file stays short)."""

from __future__ import annotations

import math

import torch

from .._checks import (
    FLOAT_DTYPE_SET,
    as_number,
    check_dim,
    check_float_tensor,
    check_index,
    check_num_instances,
    check_param,
    check_param_dtype,
    check_same_device,
    check_tensor,
    group_batch,
    params_fit,
)
from ..reference import GATHERS


def mux_input(embeddings: torch.Tensor, num_instances: int, hidden_size: int) -> torch.Tensor:
    """Validate the multiplexer input and return it grouped as (B', N, L, d).

    Accepts the caller's batch (B, L, d), B = B'·N, row g·N+i being instance i of group g,
    or the grouped (B', N, L, d).
    """
    shape = check_float_tensor("embeddings", embeddings, (3, 4), "(B, L, d) or (B', N, L, d)")
    num_instances = check_num_instances(num_instances)
    if shape[-1] != hidden_size:
        check_dim("embeddings", embeddings, -1, hidden_size, "the transform's hidden size d")
    if len(shape) == 3:
        return group_batch("embeddings", embeddings, num_instances)
    if shape[1] != num_instances:
        check_dim("embeddings", embeddings, 1, num_instances, "the number of instances N")
    return embeddings


def transform(
    name: str,
    t: torch.Tensor,
    data: torch.Tensor,
    rank: int,
    layout: str,
    data_name: str = "embeddings",
) -> None:
    """A transform tensor: a float tensor of the given rank on the data's device."""
    if isinstance(data, torch.Tensor) and isinstance(t, torch.Tensor) and t.dtype is data.dtype:
        shape = t.shape
        fits = len(shape) == rank and 0 not in shape and t.dtype in FLOAT_DTYPE_SET
        if fits and (t.is_cpu if data.is_cpu else t.device == data.device):
            return  # the common case, read once
    check_tensor(data_name, data)
    check_float_tensor(name, t, rank, layout)
    if t.dtype != data.dtype:
        check_param_dtype(name, t, data_name, data)
    if t.device != data.device:
        check_same_device(data_name, data, **{name: t})


def demux_hidden(hidden: torch.Tensor, min_length: int, what: str) -> None:
    """The encoder output h: a non-empty float (B', L', d) tensor with L' >= min_length."""
    if isinstance(hidden, torch.Tensor) and hidden.dtype in FLOAT_DTYPE_SET:
        shape = hidden.shape
        if len(shape) == 3 and shape[1] >= min_length and 0 not in shape:
            return  # the common case, read once
    shape = check_float_tensor("hidden", hidden, 3, "(B', L', d)")
    if shape[1] < min_length:
        raise ValueError(
            f"hidden has length {hidden.shape[1]} (shape {tuple(hidden.shape)}) but {what} "
            f"needs at least {min_length} positions"
        )


def demux_params(hidden: torch.Tensor, shapes: dict[str, tuple[torch.Tensor, tuple[int, ...]]]):
    """Each named parameter has its expected shape, a usable dtype and hidden's device."""
    if params_fit(hidden, shapes.values()):
        return
    for name, (t, shape) in shapes.items():
        check_param(name, t, shape, f"d={hidden.shape[-1]}", "hidden", hidden)


def concat_linear_params(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
) -> None:
    """The (d, 2d) Linear on a [x; h] concatenation and the (d,) LayerNorm after it."""
    d = hidden.shape[-1]
    if hidden.is_cpu:  # the common case spelled out: these checks run on every call
        dtype, vector, tensor = hidden.dtype, (d,), torch.Tensor
        if (
            isinstance(weight, tensor)
            and weight.dtype is dtype
            and weight.is_cpu
            and weight.shape == (d, 2 * d)
            and isinstance(bias, tensor)
            and bias.dtype is dtype
            and bias.is_cpu
            and bias.shape == vector
            and isinstance(ln_weight, tensor)
            and ln_weight.dtype is dtype
            and ln_weight.is_cpu
            and ln_weight.shape == vector
            and isinstance(ln_bias, tensor)
            and ln_bias.dtype is dtype
            and ln_bias.is_cpu
            and ln_bias.shape == vector
        ):
            return
    demux_params(
        hidden,
        {
            "weight": (weight, (d, 2 * d)),
            "bias": (bias, (d,)),
            "ln_weight": (ln_weight, (d,)),
            "ln_bias": (ln_bias, (d,)),
        },
    )


def gather_args(gather: str, index: torch.Tensor | None, hidden: torch.Tensor, n: int) -> None:
    """``gather`` is known; ``index`` (B', L') is given exactly when gather == "selected"."""
    if gather not in GATHERS:
        raise ValueError(f"gather must be one of {GATHERS}, got {gather!r}")
    if gather == "selected":
        if index is None:
            raise ValueError("gather=\"selected\" needs index, a (B', L') tensor of instance ids")
        check_same_device("hidden", hidden, index=index)
        check_index("index", index, tuple(hidden.shape[:2]), n)
    elif index is not None:
        raise ValueError(f'index is only used with gather="selected", got gather={gather!r}')


def eps_arg(eps: object) -> float:
    """LayerNorm eps: a finite number > 0 (numpy floats and 0-d tensors too), as float."""
    if type(eps) is float and 0 < eps < math.inf:
        return eps
    return as_number("eps", eps, 0.0, above=True)
