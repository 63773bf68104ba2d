"""Initialisers of the image multiplexing transforms (the DataMUX vision notebook's modes).

Each random one takes ``generator`` (a ``torch.Generator``, an int seed, or None for torch's
global RNG) and draws on the CPU in float64, as ``muxkernels.transforms`` does, so a seed
gives the same transform on every device. Shapes follow the notebook's ``rop`` layout:
3×3 kernels are (N, C_out, C_in, 3, 3); pixel matrices act on one channel's flattened
H·W pixels.
"""

from __future__ import annotations

import math

import torch

from .transforms import GeneratorLike, _cpu_generator, haar_orthogonal

KERNEL_SIZE = 3  # every convolution mode of the notebook uses 3×3 kernels, padding 1
REMAP_STRIDE = 4  # "remap": every 4th pixel of each image, into a 4 × 4 grid of tiles


def check_positive_ints(**sizes: int) -> None:
    """Each named size is a positive int (bool refused), else one ValueError naming it."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def random_kernels(
    num_instances: int,
    out_channels: int,
    in_channels: int,
    *,
    generator: GeneratorLike = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(N, C_out, C_in, 3, 3) standard normal kernels (the notebook's ``torch.randn``)."""
    check_positive_ints(
        num_instances=num_instances, out_channels=out_channels, in_channels=in_channels
    )
    shape = (num_instances, out_channels, in_channels, KERNEL_SIZE, KERNEL_SIZE)
    return torch.randn(shape, generator=_cpu_generator(generator), dtype=torch.float64).to(dtype)


def constant_kernels(
    num_instances: int,
    out_channels: int,
    in_channels: int,
    *,
    graded: bool,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(N, C_out, C_in, 3, 3) kernels of ones ("identity"), times i + 1 for instance i
    ("graded")."""
    check_positive_ints(
        num_instances=num_instances, out_channels=out_channels, in_channels=in_channels
    )
    shape = (num_instances, out_channels, in_channels, KERNEL_SIZE, KERNEL_SIZE)
    kernels = torch.ones(shape, dtype=dtype)
    if graded:
        kernels *= torch.arange(1, num_instances + 1, dtype=dtype).view(-1, 1, 1, 1, 1)
    return kernels


def special_orthogonal(
    num_instances: int,
    size: int,
    *,
    generator: GeneratorLike = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(N, d, d) Haar-random rotations, determinant +1 (the notebook's SO(d) draws).

    A Haar orthogonal matrix with determinant −1 gets its first column negated, which maps
    the Haar measure on O(d)'s other component onto SO(d)'s.
    """
    q = haar_orthogonal(num_instances, size, generator=generator, dtype=torch.float64)
    q[:, :, 0] *= torch.sign(torch.linalg.det(q))[:, None]
    return q.to(dtype)


def gaussian_matrices(
    num_instances: int,
    size: int,
    *,
    generator: GeneratorLike = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(N, d, d) standard normal matrices: the notebook's start for "learnable-W"."""
    check_positive_ints(num_instances=num_instances, size=size)
    shape = (num_instances, size, size)
    return torch.randn(shape, generator=_cpu_generator(generator), dtype=torch.float64).to(dtype)


def rotation_matrix(height: int, width: int, degrees: float) -> torch.Tensor:
    """(H·W, H·W) float64 matrix R with R @ image.flatten() = the image rotated by ``degrees``.

    scipy.ndimage.rotate(image, degrees, reshape=False, order=1) as a matrix: output pixel
    (r, c) samples the input at y = cos·(r − r0) + sin·(c − c0) + r0,
    x = −sin·(r − r0) + cos·(c − c0) + c0 around the centre (r0, c0) = ((H−1)/2, (W−1)/2),
    bilinearly; a sample outside [0, H−1] × [0, W−1] is 0.
    """
    check_positive_ints(height=height, width=width)
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    r0, c0 = (height - 1) / 2, (width - 1) / 2
    rows = torch.arange(height, dtype=torch.float64).view(-1, 1).expand(height, width)
    cols = torch.arange(width, dtype=torch.float64).view(1, -1).expand(height, width)
    y = cos * (rows - r0) + sin * (cols - c0) + r0
    x = -sin * (rows - r0) + cos * (cols - c0) + c0
    slack = 1e-9  # a sample on the border must not fall outside by rounding
    inside = (y > -slack) & (y < height - 1 + slack) & (x > -slack) & (x < width - 1 + slack)
    out = torch.arange(height * width).view(height, width)
    matrix = torch.zeros(height * width, height * width, dtype=torch.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            ys, xs = y.floor() + dy, x.floor() + dx
            weight = (1 - (y - ys).abs()) * (1 - (x - xs).abs())
            keep = inside & (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width) & (weight > 0)
            source = (ys[keep] * width + xs[keep]).long()
            matrix.index_put_((out[keep], source), weight[keep], accumulate=True)
    return matrix


def rotation_matrices(
    num_instances: int, height: int, width: int, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(N, H·W, H·W): instance i rotated by 360·i/N degrees and scaled by 1 − 2i, the
    notebook's "rotation" mode (which used scipy's cubic spline; this is bilinear)."""
    check_positive_ints(num_instances=num_instances, height=height, width=width)
    matrices = [
        (1 - 2 * i) * rotation_matrix(height, width, 360 * i / num_instances)
        for i in range(num_instances)
    ]
    return torch.stack(matrices).to(dtype)
