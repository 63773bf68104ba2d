"""The published training objective (design §6), as functions.

    loss = task_loss_coeff · task_loss + retrieval_loss_coeff · retrieval_loss

task_loss: cross-entropy over the task's logits, label −100 ignored (a sequence task with
one label is a regression: mean squared error); for a token task, positions where the
caller's ``attention_mask`` is 0 are ignored too (DataMUX).
retrieval_loss: cross-entropy of the retrieval head's logits against retrieval labels: for
every group g and position t an instance j[g,t] is drawn uniformly from [0, N) (0 on the
first ``special_positions`` positions), the label is that instance's token at t, and the
first ``special_positions`` positions, pad tokens and a random 1 − ``retrieval_percentage``
of the other positions get −100. The draws follow the published order on one generator:
j first (``torch.randint``), then the Bernoulli(1 − p) positions to drop. The published
masked LM (task "retrieval") keeps pad tokens and draws no Bernoulli: only the special
positions are dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

from .._checks import check_shape, check_tensor

if TYPE_CHECKING:
    from .multiplexed import Encoded, MultiplexedModel

IGNORE_INDEX = -100


class MuxOutput(NamedTuple):
    """The training output of ``MultiplexedModel.forward(..., labels=...)`` (a named tuple, so
    distributed wrappers see its tensors): the weighted ``loss``, its two terms, the task's
    ``logits``."""

    loss: torch.Tensor
    task_loss: torch.Tensor
    retrieval_loss: torch.Tensor
    logits: torch.Tensor


def draw_retrieval(
    groups: int,
    length: int,
    num_instances: int,
    special_positions: int,
    retrieval_percentage: float | None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The published random draws: (j (B', L) int64, dropped (B', L) bool).

    j is 0 on the first ``special_positions`` positions and uniform on [0, N) after them;
    ``dropped`` marks the positions whose label a Bernoulli(1 − retrieval_percentage) wipes
    (none, and no draw, for ``retrieval_percentage=None``: the masked LM). Drawn on the CPU
    when ``generator`` is a CPU generator, then moved to ``device``.
    """
    where = generator.device if generator is not None else device
    index = torch.zeros(groups, length, dtype=torch.long, device=where)
    index[:, special_positions:] = torch.randint(
        num_instances,
        (groups, length - special_positions),
        generator=generator,
        device=where,
    )
    if retrieval_percentage is None:
        return index.to(device), torch.zeros(groups, length, dtype=torch.bool, device=device)
    wipe = torch.full((groups, length), 1.0 - retrieval_percentage, device=where)
    dropped = torch.bernoulli(wipe, generator=generator).bool()
    return index.to(device), dropped.to(device)


def retrieval_labels(
    input_ids: torch.Tensor,
    instance_index: torch.Tensor,
    dropped: torch.Tensor,
    special_positions: int,
    pad_token_id: int | None,
) -> torch.Tensor:
    """label[g,t] = input_ids[g·N + j[g,t], t], or −100 where t < ``special_positions``, the
    token is ``pad_token_id``, or ``dropped``. input_ids (B'·N, L) as the embeddings saw
    them; instance_index and dropped (B', L)."""
    groups, length = instance_index.shape
    grouped = input_ids.reshape(groups, -1, length)
    labels = grouped.gather(1, instance_index[:, None]).squeeze(1).clone()
    labels[:, :special_positions] = IGNORE_INDEX
    ignored = dropped.clone()
    if pad_token_id is not None:
        ignored |= labels == pad_token_id
    return labels.masked_fill(ignored, IGNORE_INDEX)


def task_loss(
    logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of ``logits`` (…, C) against ``labels`` (…), −100 ignored; with one class
    (C = 1), mean squared error against float labels. ``attention_mask`` (same shape as
    ``labels``) drops the positions where it is 0."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX)


def weighted_loss(
    task: torch.Tensor, retrieval: torch.Tensor, task_loss_coeff: float, retrieval_loss_coeff: float
) -> torch.Tensor:
    """task_loss_coeff · task + retrieval_loss_coeff · retrieval."""
    return task_loss_coeff * task + retrieval_loss_coeff * retrieval


def published_objective(
    model: MultiplexedModel,
    encoded: Encoded,
    logits: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator | None = None,
) -> MuxOutput:
    """The model's training output for ``labels`` (as ``model.forward`` returns it):
    task loss on ``logits``, retrieval loss of ``model.retrieval_head`` on the encoder
    output with labels drawn on ``generator``, weighted by the config's coefficients."""
    c = model.config
    check_tensor("labels", labels)
    check_shape("labels", labels, tuple(logits.shape[:-1]), "one label per output row")
    mask = encoded.attention_mask
    token_mask = mask[: encoded.batch_size] if c.task == "token" and mask is not None else None
    task = task_loss(logits, labels, token_mask)
    groups, length = encoded.hidden.shape[:2]
    masked_lm = c.task == "retrieval"
    index, dropped = draw_retrieval(
        groups,
        length,
        c.num_instances,
        c.special_positions,
        None if masked_lm else c.retrieval_percentage,
        generator=generator,
        device=labels.device,
    )
    ids, special = encoded.input_ids, c.special_positions
    targets = retrieval_labels(ids, index, dropped, special, None if masked_lm else c.pad_token_id)
    retrieval_logits = model.retrieval_head(encoded.hidden, index)
    retrieval = F.cross_entropy(
        retrieval_logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX
    )
    loss = weighted_loss(task, retrieval, c.task_loss_coeff, c.retrieval_loss_coeff)
    return MuxOutput(loss, task, retrieval, logits)
