"""The index prefix (design §2) and batch padding, for token ids.

Before embedding, instance i of every group gets N+1 tokens in front of its sequence:
``filler_id`` at every prefix position except position i, which holds ``index_ids[i]``,
then one shared ``cls_id`` at position N, so L' = L + N + 1. The ids are arguments;
``roberta_index_ids`` and the ``ROBERTA_*`` constants give the published RoBERTa choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import (
    as_int,
    check_nonempty,
    check_num_instances,
    check_rank,
    check_same_device,
    check_tensor,
)

ROBERTA_FILLER_ID = 50000
ROBERTA_CLS_ID = 49923


def roberta_index_ids(vocab_size: int, num_instances: int) -> list[int]:
    """The published RoBERTa index tokens: idx(i) = V − (i + 2) for vocabulary size V."""
    num_instances = check_num_instances(num_instances)
    vocab_size = as_int("vocab_size", vocab_size, 1)
    if vocab_size < num_instances + 2:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for {num_instances} index tokens V − (i + 2)"
        )
    return [vocab_size - (i + 2) for i in range(num_instances)]


def index_id_list(index_ids: object, num_instances: int) -> list[int]:
    """``index_ids`` (a sequence of N integer ids >= 0, or an integer tensor of shape (N,))
    as a list of ints; anything else is a ``ValueError`` naming ``index_ids``."""
    if isinstance(index_ids, torch.Tensor):
        if index_ids.is_floating_point() or index_ids.is_complex() or index_ids.dtype == torch.bool:
            raise ValueError(f"index_ids must hold integer ids, got a {index_ids.dtype} tensor")
        index_ids = index_ids.tolist()
    try:
        index_ids = list(index_ids)
    except TypeError:
        raise ValueError(
            f"index_ids must be a sequence of {num_instances} ids, got {index_ids!r}"
        ) from None
    if len(index_ids) != num_instances:
        raise ValueError(
            f"index_ids must hold num_instances={num_instances} ids, got {len(index_ids)}"
        )
    return [as_int(f"index_ids[{i}]", v, 0) for i, v in enumerate(index_ids)]


def index_prefix(
    num_instances: int,
    index_ids: Sequence[int] | torch.Tensor,
    filler_id: int,
    cls_id: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.long,
) -> torch.Tensor:
    """The (N, N+1) prefix block: row i is [filler…, idx(i) at i, …filler, cls].

    Every id is an integer >= 0 (numpy integers and 0-d integer tensors too; a float id is
    an error, never truncated); ``index_ids`` holds N of them (a sequence or an integer
    tensor)."""
    num_instances = check_num_instances(num_instances)
    filler_id = as_int("filler_id", filler_id, 0)
    cls_id = as_int("cls_id", cls_id, 0)
    ids = torch.tensor(index_id_list(index_ids, num_instances), dtype=dtype, device=device)
    prefix = torch.full((num_instances, num_instances + 1), filler_id, dtype=dtype, device=device)
    diag = torch.arange(num_instances, device=device)
    prefix[diag, diag] = ids
    prefix[:, num_instances] = cls_id
    return prefix


def add_index_prefix(
    input_ids: torch.Tensor,
    num_instances: int,
    index_ids: Sequence[int] | torch.Tensor,
    filler_id: int,
    cls_id: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Prefix every row of a (B, L) id batch: returns (B, L + N + 1).

    Row g·N+i (instance i of group g) gets the prefix of instance i. B must be a multiple
    of N. With ``attention_mask`` (B, L), also returns the mask extended with N+1 ones.
    """
    check_tensor("input_ids", input_ids)
    check_rank("input_ids", input_ids, 2, "(B, L)")
    check_nonempty("input_ids", input_ids)
    if input_ids.is_floating_point() or input_ids.is_complex():
        raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
    num_instances = check_num_instances(num_instances)
    batch = input_ids.shape[0]
    if batch % num_instances != 0:
        raise ValueError(
            f"input_ids has batch size {batch} (shape {tuple(input_ids.shape)}), which is not a "
            f"multiple of num_instances={num_instances}; pad it with muxkernels.pad_batch or "
            "drop rows yourself"
        )
    prefix = index_prefix(
        num_instances, index_ids, filler_id, cls_id, device=input_ids.device, dtype=input_ids.dtype
    )
    prefixed = torch.cat([prefix.repeat(batch // num_instances, 1), input_ids], dim=1)
    if attention_mask is None:
        return prefixed
    check_tensor("attention_mask", attention_mask)
    check_same_device("input_ids", input_ids, attention_mask=attention_mask)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
            f"{tuple(input_ids.shape)}"
        )
    ones = torch.ones(
        batch, num_instances + 1, dtype=attention_mask.dtype, device=attention_mask.device
    )
    return prefixed, torch.cat([ones, attention_mask], dim=1)


def pad_batch(batch: torch.Tensor, num_instances: int) -> tuple[torch.Tensor, int]:
    """Fill the last group with copies of the last row so B becomes a multiple of N.

    Returns (padded batch, original B). Drop the padded outputs with ``outputs[:B]``.
    """
    check_tensor("batch", batch)
    num_instances = check_num_instances(num_instances)
    if batch.dim() == 0 or batch.shape[0] == 0:
        raise ValueError(f"batch must have at least one row, got shape {tuple(batch.shape)}")
    rows = batch.shape[0]
    missing = -rows % num_instances
    if missing == 0:
        return batch, rows
    fill = batch[-1:].expand(missing, *batch.shape[1:])
    return torch.cat([batch, fill], dim=0), rows
