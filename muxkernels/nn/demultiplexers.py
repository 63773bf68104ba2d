"""Demultiplexer layers with the published parameter names (SPEC sections 3-5).

Each returns the demuxed representations u; the heads in ``muxkernels.nn.heads`` add the
published projections on top.
"""

from __future__ import annotations

import torch
from torch import nn

from .._backend import Backend
from ..ops import index_demux, index_pos_demux, mlp_demux
from ..reference import Gather


class IndexDemultiplexer(nn.Module):
    """u[g,i,t] = LN(gelu(dense([h[g,i]; h[g,t]]))) on an index-prefixed encoder output.

    Parameters: ``dense`` (Linear 2d → d), ``layer_norm``. ``forward(hidden, gather, index)``
    returns (B', N, L', d) for "token", (B', N, d) for "sequence" (t = N), (B', L', d) for
    "selected".
    """

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        layer_norm_eps: float = 1e-5,
        *,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.num_instances = num_instances
        self.backend = backend
        self.dense = nn.Linear(2 * hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(
        self, hidden: torch.Tensor, gather: Gather = "token", index: torch.Tensor | None = None
    ) -> torch.Tensor:
        return index_demux(
            hidden,
            self.dense.weight,
            self.dense.bias,
            self.layer_norm.weight,
            self.layer_norm.bias,
            num_instances=self.num_instances,
            eps=self.layer_norm.eps,
            gather=gather,
            index=index,
            backend=self.backend,
        )


class IndexPosDemultiplexer(nn.Module):
    """MUX-PLMs index_pos (RSA): u[g,i,t] = LN(gelu(dense_1([k_i; h[g,t]]))), learned keys k.

    Parameters: ``demux_instance_embedding`` (N, d), ``dense_1`` (Linear 2d → d),
    ``layer_norm_1`` — the names under the published ``demux_module``.
    """

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        layer_norm_eps: float = 1e-5,
        *,
        generator: torch.Generator | None = None,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.num_instances = num_instances
        self.backend = backend
        self.demux_instance_embedding = nn.Parameter(
            torch.randn(num_instances, hidden_size, generator=generator)
        )
        self.dense_1 = nn.Linear(2 * hidden_size, hidden_size)
        self.layer_norm_1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(
        self, hidden: torch.Tensor, gather: Gather = "token", index: torch.Tensor | None = None
    ) -> torch.Tensor:
        return index_pos_demux(
            hidden,
            self.demux_instance_embedding,
            self.dense_1.weight,
            self.dense_1.bias,
            self.layer_norm_1.weight,
            self.layer_norm_1.bias,
            eps=self.layer_norm_1.eps,
            gather=gather,
            index=index,
            backend=self.backend,
        )


class MLPDemultiplexer(nn.Module):
    """N branches u_i = layer_norm_i(gelu(dense_i(h))): (B', L, d) → (B', N, L, d).

    Parameters: ``dense_{i}`` and ``layer_norm_{i}`` for i < N (the published
    ``demux_module`` names); the forward stacks them into one (N·d × d) GEMM.
    """

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        layer_norm_eps: float = 1e-5,
        *,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.num_instances = num_instances
        self.backend = backend
        for i in range(num_instances):
            setattr(self, f"dense_{i}", nn.Linear(hidden_size, hidden_size))
            setattr(self, f"layer_norm_{i}", nn.LayerNorm(hidden_size, eps=layer_norm_eps))
        self.layer_norm_eps = layer_norm_eps

    def _stacked(self, kind: str, attr: str) -> torch.Tensor:
        return torch.stack(
            [getattr(getattr(self, f"{kind}_{i}"), attr) for i in range(self.num_instances)]
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return mlp_demux(
            hidden,
            self._stacked("dense", "weight"),
            self._stacked("dense", "bias"),
            self._stacked("layer_norm", "weight"),
            self._stacked("layer_norm", "bias"),
            eps=self.layer_norm_eps,
            backend=self.backend,
        )
