"""Image multiplexing in the benchmarks: the image multiplexer modes as ops, and the
multiplexed CNN end to end (images/s against N).

Ops (one per distinct computation; the modes a row stands for are in ``IMAGE_OPS``;
"remap", a strided copy of a sixteenth of each image that takes at most N = 16, is left out):
``eager`` is ``ImageMultiplexer`` on the reference backend, ``compiled`` its torch.compile,
``published`` the notebook's loop over instances (``published_vision``), the matrix and
vector modes also run on each kernel backend of ``ortho_mux`` / ``hadamard_mux``, and the
single convolutions on the cpu backend (its compiled kernel, on CPU tensors). Images
are (B', N, C, H, W) with (B', C, H, W) from ``Sizes.images``.

End to end ("cnn"): the notebook's MuxLeNet (20×20 images, its default "Gaussian" mode, tanh
branches) on random weights; N = 1 is the LeNet trunk without multiplexing at its best
batch size, "published" the notebook's forward (``published_vision.mux_lenet``),
"muxkernels" ``MultiplexedCNN`` (one convolution per layer, one GEMM for the branches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..models.vision import MultiplexedCNN
from ..nn.image_multiplexer import CONV_MODES, ImageMultiplexer
from ..ops.hadamard_mux import KERNEL_BACKENDS as HADAMARD_BACKENDS
from ..ops.ortho_mux import KERNEL_BACKENDS as ORTHO_BACKENDS
from . import published, published_vision
from .end_to_end import ThroughputRow, _describe, _row, time_passes

if TYPE_CHECKING:
    from .workloads import Sizes, Workload

# op → (the mode it runs, the other modes with the same computation)
IMAGE_OPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "image_mux_gaussian": ("Gaussian", ("graded", "identity")),
    "image_mux_learnable": ("learnable", ()),
    "image_mux_nonlinear_expand": ("nonlinear-expand", ("nonlinear",)),
    "image_mux_so_n": ("SO(N)", ("rotation",)),
    "image_mux_learnable_w": ("learnable-W", ()),
    "image_mux_hadamard": ("gaussian_hadamard", ("binary_hadamard",)),
}
CNN_TASK = "cnn"
CNN_IMAGE = (1, 20, 20)  # the notebook's cropped MNIST
CNN_MODE = "Gaussian"
# N = 1 batch sizes searched: a LeNet pass is small, so larger batches than the encoder's
CNN_BATCH_SIZES = {"cuda": (256, 1024, 4096, 16384), "cpu": (16, 64, 256)}


def image_backends(op: str) -> tuple[str, ...]:
    """The kernel backends image multiplexer ``op`` runs on: those of ``ortho_mux`` for the
    matrix modes, of ``hadamard_mux`` for the vector modes, the cpu backend's compiled
    kernel for the single convolutions, none for the two-layer ones."""
    mode = IMAGE_OPS[op][0]
    if mode in ("SO(N)", "learnable-W"):
        return ORTHO_BACKENDS
    if mode in CONV_MODES:
        return ("cpu",)
    return HADAMARD_BACKENDS if mode == "gaussian_hadamard" else ()


def image_workload(op: str, n: int, sizes: Sizes, device: torch.device) -> Workload:
    """The workload of image multiplexer ``op`` at N = ``n`` (see ``workloads.build``)."""
    from .workloads import Workload  # workloads lists these ops: imported here, not on top

    mode = IMAGE_OPS[op][0]
    groups, c, h, w = sizes.images
    dt = sizes.dtype
    mux = ImageMultiplexer(n, (c, h, w), mode, generator=0).to(device)
    images = torch.randn(groups, n, c, h, w, device=device, dtype=torch.float32).to(dt)
    x = {"images": images, **{k: v.to(dt) for k, v in mux.named_parameters()}}
    learned = tuple(k for k, p in mux.named_parameters() if p.requires_grad)

    def call(x: dict[str, torch.Tensor], backend: str) -> torch.Tensor:
        return mux.mix(x["images"], x, backend)  # the layer's computation on x's leaves

    impls = {"eager": lambda x: call(x, "reference")}
    impls.update({b: (lambda x, b=b: call(x, b)) for b in image_backends(op)})
    impls["published"] = _published(mode, n, c, h * w)
    out_elements = groups * mux.out_channels * h * w
    traffic = (images.numel() + out_elements) * images.element_size()
    work = Workload(
        op, n, f"B'={groups} C={c} H={h} W={w}", x, ("images", *learned), impls,
        bytes={"fwd": traffic, "bwd": traffic, "fwd+bwd": 2 * traffic},
    )  # fmt: skip
    if mode in ("SO(N)", "learnable-W"):
        flops = 2.0 * groups * c * n * (h * w) ** 2
        work.flops = {"fwd": flops, "bwd": flops, "fwd+bwd": 2 * flops}
        work.gemm = (groups * c, n * h * w, h * w)
    return work


def _published(mode: str, n: int, c: int, pixels: int) -> Callable:
    if mode in ("Gaussian", "learnable"):
        return lambda x: published_vision.convolution(x["images"], x["rop"])
    if mode == "nonlinear-expand":
        return lambda x: published_vision.two_layer(x["images"], x["rop"], x["rop2"])
    if mode in ("SO(N)", "learnable-W"):
        return lambda x: published_vision.matrix(x["images"], x["rop"])

    def hadamard(x: dict[str, torch.Tensor]) -> torch.Tensor:  # the sequence layer's form
        images = x["images"]
        mixed = published.hadamard_mux(images.reshape(-1, n, c, pixels), x["instance_embedding"])
        return mixed.view(images.shape[0], *images.shape[2:])

    return hadamard


def _cnn(n: int, device: torch.device, dtype: torch.dtype, seed: int) -> MultiplexedCNN:
    torch.manual_seed(seed)
    model = MultiplexedCNN(n, CNN_IMAGE, mode=CNN_MODE, demux_activation="tanh", generator=seed)
    return model.to(device=device, dtype=dtype).eval()


def _baseline(model: MultiplexedCNN, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The LeNet trunk without multiplexing: images (B, 1, H, W) → tanh(OL(...))."""
    torch.manual_seed(seed)
    weight = model.C1.weight
    first = nn.Conv2d(CNN_IMAGE[0], weight.shape[0], weight.shape[2:])
    first = first.to(device=weight.device, dtype=weight.dtype)

    def run(images: torch.Tensor) -> torch.Tensor:
        x = model.S2(torch.tanh(first(images)))
        x = model.S4(torch.tanh(model.C3(x)))
        x = torch.tanh(model.F6(torch.tanh(model.C5(x)).flatten(1)))
        return torch.tanh(model.OL(x))

    return run


