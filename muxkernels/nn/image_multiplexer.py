"""The image multiplexer: the DataMUX vision notebook's modes, N images mixed into one
(design §7).

Instance i of group g is row g·N+i of the caller's (B, C, H, W) batch, as everywhere in
muxkernels. Each instance gets its own transform T_i and the transformed images are summed:
x[g] = Σ_i T_i(E[g,i]). The mode families and how each runs:

- convolution ("Gaussian", "graded", "identity", "learnable"): T_i is a 3×3 convolution
  (padding 1) with kernel ``rop[i]`` (C_out, C, 3, 3). The sum of N convolutions is ONE
  convolution of the N·C stacked input channels with the kernels side by side.
- two-layer convolution ("nonlinear", "nonlinear-expand"):
  T_i(e) = tanh(conv(tanh(conv(e, rop[i])), rop2[i])), each layer one grouped convolution
  over the N·C stacked channels (groups = N); "-expand" gives C_out = 8 channels.
- matrix ("SO(N)", "learnable-W", "rotation"): T_i(e) = e @ rop[i] on each channel's
  flattened H·W pixels (the notebook's row-vector layout), one ``ortho_mux`` GEMM with
  P[i] = rop[i]ᵀ; "rotation" rotates instance i by 360·i/N degrees (bilinear) times 1 − 2i.
- vector ("gaussian_hadamard", "binary_hadamard", DataMUX's sequence transforms on pixels):
  x = (1/N) Σ_i v_i ⊙ e_i with ``instance_embedding`` v (N, H·W), one ``hadamard_mux``.
- "remap": every 4th pixel of image i (H/4 × W/4) goes to tile (i mod 4, i div 4) of a
  4 × 4 grid, N <= 16. (The notebook's indexing skipped the channel dimension, so there
  only instances 0, 4, 8, 12 landed, as row strips; this places every instance's tile.)

"Gaussian", "graded", "identity" and "SO(N)" are fixed; "learnable", "learnable-W" and the
two-layer modes train. Fixed transforms are frozen parameters under the same names, so a
saved model keeps them (the notebook held them in Python lists, outside its state dict).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import _backend, _cpu, image_transforms, transforms
from .._backend import Backend
from .._checks import (
    check_dim,
    check_floating,
    check_nonempty,
    check_rank,
    check_tensor,
    group_batch,
)
from ..image_transforms import KERNEL_SIZE, REMAP_STRIDE, check_positive_ints
from ..ops import _validate, hadamard_mux, ortho_mux
from ..ops.ortho_mux import KERNEL_BACKENDS as ORTHO_BACKENDS
from ..ops.ortho_mux import ORTHO_KERNELS
from ..prefix import pad_batch

ImageMuxMode = Literal[
    "Gaussian",
    "graded",
    "identity",
    "learnable",
    "nonlinear",
    "nonlinear-expand",
    "SO(N)",
    "learnable-W",
    "rotation",
    "remap",
    "gaussian_hadamard",
    "binary_hadamard",
]
CONV_MODES = ("Gaussian", "graded", "identity", "learnable")
TWO_LAYER_MODES = ("nonlinear", "nonlinear-expand")
MATRIX_MODES = ("SO(N)", "learnable-W", "rotation")
VECTOR_MODES = ("gaussian_hadamard", "binary_hadamard")
PUBLISHED_MODES = (*CONV_MODES, *TWO_LAYER_MODES, *MATRIX_MODES, "remap")
IMAGE_MUX_MODES: tuple[str, ...] = (*PUBLISHED_MODES, *VECTOR_MODES)
LEARNED_MODES = ("learnable", "nonlinear", "nonlinear-expand", "learnable-W")
HIDDEN_CHANNELS = 16  # the two-layer modes' inner width in the notebook
EXPAND_CHANNELS = 8  # "nonlinear-expand"'s output channels (the notebook's expand_factor)


class ImageMultiplexer(nn.Module):
    """Mix N images into one: (B, C, H, W) or (B', N, C, H, W) → (B', C_out, H, W).

    Args:
        num_instances: N.
        image_shape: (C, H, W) of one input image.
        mode: one of ``IMAGE_MUX_MODES`` (the module docstring gives each formula).
        out_channels: C_out of the convolution modes (default C, as published; more
            channels keep more of N images) and of the two-layer modes (default C, and 8
            for "nonlinear-expand"). The other modes keep C.
        hidden_channels: the two-layer modes' inner width (default 16, as published).
        gaussian_hadamard_norm: ‖v_i‖ of "gaussian_hadamard".
        generator: seeds the random transforms (a ``torch.Generator``, an int, or None).
        pad: fill a last group that is short of N images with copies of the last image
            (drop their outputs yourself); without it such a batch is an error.
        backend: the kernel backend of ``ortho_mux`` and ``hadamard_mux``.

    Parameters: ``rop`` (and ``rop2`` for the two-layer modes) in the notebook's layout,
    ``instance_embedding`` for the vector modes; "rotation" keeps its matrices in a
    non-persistent buffer (they follow from N, H and W) and "remap" has none.
    """

    def __init__(
        self,
        num_instances: int,
        image_shape: tuple[int, int, int],
        mode: ImageMuxMode = "Gaussian",
        *,
        out_channels: int | None = None,
        hidden_channels: int | None = None,
        gaussian_hadamard_norm: float = 1.0,
        generator: transforms.GeneratorLike = None,
        pad: bool = False,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        if mode not in IMAGE_MUX_MODES:
            raise ValueError(f"mode must be one of {IMAGE_MUX_MODES}, got {mode!r}")
        if not (isinstance(image_shape, tuple | list) and len(image_shape) == 3):
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
        c, h, w = image_shape
        check_positive_ints(num_instances=num_instances, C=c, H=h, W=w)
        convolves = mode in CONV_MODES or mode in TWO_LAYER_MODES
        if out_channels is not None and not convolves:
            raise ValueError(f"out_channels applies to the convolution modes, not {mode!r}")
        if hidden_channels is not None and mode not in TWO_LAYER_MODES:
            raise ValueError(f"hidden_channels applies to {TWO_LAYER_MODES}, not {mode!r}")
        if out_channels is None:
            out_channels = EXPAND_CHANNELS if mode == "nonlinear-expand" else c
        hidden_channels = HIDDEN_CHANNELS if hidden_channels is None else hidden_channels
        check_positive_ints(out_channels=out_channels, hidden_channels=hidden_channels)
        if mode == "remap":
            _check_remap(num_instances, h, w)
        self.num_instances = num_instances
        self.image_shape = (c, h, w)
        self.mode = mode
        self.out_channels = out_channels if convolves else c
        self.pad = pad
        self.backend = backend
        n = num_instances
        rop2 = None
        if mode in ("Gaussian", "learnable"):
            rop = image_transforms.random_kernels(n, out_channels, c, generator=generator)
        elif mode in ("graded", "identity"):
            rop = image_transforms.constant_kernels(n, out_channels, c, graded=mode == "graded")
        elif mode in TWO_LAYER_MODES:
            rop = image_transforms.random_kernels(n, hidden_channels, c, generator=generator)
            rop2 = image_transforms.random_kernels(
                n, out_channels, hidden_channels, generator=generator
            )
        elif mode == "SO(N)":
            # row-major like learnable-W's (a QR result is column-major): the blocks rop[i]
            # then stack into the cpu backend's GEMM operand without a copy per call
            rop = image_transforms.special_orthogonal(n, h * w, generator=generator).contiguous()
        elif mode == "learnable-W":
            rop = image_transforms.gaussian_matrices(n, h * w, generator=generator)
        elif mode == "rotation":
            matrices = image_transforms.rotation_matrices(n, h, w)
            # kept with each matrices[i]ᵀ row-major, for the same stacking without a copy
            self.register_buffer("rotation", matrices.mT.contiguous().mT, persistent=False)
        elif mode == "gaussian_hadamard":
            vectors = transforms.gaussian_vectors(
                n, h * w, gaussian_hadamard_norm, generator=generator
            )
            self.instance_embedding = nn.Parameter(vectors, requires_grad=False)
        elif mode == "binary_hadamard":
            vectors = transforms.binary_vectors(n, h * w)
            self.instance_embedding = nn.Parameter(vectors, requires_grad=False)
        if mode in CONV_MODES or mode in TWO_LAYER_MODES or mode in ("SO(N)", "learnable-W"):
            self.rop = nn.Parameter(rop, requires_grad=mode in LEARNED_MODES)
        if rop2 is not None:
            self.rop2 = nn.Parameter(rop2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Multiplex ``images`` (B, C, H, W), B = B'·N, or (B', N, C, H, W) into
        (B', C_out, H, W)."""
        return self.mix(self._grouped(images), self._parameters, self.backend)

    def mix(
        self, grouped: torch.Tensor, transforms: Mapping[str, torch.Tensor], backend: Backend
    ) -> torch.Tensor:
        """x[g] = Σ_i T_i(grouped[g, i]) for checked images (B', N, C, H, W), with the
        transforms taken from ``transforms`` by their parameter names (``rop``, ``rop2``,
        ``instance_embedding``; "rotation" uses its buffer): ``forward`` passes this
        module's parameters, a caller other tensors of the same shapes (the benchmarks
        time the layer's computation with their own leaves this way)."""
        if self.mode in CONV_MODES:
            return _convolve(grouped, transforms["rop"], self.out_channels, backend)
        if self.mode in TWO_LAYER_MODES:
            return self._two_layer(grouped, transforms["rop"], transforms["rop2"])
        if self.mode == "remap":
            return self._remap(grouped)
        b, n, c, h, w = grouped.shape
        pixels = grouped.reshape(b, n, c, h * w)
        if self.mode in VECTOR_MODES:
            mixed = hadamard_mux(pixels, transforms["instance_embedding"], backend=backend)
        else:
            rotates = self.mode == "rotation"
            matrices = self.rotation if rotates else transforms["rop"].transpose(1, 2)
            mixed = _matrix_sum(pixels, matrices, backend)
        return mixed.reshape(b, c, h, w)

    def _grouped(self, images: torch.Tensor) -> torch.Tensor:
        """Validate ``images`` and view them as (B', N, C, H, W)."""
        check_tensor("images", images)
        check_floating("images", images)
        check_rank("images", images, (4, 5), "(B, C, H, W) or (B', N, C, H, W)")
        check_nonempty("images", images)
        for dim, size, what in zip((-3, -2, -1), self.image_shape, "CHW", strict=True):
            check_dim("images", images, dim, size, f"the multiplexer's image size {what}")
        if images.dim() == 5:
            check_dim("images", images, 1, self.num_instances, "the number of instances N")
            return images
        if self.pad:
            images, _ = pad_batch(images, self.num_instances)
        return group_batch("images", images, self.num_instances)

    def _two_layer(
        self, grouped: torch.Tensor, rop: torch.Tensor, rop2: torch.Tensor
    ) -> torch.Tensor:
        """Σ_i tanh(conv(tanh(conv(E_i, rop[i])), rop2[i])): two grouped convolutions."""
        b, n, c, h, w = grouped.shape
        first = rop.to(grouped.dtype).flatten(0, 1)  # (N·hidden, C, 3, 3)
        second = rop2.to(grouped.dtype).flatten(0, 1)  # (N·C_out, hidden, 3, 3)
        pad = KERNEL_SIZE // 2
        inner = torch.tanh(F.conv2d(grouped.reshape(b, n * c, h, w), first, padding=pad, groups=n))
        outer = torch.tanh(F.conv2d(inner, second, padding=pad, groups=n))
        return outer.reshape(b, n, self.out_channels, h, w).sum(1)

    def _remap(self, grouped: torch.Tensor) -> torch.Tensor:
        """Tile (i mod 4, i div 4) of the output holds E_i[..., ::4, ::4]: one copy."""
        b, n, c, h, w = grouped.shape
        s = REMAP_STRIDE
        tiles = grouped[..., ::s, ::s]  # (B', N, C, H/4, W/4)
        tiles = F.pad(tiles, (0, 0, 0, 0, 0, 0, 0, s * s - n))  # empty tiles past N
        # instance i = col·4 + row → (B', C, row, H/4, col, W/4)
        tiles = tiles.reshape(b, s, s, c, h // s, w // s).permute(0, 3, 2, 4, 1, 5)
        return tiles.reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return (
            f"num_instances={self.num_instances}, image_shape={self.image_shape}, "
            f"mode={self.mode!r}, out_channels={self.out_channels}, pad={self.pad}, "
            f"backend={self.backend!r}"
        )


def _check_remap(num_instances: int, height: int, width: int) -> None:
    s = REMAP_STRIDE
    if num_instances > s * s:
        raise ValueError(f'mode "remap" places at most {s * s} images, got num_instances='
                         f"{num_instances}")  # fmt: skip
    if height % s or width % s:
        raise ValueError(f'mode "remap" needs H and W divisible by {s}, got H={height}, '
                         f"W={width}")  # fmt: skip


def _convolve(
    grouped: torch.Tensor, rop: torch.Tensor, out_channels: int, backend: Backend
) -> torch.Tensor:
    """Σ_i conv(E_i, rop[i]): on CPU tensors under the "auto" or "cpu" backend, the cpu
    backend's compiled kernel (float32 and float64 where built); else one convolution of
    the N·C stacked channels, whatever the backend (no other has kernels for it)."""
    b, n, c, h, w = grouped.shape
    kernels = rop.to(grouped.dtype)
    on_cpu = grouped.device.type == "cpu" and _backend.requested(backend) in ("auto", "cpu")
    if on_cpu and _cpu.runs_kernels(grouped):
        return _cpu.kernels.conv_mux(grouped, kernels)
    weight = kernels.transpose(0, 1).reshape(out_channels, n * c, KERNEL_SIZE, KERNEL_SIZE)
    return F.conv2d(grouped.reshape(b, n * c, h, w), weight, padding=KERNEL_SIZE // 2)


def _matrix_sum(pixels: torch.Tensor, matrices: torch.Tensor, backend: Backend) -> torch.Tensor:
    """Σ_i P[i] @ e_i (the notebook sums plainly) for pixels (B', N, C, H·W): ortho_mux's
    GEMM without its N^(-1/2). The cpu backend's GEMM applies no scale at all (its call
    skips ortho_mux, so the matrices are checked here); the other backends' results, from
    ortho_mux and its checks, are multiplied by √N."""
    chosen = _backend.resolve("ortho_mux", backend, pixels.device, ORTHO_BACKENDS, ORTHO_KERNELS)
    if chosen != "cpu":
        return ortho_mux(pixels, matrices, backend=chosen) * math.sqrt(pixels.shape[1])
    _validate.transform("matrices", matrices, pixels, 3, "(N, H·W, H·W)", "images")
    return _cpu.ortho_mux(pixels, matrices, scale=1.0)
