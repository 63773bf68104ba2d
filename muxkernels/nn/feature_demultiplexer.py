"""The N-branch demultiplexer for feature vectors: one multiplexed vector per group in, one
vector per instance out (the image models' ``DCs``)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .._backend import Backend
from .._checks import check_floating, check_nonempty, check_rank, check_tensor
from ..image_transforms import check_positive_ints
from ..ops import mlp_demux

Activation = Literal["gelu_layernorm", "tanh"]
ACTIVATIONS: tuple[str, ...] = ("gelu_layernorm", "tanh")


class FeatureDemultiplexer(nn.Module):
    """N branches on h (B', d) → u (B'·N, d); row g·N+i is branch i applied to group g.

    - ``"gelu_layernorm"`` (default): u_i = LN_i(gelu(W_i h + b_i)), DataMUX's MLP
      demultiplexer (docs/design.md §4), computed by ``mlp_demux``.
    - ``"tanh"``: u_i = tanh(W_i h + b_i), the vision notebook's ``DCs`` branches: one GEMM
      with the stacked (N·d × d) weight, then tanh.

    Parameters are stored stacked — ``weight`` (N, d, d), ``bias`` (N, d), and for
    "gelu_layernorm" ``ln_weight``, ``ln_bias`` (N, d) — and saved under the notebook's
    names: ``{i}.weight`` and ``{i}.bias`` (its ``nn.ModuleList`` of Linear layers), plus
    ``layer_norm_{i}.weight`` and ``layer_norm_{i}.bias``. Each branch starts as a fresh
    ``nn.Linear`` (and ``nn.LayerNorm``).
    """

    # stacked parameter → the per-branch state-dict name, formatted with the branch index
    SAVED_NAMES: ClassVar[dict[str, str]] = {
        "weight": "{i}.weight",
        "bias": "{i}.bias",
        "ln_weight": "layer_norm_{i}.weight",
        "ln_bias": "layer_norm_{i}.bias",
    }

    def __init__(
        self,
        num_instances: int,
        features: int,
        activation: Activation = "gelu_layernorm",
        *,
        layer_norm_eps: float = 1e-5,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        check_positive_ints(num_instances=num_instances, features=features)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        n, d = num_instances, features
        self.num_instances, self.features = n, d
        self.activation = activation
        self.layer_norm_eps = layer_norm_eps
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(n, d, d))
        self.bias = nn.Parameter(torch.empty(n, d))
        if activation == "gelu_layernorm":
            self.ln_weight = nn.Parameter(torch.ones(n, d))
            self.ln_bias = nn.Parameter(torch.zeros(n, d))
        self.reset_parameters()
        self.register_state_dict_post_hook(_to_saved_names)
        self.register_load_state_dict_pre_hook(_from_saved_names)

    def reset_parameters(self) -> None:
        """Each branch initialised as a fresh ``nn.Linear`` (and ``nn.LayerNorm``)."""
        bound = self.features**-0.5
        with torch.no_grad():
            for w in self.weight:
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            nn.init.uniform_(self.bias, -bound, bound)
            if self.activation == "gelu_layernorm":
                self.ln_weight.fill_(1.0)
                self.ln_bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Demultiplex ``hidden`` (B', d) into (B'·N, d), row g·N+i."""
        check_tensor("hidden", hidden)
        check_floating("hidden", hidden)
        check_rank("hidden", hidden, 2, "(B', d)")
        check_nonempty("hidden", hidden)
        n, d = self.num_instances, self.features
        if self.activation == "tanh":
            if hidden.shape[1] != d:
                raise ValueError(f"hidden must have shape (B', {d}), got {tuple(hidden.shape)}")
            weight = self.weight.to(hidden.dtype).reshape(n * d, d)
            pre = F.linear(hidden, weight, self.bias.to(hidden.dtype).flatten())  # (B', N·d)
            return torch.tanh(pre).reshape(-1, d)
        u = mlp_demux(
            hidden.unsqueeze(1),
            self.weight,
            self.bias,
            self.ln_weight,
            self.ln_bias,
            eps=self.layer_norm_eps,
            backend=self.backend,
        )  # (B', N, 1, d)
        return u.reshape(-1, d)

    def extra_repr(self) -> str:
        return (
            f"num_instances={self.num_instances}, features={self.features}, "
            f"activation={self.activation!r}, backend={self.backend!r}"
        )


def _to_saved_names(module: FeatureDemultiplexer, state_dict, prefix: str, metadata) -> None:
    for name, pattern in module.SAVED_NAMES.items():
        if prefix + name not in state_dict:
            continue
        stacked = state_dict.pop(prefix + name)
        for i in range(module.num_instances):
            state_dict[prefix + pattern.format(i=i)] = stacked[i]


def _from_saved_names(module: FeatureDemultiplexer, state_dict, prefix: str, *args) -> None:
    """Stack the per-branch entries; missing ones are reported by load_state_dict under the
    stacked name."""
    for name, pattern in module.SAVED_NAMES.items():
        keys = [prefix + pattern.format(i=i) for i in range(module.num_instances)]
        if all(k in state_dict for k in keys):
            state_dict[prefix + name] = torch.stack([state_dict.pop(k) for k in keys])