def run_cnn_end_to_end(
    ns: Iterable[int],
    *,
    device: torch.device,
    dtype: torch.dtype,
    batch_sizes: Sequence[int] | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[ThroughputRow]:
    """Images/s of the multiplexed CNN against N: the N = 1 baseline at each batch size
    (default ``CNN_BATCH_SIZES`` of the device), then the notebook's forward and ours at
    each N > 1 with the best baseline batch as B'."""
    batch_sizes = batch_sizes or CNN_BATCH_SIZES["cuda" if device.type == "cuda" else "cpu"]
    rows: list[ThroughputRow] = []
    baseline = _baseline(_cnn(1, device, dtype, seed), seed)
    times = time_passes(
        {b: (baseline, torch.randn(b, *CNN_IMAGE, device=device, dtype=dtype))
         for b in batch_sizes},
        device,
    )  # fmt: skip
    rates = {b: b * 1e3 / ms for b, ms in times.items() if not math.isnan(ms)}
    if not rates:
        raise RuntimeError(f"{CNN_TASK}: the N=1 baseline ran out of memory at every batch size")
    groups = max(rates, key=rates.__getitem__)
    for b, ms in times.items():
        rows.append(_row(CNN_TASK, 1, "baseline", b, ms, rates[groups]))
        log(_describe(rows[-1]))
    for n in (n for n in ns if n > 1):
        model = _cnn(n, device, dtype, seed)
        images = torch.randn(groups, n, *CNN_IMAGE, device=device, dtype=dtype)
        passes = {
            "published": (lambda x, model=model: published_vision.mux_lenet(model, x), images),
            "muxkernels": (lambda x, model=model: torch.tanh(model(x)), images),
        }
        for impl, ms in time_passes(passes, device).items():  # side by side, interleaved
            rows.append(_row(CNN_TASK, n, impl, groups, ms, rates[groups]))
            log(_describe(rows[-1]))
    return rows
