"""Helpers shared by the reference ops: compute precision and the demux activation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when any input is float64, float32 otherwise (half inputs are upcast)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def gelu_layer_norm(
    pre: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """LN(gelu(pre)) over the last dim, with exact (erf) gelu and an affine LayerNorm."""
    d = pre.shape[-1]
    return F.layer_norm(F.gelu(pre), (d,), ln_weight.to(pre.dtype), ln_bias.to(pre.dtype), eps)
