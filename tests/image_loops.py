"""The image multiplexer's oracle: a float64 loop over instances, each transformed on its own
(the vision notebook's form: N transforms, then a sum), sharing no code with muxkernels.

E is grouped as (B', N, C, H, W); each function returns x (B', C_out, H, W) in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def convolution(images: torch.Tensor, rop: torch.Tensor) -> torch.Tensor:
    """x = Σ_i conv(E_i, rop[i]), 3×3 kernels, padding 1."""
    e, k = images.double(), rop.double()
    return sum(F.conv2d(e[:, i], k[i], padding=1) for i in range(e.shape[1]))


def two_layer(images: torch.Tensor, rop: torch.Tensor, rop2: torch.Tensor) -> torch.Tensor:
    """x = Σ_i tanh(conv(tanh(conv(E_i, rop[i])), rop2[i])), padding 1 in both."""
    e, k1, k2 = images.double(), rop.double(), rop2.double()
    total = 0
    for i in range(e.shape[1]):
        inner = torch.tanh(F.conv2d(e[:, i], k1[i], padding=1))
        total = total + torch.tanh(F.conv2d(inner, k2[i], padding=1))
    return total


def matrix(images: torch.Tensor, rop: torch.Tensor) -> torch.Tensor:
    """x = Σ_i E_i @ rop[i] on each channel's flattened H·W pixels (row vectors)."""
    e, r = images.double(), rop.double()
    b, n, c, h, w = e.shape
    return sum((e[:, i].reshape(b * c, h * w) @ r[i]).reshape(b, c, h, w) for i in range(n))


def hadamard(images: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """x = (1/N) Σ_i v_i ⊙ E_i on each channel's flattened H·W pixels."""
    e, v = images.double(), vectors.double()
    n, h, w = e.shape[1], e.shape[3], e.shape[4]
    return sum(e[:, i] * v[i].reshape(1, 1, h, w) for i in range(n)) / n


def rotate(image: list[list[float]], degrees: float) -> list[list[float]]:
    """One (H, W) image rotated about its centre, bilinear, 0 outside: output pixel (r, c)
    reads y = cos·(r − r0) + sin·(c − c0) + r0, x = −sin·(r − r0) + cos·(c − c0) + c0
    (scipy.ndimage.rotate's mapping with reshape=False, order=1)."""
    h, w = len(image), len(image[0])
    a = math.radians(degrees)
    r0, c0 = (h - 1) / 2, (w - 1) / 2
    out = [[0.0] * w for _ in range(h)]
    for r in range(h):
        for c in range(w):
            y = math.cos(a) * (r - r0) + math.sin(a) * (c - c0) + r0
            x = -math.sin(a) * (r - r0) + math.cos(a) * (c - c0) + c0
            if not (-1e-9 < y < h - 1 + 1e-9 and -1e-9 < x < w - 1 + 1e-9):
                continue
            y0, x0 = math.floor(y), math.floor(x)
            total = 0.0
            for yy in (y0, y0 + 1):
                for xx in (x0, x0 + 1):
                    if 0 <= yy < h and 0 <= xx < w:
                        total += (1 - abs(y - yy)) * (1 - abs(x - xx)) * image[yy][xx]
            out[r][c] = total
    return out


def rotation(images: torch.Tensor) -> torch.Tensor:
    """x = Σ_i (1 − 2i) · rotate(E_i, 360·i/N), every channel of every group."""
    e = images.double()
    b, n, c, h, w = e.shape
    x = torch.zeros(b, c, h, w, dtype=torch.float64)
    for g in range(b):
        for i in range(n):
            for ch in range(c):
                turned = rotate(e[g, i, ch].tolist(), 360 * i / n)
                x[g, ch] += (1 - 2 * i) * torch.tensor(turned, dtype=torch.float64)
    return x


def remap(images: torch.Tensor) -> torch.Tensor:
    """Tile (i mod 4, i div 4) of a 4 × 4 grid holds E_i[..., ::4, ::4]."""
    e = images.double()
    b, n, c, h, w = e.shape
    th, tw = h // 4, w // 4
    x = torch.zeros(b, c, h, w, dtype=torch.float64)
    for i in range(n):
        row, col = i % 4, i // 4
        x[:, :, row * th : (row + 1) * th, col * tw : (col + 1) * tw] += e[:, i, :, ::4, ::4]
    return x
