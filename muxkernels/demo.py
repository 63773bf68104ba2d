"""``muxkernels demo``: train the retrieval warm-up from scratch for several N, on the CPU.

For each N it trains a fresh small multiplexed model (gaussian_hadamard transforms of norm
20, index prefix, the index demux retrieval head) on synthetic token sequences, then
prints the retrieval accuracy over every instance and position and the inference
throughput (instances per second) against N = 1.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import torch

from .models import MultiplexedModel, MuxConfig, retrieval_accuracy, throughput, train_retrieval

CONTENT_VOCAB = 64  # content token ids [0, 64); the N + 2 special ids come after them
DEFAULT_INSTANCES = (1, 2, 4, 8)
DEFAULT_STEPS = {1: 150, 2: 300, 4: 600, 8: 1500}  # N not listed: the largest listed below it


@dataclass(frozen=True)
class Setup:
    """Sizes of one demo run: the model, the training batches, the measurements."""

    hidden_size: int = 64
    num_layers: int = 2
    intermediate_size: int = 256
    length: int = 16
    groups: int = 32
    lr: float = 1e-2
    eval_instances: int = 512
    bench_instances: int = 256


FULL = Setup()
QUICK = Setup(
    hidden_size=16,
    num_layers=1,
    intermediate_size=32,
    length=8,
    groups=4,
    eval_instances=16,
    bench_instances=16,
)


@dataclass(frozen=True)
class Result:
    num_instances: int
    steps: int
    train_seconds: float
    first_loss: float
    last_loss: float
    accuracy: float
    instances_per_second: float


class Progress:
    """A one-line progress bar redrawn with carriage returns (at most ~10 times a second)."""

    def __init__(self, label: str, total: int, stream: TextIO, width: int = 30) -> None:
        self.label, self.total, self.stream, self.width = label, total, stream, width
        self.start = self.shown = time.perf_counter()

    def __call__(self, step: int, loss: float) -> None:
        now, done = time.perf_counter(), step + 1
        if done < self.total and now - self.shown < 0.1:
            return
        self.shown = now
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {done}/{self.total} loss {loss:.3f} {now - self.start:.1f}s"
        )
        if done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def default_steps(num_instances: int) -> int:
    """Training steps for N: from ``DEFAULT_STEPS``, the entry of the largest N' <= N."""
    return DEFAULT_STEPS[max(k for k in DEFAULT_STEPS if k <= num_instances)]


def demo_config(num_instances: int, setup: Setup, seed: int) -> MuxConfig:
    """The warm-up model for N: DataMUX's gaussian_hadamard (norm 20) and index demux; the
    N + 2 special ids (index ids V − (i + 2), cls, filler) sit above the content ids."""
    vocab = CONTENT_VOCAB + num_instances + 2
    return MuxConfig(
        vocab_size=vocab,
        num_instances=num_instances,
        filler_id=vocab - 1,
        cls_id=CONTENT_VOCAB,
        hidden_size=setup.hidden_size,
        num_layers=setup.num_layers,
        num_heads=4,
        intermediate_size=setup.intermediate_size,
        max_position_embeddings=setup.length + num_instances + 1,
        gaussian_hadamard_norm=20.0,
        seed=seed,
    )


def run_one(
    num_instances: int,
    steps: int,
    setup: Setup,
    *,
    seed: int,
    device: torch.device,
    progress: TextIO,
) -> Result:
    """Train, evaluate and time one N."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = MultiplexedModel(demo_config(num_instances, setup, seed)).to(device)
    start = time.perf_counter()
    losses = train_retrieval(
        model,
        steps=steps,
        groups=setup.groups,
        length=setup.length,
        lr=setup.lr,
        generator=generator,
        on_step=Progress(f"N={num_instances:<2}", steps, progress),
    )
    seconds = time.perf_counter() - start
    accuracy = retrieval_accuracy(
        model,
        groups=max(1, setup.eval_instances // num_instances),
        length=setup.length,
        generator=generator,
    )
    speed = throughput(
        model,
        groups=max(1, setup.bench_instances // num_instances),
        length=setup.length,
        generator=generator,
        repeats=10,
    )
    return Result(num_instances, steps, seconds, losses[0], losses[-1], accuracy, speed)


def format_results(results: Sequence[Result]) -> str:
    """The results table; speed-ups are against the N = 1 row when there is one."""
    base = next((r.instances_per_second for r in results if r.num_instances == 1), None)
    lines = ["    N  steps  train s  loss first→last  accuracy  instances/s  vs N=1"]
    for r in results:
        ratio = f"{r.instances_per_second / base:5.2f}x" if base else "     -"
        lines.append(
            f"{r.num_instances:5d}  {r.steps:5d}  {r.train_seconds:7.1f}  "
            f"{r.first_loss:6.3f} → {r.last_loss:6.3f}  {100 * r.accuracy:7.2f}%  "
            f"{r.instances_per_second:11.0f}  {ratio}"
        )
    return "\n".join(lines)


def run_demo(
    instances: Sequence[int] = DEFAULT_INSTANCES,
    *,
    steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    quick: bool = False,
    threads: int | None = 1,
    out: TextIO | None = None,
    progress: TextIO | None = None,
) -> list[Result]:
    """Run the demo for each N in ``instances``, print the table to ``out``, return the rows.

    ``steps`` overrides the per-N defaults; ``quick`` is a tiny run (seconds, for tests);
    ``threads`` sets torch's CPU threads (one is fastest for these small matrices). The
    table goes to ``out`` (default stdout), the progress bars to ``progress`` (stderr).
    """
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    out = out or sys.stdout
    progress = progress or sys.stderr
    if threads is not None:
        torch.set_num_threads(threads)
    setup = QUICK if quick else FULL
    target = torch.device(device)
    print(
        f"retrieval warm-up on {target} ({torch.get_num_threads()} CPU thread(s)): "
        f"d={setup.hidden_size}, layers={setup.num_layers}, {CONTENT_VOCAB}-token vocabulary, "
        f"L={setup.length}, {setup.groups} groups per step, gaussian_hadamard norm 20",
        file=out,
    )
    start = time.perf_counter()
    results = []
    for n in instances:
        n_steps = steps if steps is not None else (5 if quick else default_steps(n))
        results.append(run_one(n, n_steps, setup, seed=seed, device=target, progress=progress))
    print(format_results(results), file=out)
    print(f"total {time.perf_counter() - start:.1f}s", file=out)
    return results
