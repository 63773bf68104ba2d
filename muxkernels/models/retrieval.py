"""The retrieval warm-up (design §3) on synthetic data, made in code.

Each instance is a random token sequence over the content ids [0, C) (C = the smallest
special id of the config). For every group g and position t an instance j[g,t] is drawn
uniformly from [0, N); the model sees the N multiplexed sequences and must name the token
of instance j[g,t] at t:

    loss = cross_entropy(retrieve(ids, j)[g, t], ids[g·N + j[g,t], t])  averaged over (g, t)

Accuracy is measured on every instance at every position (``MultiplexedModel.forward``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .multiplexed import MultiplexedModel, MuxConfig


def content_size(config: MuxConfig) -> int:
    """C: ids [0, C) carry content; the special ids (prefix, CLS, filler) start at C."""
    return min(*config.index_ids, config.cls_id, config.filler_id)


def random_tokens(
    batch: int,
    length: int,
    config: MuxConfig,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(batch, length) content ids drawn uniformly from [0, C)."""
    ids = torch.randint(content_size(config), (batch, length), generator=generator)
    return ids.to(device)


def random_instances(
    groups: int,
    length: int,
    num_instances: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """j: (groups, length) instance ids drawn uniformly from [0, N)."""
    return torch.randint(num_instances, (groups, length), generator=generator).to(device)


def retrieval_targets(input_ids: torch.Tensor, instance_index: torch.Tensor) -> torch.Tensor:
    """target[g, t] = input_ids[g·N + j[g,t], t]: (B', L) from ids (B'·N, L) and j (B', L)."""
    groups, length = instance_index.shape
    grouped = input_ids.reshape(groups, -1, length)
    return grouped.gather(1, instance_index[:, None]).squeeze(1)


def retrieval_loss(
    model: MultiplexedModel, input_ids: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Mean cross-entropy of the token of a random instance j[g,t] at each position."""
    n = model.config.num_instances
    groups, length = input_ids.shape[0] // n, input_ids.shape[1]
    index = random_instances(groups, length, n, generator, input_ids.device)
    logits = model.retrieve(input_ids, index)
    return F.cross_entropy(logits.flatten(0, 1), retrieval_targets(input_ids, index).flatten())


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_retrieval(
    model: MultiplexedModel,
    *,
    steps: int,
    groups: int,
    length: int,
    lr: float = 3e-3,
    generator: torch.Generator,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train the warm-up from scratch with AdamW; returns the loss of every step.

    Each step draws ``groups`` fresh groups of N sequences of ``length`` tokens.
    ``on_step(step, loss)`` is called after every step (a progress bar).
    """
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, foreach=True)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps, warmup)
    )
    n = model.config.num_instances
    model.train()
    losses = []
    for step in range(steps):
        ids = random_tokens(groups * n, length, model.config, generator, device)
        loss = retrieval_loss(model, ids, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses


@torch.no_grad()
def retrieval_accuracy(
    model: MultiplexedModel,
    *,
    groups: int,
    length: int,
    generator: torch.Generator,
) -> float:
    """Fraction of (instance, position) tokens that every-instance retrieval gets right."""
    device = next(model.parameters()).device
    model.eval()
    ids = random_tokens(
        groups * model.config.num_instances, length, model.config, generator, device
    )
    predicted = model(ids).argmax(dim=-1)
    return (predicted == ids).double().mean().item()


@torch.no_grad()
def throughput(
    model: MultiplexedModel,
    *,
    groups: int,
    length: int,
    generator: torch.Generator,
    repeats: int = 3,
) -> float:
    """Inference instances per second: full every-instance retrieval of B = groups·N rows.

    The best of ``repeats`` timed passes after one warm-up pass.
    """
    device = next(model.parameters()).device
    model.eval()
    ids = random_tokens(
        groups * model.config.num_instances, length, model.config, generator, device
    )
    best = math.inf
    for k in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(ids)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k > 0:
            best = min(best, time.perf_counter() - start)
    return ids.shape[0] / best
