"""``muxkernels demo --task digits``: multiplexed CNNs on scikit-learn's 8×8 digits.

For each N it trains a fresh ``MultiplexedCNN`` on 80% of the 1,797 digits (a fixed-seed
split; the other 20% are held out) and prints the held-out accuracy, averaged over five
random groupings of the test images into N, and the inference images/s against N. When
N = 4 is one of the Ns, it also trains every published multiplexer mode at N = 4 with the
same network. scikit-learn is optional (``pip install scikit-learn``); it only supplies
the bundled data set.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

import torch

from .demo import Progress
from .models.image_training import (
    accuracy,
    images_per_second,
    random_shift,
    train_classifier,
    training_steps,
)
from .models.vision import MultiplexedCNN
from .nn.image_multiplexer import PUBLISHED_MODES

DEFAULT_INSTANCES = (1, 2, 4, 8, 16)
MODES_AT = 4  # every published mode is trained at this N
HELD_OUT = 0.2
INSTALL_HINT = (
    "the digits demo needs scikit-learn for its bundled digits data set: "
    "pip install scikit-learn (or pip install 'muxkernels[vision]')"
)


class MissingDependency(ModuleNotFoundError):
    """An optional package the command needs is not installed; the message says how to
    get it."""


@dataclass(frozen=True)
class Setup:
    """One demo run: the best multiplexer, the network, the training and measurements.

    ``epochs`` maps N to its epochs (N not listed: the largest listed N below it);
    ``mode_epochs`` is for the comparison of every published mode at N = 4. Small N
    overfit the 1,437 training images, so they train on shifted copies (``augment_up_to``);
    larger N are harder to fit and train on them as they are. Every N trains with label
    smoothing.
    """

    mode: str = "Gaussian"
    out_channels: int = 32
    channels: tuple[int, int, int] = (64, 64, 256)
    features: int = 256
    kernel_sizes: tuple[int, int] = (3, 3)
    paddings: tuple[int, int] = (1, 1)
    pool_sizes: tuple[int, int] = (1, 2)
    batch_norm: bool = True
    groups_per_batch: int = 16
    lr: float = 3e-3
    epochs: dict[int, int] = field(default_factory=lambda: {1: 30, 2: 80, 4: 160, 8: 250, 16: 150})
    augment_up_to: int = 2  # random 1-pixel shifts of the training images for N <= this
    label_smoothing: float = 0.1
    mode_epochs: int = 10
    groupings: int = 5
    speed_groups: int = 128
    max_train_images: int | None = None  # None: all of them; fewer for a quick run


FULL = Setup()
QUICK = replace(
    FULL,
    out_channels=4,
    channels=(4, 4, 8),
    features=8,
    epochs={1: 1},
    mode_epochs=1,
    groupings=1,
    speed_groups=2,
    max_train_images=64,
)


@dataclass(frozen=True)
class Split:
    """The digits, scaled to [0, 1], as (B, 1, 8, 8) images and their labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


@dataclass(frozen=True)
class Result:
    num_instances: int
    mode: str
    out_channels: int
    epochs: int
    train_seconds: float
    accuracy: float
    images_per_second: float


def load_digits_split(seed: int = 0) -> Split:
    """scikit-learn's digits with 20% held out (ceil(0.2 · 1797) = 360), split by a
    permutation drawn from ``seed``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise MissingDependency(INSTALL_HINT) from err
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    held_out = math.ceil(HELD_OUT * len(order))
    test, train = order[:held_out], order[held_out:]
    return Split(images[train], labels[train], images[test], labels[test])


def epochs_for(num_instances: int, setup: Setup) -> int:
    """The epochs of N: the entry of the largest listed N' <= N."""
    return setup.epochs[max(k for k in setup.epochs if k <= num_instances)]


