"""The DataMUX vision notebook's image multiplexers and MuxLeNet, as benchmark baselines.

Written from the notebook's formulas in its form: a Python loop over the N instances, each
transformed on its own (a convolution, a pair of convolutions, a matrix product),
then summed; the N demultiplexer branches run one after another. Images come grouped as
(B', N, C, H, W), row g·N+i of a caller's batch being instance i of group g.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.vision import MultiplexedCNN


def convolution(images: torch.Tensor, rop: torch.Tensor) -> torch.Tensor:
    """Σ_i conv(E_i, rop[i]) as N convolutions (3×3, padding 1) and a sum."""
    mixed = F.conv2d(images[:, 0], rop[0], padding=1)
    for i in range(1, images.shape[1]):
        mixed = mixed + F.conv2d(images[:, i], rop[i], padding=1)
    return mixed


def two_layer(images: torch.Tensor, rop: torch.Tensor, rop2: torch.Tensor) -> torch.Tensor:
    """Σ_i tanh(conv(tanh(conv(E_i, rop[i])), rop2[i])), one instance at a time."""
    mixed = 0
    for i in range(images.shape[1]):
        inner = torch.tanh(F.conv2d(images[:, i], rop[i], padding=1))
        mixed = mixed + torch.tanh(F.conv2d(inner, rop2[i], padding=1))
    return mixed


def matrix(images: torch.Tensor, rop: torch.Tensor) -> torch.Tensor:
    """Σ_i E_i @ rop[i] on each channel's flattened pixels, one product per instance."""
    b, n, c, h, w = images.shape
    mixed = images[:, 0].reshape(-1, h * w).mm(rop[0])
    for i in range(1, n):
        mixed = mixed + images[:, i].reshape(-1, h * w).mm(rop[i])
    return mixed.view(b, c, h, w)


def mux_lenet(model: MultiplexedCNN, images: torch.Tensor) -> list[torch.Tensor]:
    """The notebook's MuxLeNet forward with ``model``'s weights (its "nonlinear-expand" or
    convolution multiplexer, tanh branches): ``proj`` one instance at a time, the LeNet
    trunk once, then the branches ``tanh(OL(tanh(DC_i(x))))`` one after another, returned
    as the notebook returns them, a list of N (B', classes) outputs.
    """
    mux = model.mux
    if mux.mode in ("nonlinear", "nonlinear-expand"):
        mixed = two_layer(images, mux.rop, mux.rop2)
    else:
        mixed = convolution(images, mux.rop)
    x = model.body(mixed)
    demux = model.DCs
    return [
        torch.tanh(model.OL(torch.tanh(F.linear(x, demux.weight[i], demux.bias[i]))))
        for i in range(mux.num_instances)
    ]
