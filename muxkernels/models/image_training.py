"""Training, accuracy and throughput of a multiplexed image classifier.

The model maps a (B, C, H, W) batch with B = B'·N to (B, classes) logits, row g·N+i being
instance i of group g (``MultiplexedCNN``, ``MultiplexedMLP``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..prefix import pad_batch


def _check_data(images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"images must be a non-empty (B, C, H, W) tensor, got {shape}")
    if labels is not None and tuple(labels.shape) != (images.shape[0],):
        raise ValueError(
            f"labels must have shape ({images.shape[0]},), one per image, got {tuple(labels.shape)}"
        )


def epoch_batches(count: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch: a fresh permutation of ``count`` indices cut into batches of
    ``batch_size``; the last batch is completed from the permutation's start, so every
    index is used and every batch is full."""
    order = torch.randperm(count, generator=generator)
    if count % batch_size:
        order = torch.cat([order, order[: batch_size - count % batch_size]])
    return list(order.split(batch_size))


def training_steps(count: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps of ``epochs`` epochs over ``count`` images in batches of
    ``batch_size`` (see ``epoch_batches``)."""
    return epochs * math.ceil(count / batch_size)


def random_shift(
    images: torch.Tensor, generator: torch.Generator, max_shift: int = 1
) -> torch.Tensor:
    """Each image moved by its own random offset of up to ``max_shift`` pixels along H and
    W, the pixels moved in filled with zeros (augmentation for small digit images)."""
    b, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    rows = (offsets[0][:, None] + torch.arange(h)).to(images.device)  # (B, H)
    cols = (offsets[1][:, None] + torch.arange(w)).to(images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    groups_per_batch: int,
    lr: float,
    generator: torch.Generator,
    on_step: Callable[[int, float], None] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    label_smoothing: float = 0.0,
) -> list[float]:
    """Train ``model`` with Adam and a one-cycle learning rate peaking at ``lr``, on the
    cross-entropy of every instance. Each step sees ``groups_per_batch`` groups of N
    random training images; each epoch draws new groups. Returns the loss of every step;
    ``on_step(step, loss)`` is called after each (``training_steps`` gives their number);
    ``augment(images, generator)``, e.g. ``random_shift``, transforms each batch first;
    ``label_smoothing`` is cross-entropy's."""
    _check_data(images, labels)
    if epochs < 1 or groups_per_batch < 1:
        raise ValueError(
            f"epochs and groups_per_batch must be at least 1, got {epochs} and {groups_per_batch}"
        )
    batch_size = groups_per_batch * model.num_instances
    total = training_steps(images.shape[0], batch_size, epochs)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr, fused=True)  # one kernel for all parameters
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=total)
    model.train()
    losses: list[float] = []
    for _ in range(epochs):
        for batch in epoch_batches(images.shape[0], batch_size, generator):
            inputs = images[batch] if augment is None else augment(images[batch], generator)
            loss = F.cross_entropy(model(inputs), labels[batch], label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step(len(losses) - 1, losses[-1])
    return losses


@torch.no_grad()
def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    groupings: int = 5,
    generator: torch.Generator,
) -> float:
    """Accuracy over every image, averaged over ``groupings`` random orders (each order
    grouped into N: the partners of an image change its result). A last group short of N
    is filled with copies of its last image, whose outputs are dropped."""
    _check_data(images, labels)
    model.eval()
    correct = 0
    for _ in range(groupings):
        order = torch.randperm(images.shape[0], generator=generator)
        padded, rows = pad_batch(images[order], model.num_instances)
        predicted = model(padded)[:rows].argmax(dim=1)
        correct += int((predicted == labels[order]).sum())
    return correct / (groupings * images.shape[0])


@torch.inference_mode()
def images_per_second(
    model: nn.Module, images: torch.Tensor, *, groups: int, repeats: int = 20
) -> float:
    """Inference images per second: the median of ``repeats`` timed passes over ``groups``
    groups of N images (the first ``groups``·N images, repeated if there are fewer)."""
    _check_data(images)
    model.eval()
    count = groups * model.num_instances
    batch = images.repeat(math.ceil(count / images.shape[0]), 1, 1, 1)[:count]
    sync = torch.cuda.synchronize if batch.is_cuda else (lambda: None)
    model(batch)  # warm up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        model(batch)
        sync()  # a CUDA pass has finished only when the device has
        times.append(time.perf_counter() - start)
    return count / sorted(times)[len(times) // 2]
