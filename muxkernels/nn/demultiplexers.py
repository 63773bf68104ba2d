"""Demultiplexer layers with the published parameter names (design §3-5).

Each returns the demuxed representations u; the heads in ``muxkernels.nn.heads`` add the
published projections on top.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from .._backend import Backend
from .._checks import layer_sizes
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
        num_instances, hidden_size, layer_norm_eps = layer_sizes(
            num_instances, hidden_size, layer_norm_eps
        )
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
        num_instances, hidden_size, layer_norm_eps = layer_sizes(
            num_instances, hidden_size, layer_norm_eps
        )
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

    The branches are stored stacked — ``weight`` (N, d, d), ``bias``, ``ln_weight`` and
    ``ln_bias`` (N, d) — so the forward is one (N·d × d) GEMM with no copy of the weights.
    State dicts use the published ``demux_module`` names ``dense_{i}.weight``,
    ``dense_{i}.bias``, ``layer_norm_{i}.weight``, ``layer_norm_{i}.bias`` (hooks translate
    both ways), so published checkpoints load and saved ones stay drop-in.
    """

    # stacked parameter → (published module prefix, its parameter)
    PUBLISHED_NAMES: ClassVar[dict[str, tuple[str, str]]] = {
        "weight": ("dense", "weight"),
        "bias": ("dense", "bias"),
        "ln_weight": ("layer_norm", "weight"),
        "ln_bias": ("layer_norm", "bias"),
    }

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        layer_norm_eps: float = 1e-5,
        *,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        n, d, layer_norm_eps = layer_sizes(num_instances, hidden_size, layer_norm_eps)
        self.num_instances = n
        self.backend = backend
        self.layer_norm_eps = layer_norm_eps
        self.weight = nn.Parameter(torch.empty(n, d, d))
        self.bias = nn.Parameter(torch.empty(n, d))
        self.ln_weight = nn.Parameter(torch.ones(n, d))
        self.ln_bias = nn.Parameter(torch.zeros(n, d))
        self.reset_parameters()
        self.register_state_dict_post_hook(_to_published_names)
        self.register_load_state_dict_pre_hook(_from_published_names)

    def reset_parameters(self) -> None:
        """Each branch initialised as a fresh ``nn.Linear`` and ``nn.LayerNorm``."""
        bound = self.weight.shape[-1] ** -0.5
        with torch.no_grad():
            for w in self.weight:
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            nn.init.uniform_(self.bias, -bound, bound)
            self.ln_weight.fill_(1.0)
            self.ln_bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return mlp_demux(
            hidden,
            self.weight,
            self.bias,
            self.ln_weight,
            self.ln_bias,
            eps=self.layer_norm_eps,
            backend=self.backend,
        )


def _to_published_names(module: MLPDemultiplexer, state_dict, prefix: str, local_metadata) -> None:
    for name, (kind, attr) in module.PUBLISHED_NAMES.items():
        stacked = state_dict.pop(prefix + name)
        for i in range(module.num_instances):
            state_dict[f"{prefix}{kind}_{i}.{attr}"] = stacked[i]


def _from_published_names(module: MLPDemultiplexer, state_dict, prefix: str, *args: object) -> None:
    """Stack ``dense_{i}.*``/``layer_norm_{i}.*`` entries; missing ones are reported by
    load_state_dict as the stacked name."""
    for name, (kind, attr) in module.PUBLISHED_NAMES.items():
        keys = [f"{prefix}{kind}_{i}.{attr}" for i in range(module.num_instances)]
        if all(k in state_dict for k in keys):
            state_dict[prefix + name] = torch.stack([state_dict.pop(k) for k in keys])
