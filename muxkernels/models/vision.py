"""Multiplexed image classifiers: the vision notebook's LeNet (``MultiplexedCNN``) and an MLP.

Both mix each group of N images with an ``ImageMultiplexer``, run one network on the
mixture, split its feature vector into N with a ``FeatureDemultiplexer`` (``DCs``) and
classify every instance with one shared output layer (``OL``). Row g·N+i of the logits is
image g·N+i of the batch. State dicts use the notebook's names: the multiplexer's ``rop``
and ``rop2`` (or ``instance_embedding``) at the top level, ``C1``, ``C3``, ``C5``, ``F6``,
``DCs.{i}``, ``OL``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from .. import transforms
from .._backend import Backend
from ..image_transforms import check_positive_ints
from ..nn.feature_demultiplexer import Activation, FeatureDemultiplexer
from ..nn.image_multiplexer import ImageMultiplexer, ImageMuxMode

MUX = "mux."  # the multiplexer's submodule prefix, lifted to the top level in state dicts


class _MultiplexedClassifier(nn.Module):
    """The multiplexer, the demultiplexer ``DCs`` and the output layer ``OL`` around a body
    that maps (B', C_out, H, W) mixtures to (B', features) vectors."""

    def __init__(
        self, mux: ImageMultiplexer, features: int, num_classes: int, demux_activation: Activation
    ) -> None:
        super().__init__()
        check_positive_ints(features=features, num_classes=num_classes)
        self.num_instances = mux.num_instances
        self.mux = mux
        self.DCs = FeatureDemultiplexer(
            mux.num_instances, features, demux_activation, backend=mux.backend
        )
        self.OL = nn.Linear(features, num_classes)
        self.register_state_dict_post_hook(_lift_mux_names)
        self.register_load_state_dict_pre_hook(_lower_mux_names)

    def body(self, mixed: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of ``images`` (B, C, H, W) (B = B'·N, or any B with
        ``pad=True``) or (B', N, C, H, W) (then B = B'·N), row g·N+i."""
        rows = images.shape[0] * (images.shape[1] if images.dim() == 5 else 1)
        logits = self.OL(self.DCs(self.body(self.mux(images))))
        return logits[:rows]


class MultiplexedCNN(_MultiplexedClassifier):
    """The notebook's ``MuxLeNet``: multiplexer → C1 (conv) → S2 (2×2 max pool) → C3 (conv)
    → S4 (2×2 max pool) → C5 (conv whose kernel covers what remains, so 1×1 out) → F6
    (Linear) → N branches ``DCs`` → OL, with tanh after every layer up to F6.

    The defaults are the notebook's: 20×20 single-channel images, 10 and 16 convolution
    channels with 3×3 and 4×4 kernels, 120 C5 channels, 84 features, 10 classes. Smaller
    images (8×8 digits) need ``paddings`` such as (1, 1); ``pool_sizes`` sets S2 and S4 (1: no
    pooling). ``batch_norm`` adds BatchNorm
    after C1 and C3 (``N1``, ``N3``; not in the notebook). ``demux_activation="tanh"``
    gives the notebook's branches and ``tanh(logits)`` its outputs (trained against ±1
    targets); the default is DataMUX's gelu + LayerNorm branches (``mlp_demux``).
    Multiplexer options (``out_channels``, ``hidden_channels``, ``generator``, ``pad``,
    ``backend``) go to ``ImageMultiplexer``.
    """

    def __init__(
        self,
        num_instances: int,
        image_shape: tuple[int, int, int] = (1, 20, 20),
        num_classes: int = 10,
        mode: ImageMuxMode = "Gaussian",
        *,
        channels: Sequence[int] = (10, 16, 120),
        features: int = 84,
        kernel_sizes: Sequence[int] = (3, 4),
        paddings: Sequence[int] = (0, 0),
        pool_sizes: Sequence[int] = (2, 2),
        batch_norm: bool = False,
        demux_activation: Activation = "gelu_layernorm",
        out_channels: int | None = None,
        hidden_channels: int | None = None,
        generator: transforms.GeneratorLike = None,
        pad: bool = False,
        backend: Backend = "auto",
    ) -> None:
        mux = ImageMultiplexer(
            num_instances, image_shape, mode, out_channels=out_channels,
            hidden_channels=hidden_channels, generator=generator, pad=pad, backend=backend,
        )  # fmt: skip
        super().__init__(mux, features, num_classes, demux_activation)
        c1, c3, c5 = _three("channels", channels)
        (k1, k3), (p1, p3) = _two("kernel_sizes", kernel_sizes), _two("paddings", paddings, 0)
        s2, s4 = _two("pool_sizes", pool_sizes)
        remaining = _c5_kernel(image_shape[1:], (k1, k3), (p1, p3), (s2, s4))
        self.C1 = nn.Conv2d(mux.out_channels, c1, k1, padding=p1)
        self.S2 = nn.MaxPool2d(s2)
        self.C3 = nn.Conv2d(c1, c3, k3, padding=p3)
        self.S4 = nn.MaxPool2d(s4)
        self.C5 = nn.Conv2d(c3, c5, remaining)
        self.F6 = nn.Linear(c5, features)
        self.N1 = nn.BatchNorm2d(c1) if batch_norm else nn.Identity()
        self.N3 = nn.BatchNorm2d(c3) if batch_norm else nn.Identity()

    def body(self, mixed: torch.Tensor) -> torch.Tensor:
        x = self.S2(torch.tanh(self.N1(self.C1(mixed))))
        x = self.S4(torch.tanh(self.N3(self.C3(x))))
        x = torch.tanh(self.C5(x)).flatten(1)
        return torch.tanh(self.F6(x))