def build_model(
    num_instances: int, mode: str, out_channels: int | None, setup: Setup, seed: int
) -> MultiplexedCNN:
    """The demo's CNN for 8×8 digits with the given multiplexer; seeded."""
    torch.manual_seed(seed)
    return MultiplexedCNN(
        num_instances, (1, 8, 8), 10, mode, channels=setup.channels, features=setup.features,
        kernel_sizes=setup.kernel_sizes, paddings=setup.paddings, pool_sizes=setup.pool_sizes,
        batch_norm=setup.batch_norm, out_channels=out_channels, generator=seed,
    )  # fmt: skip


def run_one(
    num_instances: int,
    mode: str,
    out_channels: int | None,
    epochs: int,
    data: Split,
    setup: Setup,
    *,
    seed: int,
    device: torch.device,
    progress: TextIO,
) -> Result:
    """Train, evaluate and time one (N, mode)."""
    model = build_model(num_instances, mode, out_channels, setup, seed).to(device)
    train_x, train_y = data.train_images.to(device), data.train_labels.to(device)
    total = training_steps(len(train_y), setup.groups_per_batch * num_instances, epochs)
    bar = Progress(f"N={num_instances:<2} {mode:<16}", total, progress)
    start = time.perf_counter()
    augment = random_shift if num_instances <= setup.augment_up_to else None
    train_classifier(
        model, train_x, train_y, epochs=epochs, groups_per_batch=setup.groups_per_batch,
        lr=setup.lr, generator=torch.Generator().manual_seed(seed), on_step=bar,
        augment=augment, label_smoothing=setup.label_smoothing,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    test_x, test_y = data.test_images.to(device), data.test_labels.to(device)
    acc = accuracy(
        model, test_x, test_y, groupings=setup.groupings,
        generator=torch.Generator().manual_seed(seed + 1),
    )  # fmt: skip
    speed = images_per_second(model, test_x, groups=setup.speed_groups)
    return Result(num_instances, mode, model.mux.out_channels, epochs, seconds, acc, speed)


def format_results(results: Sequence[Result], base: float | None) -> str:
    """A table; speed-ups are against ``base`` images/s (the N = 1 row's) when given."""
    lines = ["    N  mode              C_out  epochs  train s  accuracy    images/s  vs N=1"]
    for r in results:
        ratio = f"{r.images_per_second / base:5.2f}x" if base else "     -"
        lines.append(
            f"{r.num_instances:5d}  {r.mode:<16}  {r.out_channels:5d}  {r.epochs:6d}  "
            f"{r.train_seconds:7.1f}  {100 * r.accuracy:7.2f}%  {r.images_per_second:10.0f}  "
            f"{ratio}"
        )
    return "\n".join(lines)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise MissingDependency("the plot needs matplotlib: pip install matplotlib") from err
    return plt


def plot_results(by_n: Sequence[Result], by_mode: Sequence[Result], path: Path) -> None:
    """Accuracy and images/s against N, and accuracy of every mode at N = 4, as a PNG."""
    plt = _pyplot()
    fig, (acc_ax, speed_ax, mode_ax) = plt.subplots(1, 3, figsize=(15, 4.2))
    ns = [r.num_instances for r in by_n]
    acc_ax.plot(ns, [100 * r.accuracy for r in by_n], "o-")
    speed_ax.plot(ns, [r.images_per_second for r in by_n], "o-", color="tab:green")
    for ax, label in ((acc_ax, "held-out accuracy (%)"), (speed_ax, "inference images/s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("N (images per network pass)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    mode_ax.set_visible(bool(by_mode))
    ours = [r for r in by_n if r.num_instances == MODES_AT]
    bars = [*(replace(r, mode=f"{r.mode}, {r.out_channels} ch.") for r in ours), *by_mode]
    mode_ax.barh([r.mode for r in bars], [100 * r.accuracy for r in bars])
    mode_ax.invert_yaxis()
    mode_ax.set_xlabel(f"held-out accuracy at N={MODES_AT} (%)")
    mode_ax.grid(alpha=0.3, axis="x")
    best = by_n[0]
    fig.suptitle(
        f"Multiplexed CNN on scikit-learn digits ({best.mode}, {best.out_channels} channels)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_digits_demo(
    instances: Sequence[int] = DEFAULT_INSTANCES,
    *,
    seed: int = 0,
    device: str = "cpu",
    quick: bool = False,
    threads: int | None = 1,
    plot: Path | None = None,
    out: TextIO | None = None,
    progress: TextIO | None = None,
) -> tuple[list[Result], list[Result]]:
    """Train the best mode for each N in ``instances``, then, when 4 is one of them, every
    published mode at N = 4.

    Prints both tables to ``out`` (default stdout), progress bars to ``progress``
    (stderr); ``plot`` also draws them as a PNG (needs matplotlib). ``quick`` is a tiny
    run (seconds, for tests); ``threads`` sets torch's CPU threads. Returns (results by
    N, results by mode).
    """
    _check_instances(instances)
    out, progress = out or sys.stdout, progress or sys.stderr
    if plot is not None:
        _pyplot()  # before the training, not after it
    if threads is not None:
        torch.set_num_threads(threads)
    setup = QUICK if quick else FULL
    data = load_digits_split(seed)
    if setup.max_train_images is not None:
        kept = slice(setup.max_train_images)
        data = replace(
            data, train_images=data.train_images[kept], train_labels=data.train_labels[kept]
        )
    target = torch.device(device)
    print(
        f"digits on {target} ({torch.get_num_threads()} CPU thread(s)): "
        f"{len(data.train_labels)} training and {len(data.test_labels)} held-out 8x8 images; "
        f"MultiplexedCNN, {setup.mode} multiplexer with {setup.out_channels} channels, "
        f"random 1-pixel shifts for N <= {setup.augment_up_to}, label smoothing "
        f"{setup.label_smoothing}; accuracy averaged over "
        f"{setup.groupings} groupings of the test images",
        file=out,
    )
    start = time.perf_counter()
    common = {"seed": seed, "device": target, "progress": progress}
    by_n = [
        run_one(n, setup.mode, setup.out_channels, epochs_for(n, setup), data, setup, **common)
        for n in instances
    ]
    base = next((r.images_per_second for r in by_n if r.num_instances == 1), None)
    print(format_results(by_n, base), file=out, flush=True)
    by_mode = []
    if MODES_AT in instances:
        by_mode = [
            run_one(MODES_AT, mode, None, setup.mode_epochs, data, setup, **common)
            for mode in PUBLISHED_MODES
        ]
        print(f"\nevery published mode at N={MODES_AT}, as published (C_out 1, 8 for "
              f"nonlinear-expand), {setup.mode_epochs} epochs:", file=out)  # fmt: skip
        print(format_results(by_mode, base), file=out)
    print(f"total {time.perf_counter() - start:.1f}s", file=out)
    if plot is not None:
        plot_results(by_n, by_mode, plot)
        print(f"wrote {plot}", file=out)
    return by_n, by_mode


def _check_instances(instances: Sequence[int]) -> None:
    bad = [n for n in instances if isinstance(n, bool) or not isinstance(n, int) or n < 1]
    if bad or not instances:
        raise ValueError(f"instances must be positive ints, got {list(instances)!r}")


def run_from_args(args: argparse.Namespace) -> int:
    """``muxkernels demo --task digits``: a misplaced option or a missing package is one
    line on stderr (exit status 2 or 1), never a traceback."""
    if args.steps is not None:
        print("muxkernels demo: error: --steps applies to --task retrieval; the digits demo "
              "trains for a number of epochs per N", file=sys.stderr)  # fmt: skip
        return 2
    try:
        run_digits_demo(
            args.instances or DEFAULT_INSTANCES, seed=args.seed, device=args.device,
            quick=args.quick, threads=args.threads, plot=args.plot,
        )  # fmt: skip
    except MissingDependency as err:
        print(f"muxkernels demo: error: {err}", file=sys.stderr)
        return 1
    return 0