class MultiplexedMLP(_MultiplexedClassifier):
    """Multiplexer → flatten → ``layers`` (Linear + tanh each; the last width is the
    feature size) → N branches ``DCs`` → OL. The default multiplexer is DataMUX's
    ``gaussian_hadamard`` on the pixels; multiplexer options go to ``ImageMultiplexer``."""

    def __init__(
        self,
        num_instances: int,
        image_shape: tuple[int, int, int],
        num_classes: int = 10,
        mode: ImageMuxMode = "gaussian_hadamard",
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        demux_activation: Activation = "gelu_layernorm",
        out_channels: int | None = None,
        hidden_channels: int | None = None,
        gaussian_hadamard_norm: float = 1.0,
        generator: transforms.GeneratorLike = None,
        pad: bool = False,
        backend: Backend = "auto",
    ) -> None:
        mux = ImageMultiplexer(
            num_instances, image_shape, mode, out_channels=out_channels,
            hidden_channels=hidden_channels, gaussian_hadamard_norm=gaussian_hadamard_norm,
            generator=generator, pad=pad, backend=backend,
        )  # fmt: skip
        sizes = tuple(hidden_sizes)
        if not sizes:
            raise ValueError("hidden_sizes must name at least one layer width")
        check_positive_ints(**{f"hidden_sizes[{k}]": s for k, s in enumerate(sizes)})
        super().__init__(mux, sizes[-1], num_classes, demux_activation)
        widths = (mux.out_channels * image_shape[1] * image_shape[2], *sizes)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))

    def body(self, mixed: torch.Tensor) -> torch.Tensor:
        x = mixed.flatten(1)
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


def _two(name: str, values: Sequence[int], smallest: int = 1) -> tuple[int, int]:
    values = tuple(values)
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= smallest for v in values)
    if len(values) != 2 or not ok:
        raise ValueError(f"{name} must be two ints >= {smallest} (C1, C3), got {values!r}")
    return values


def _three(name: str, values: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(values)
    if len(values) != 3:
        raise ValueError(f"{name} must be three ints (C1, C3, C5), got {values!r}")
    check_positive_ints(**{f"{name}[{k}]": v for k, v in enumerate(values)})
    return values


def _c5_kernel(
    size: tuple[int, int],
    kernels: tuple[int, int],
    paddings: tuple[int, int],
    pools: tuple[int, int],
) -> tuple[int, int]:
    """The spatial size left after C1, S2, C3, S4: C5's kernel. Refuses a size below 1."""
    (k1, k3), (p1, p3), (s2, s4) = kernels, paddings, pools
    left = []
    for extent in size:
        c1 = extent + 2 * p1 - k1 + 1
        c3 = (c1 // s2 if c1 >= s2 else 0) + 2 * p3 - k3 + 1
        if c1 < s2 or c3 < s4:
            raise ValueError(
                f"images of size {size[0]}x{size[1]} are too small for C1 (kernel {k1}, padding "
                f"{p1}), S2 (pool {s2}), C3 (kernel {k3}, padding {p3}), S4 (pool {s4}): "
                "nothing is left for C5; use larger paddings or smaller kernels or pools"
            )
        left.append(c3 // s4)
    return left[0], left[1]


def _lift_mux_names(module: nn.Module, state_dict, prefix: str, metadata) -> None:
    inner = prefix + MUX
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)


def _lower_mux_names(module: _MultiplexedClassifier, state_dict, prefix: str, *args) -> None:
    for name in module.mux.state_dict():
        if prefix + name in state_dict:
            state_dict[prefix + MUX + name] = state_dict.pop(prefix + name)
