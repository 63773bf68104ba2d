"""MUX-PLMs' contextual multiplexer, ``muxing_variant="gaussian_attention_v2"``.

Each instance's embeddings E_i (L, d) first attend over their own positions, then the N
instances attend to each other at every position, around the Gaussian vectors v_i:

    a_i = layer_1(E_i, mask_i) + E_i                   (attention over positions)
    m_i = v_i ⊙ a_i
    b_·,t = layer_2(m_·,t)                              (attention over the N instances at t)
    x = (1/N) Σ_i (b_i + m_i)

``layer_1`` and ``layer_2`` are post-LayerNorm BERT layers (published names
``muxing_attention`` and ``muxing_attention_2``; a Hugging Face ``ElectraLayer`` each).
The published sequence classifier masks instances that are padding at t in layer_2; its
token classifier and masked LM do not (``mask_instances``).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import transforms
from .encoder import additive_mask, encoder_layer


class ContextualMultiplexer(nn.Module):
    """(B, L, d) per-instance embeddings (row g·N+i) → (B', L, d). Parameters:
    ``instance_embedding`` (N, d), ``muxing_attention``, ``muxing_attention_2``."""

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        *,
        layer_norm_eps: float = 1e-12,
        dropout: float = 0.0,
        gaussian_hadamard_norm: float = 1.0,
        learn_muxing: bool = False,
        mask_instances: bool = False,
        generator: transforms.GeneratorLike = None,
    ) -> None:
        super().__init__()
        self.num_instances = num_instances
        self.mask_instances = mask_instances
        vectors = transforms.gaussian_vectors(
            num_instances, hidden_size, gaussian_hadamard_norm, generator=generator
        )
        self.instance_embedding = nn.Parameter(vectors, requires_grad=learn_muxing)
        self.muxing_attention, self.muxing_attention_2 = (
            encoder_layer(
                hidden_size,
                num_heads,
                intermediate_size,
                dropout=dropout,
                layer_norm_eps=layer_norm_eps,
            )
            for _ in range(2)
        )

    def forward(
        self, embeddings: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mix ``embeddings`` (B, L, d); ``attention_mask`` (B, L) has 0 at padding."""
        n = self.num_instances
        batch, length, d = embeddings.shape
        groups = batch // n
        padding = (
            None if attention_mask is None else additive_mask(attention_mask, embeddings.dtype)
        )
        a = self.muxing_attention(embeddings, src_key_padding_mask=padding) + embeddings
        m = a.view(groups, n, length, d) * self.instance_embedding[:, None]
        across = m.transpose(1, 2).reshape(groups * length, n, d)
        instance_padding = None
        if self.mask_instances and padding is not None:
            instance_padding = padding.view(groups, n, length).transpose(1, 2).reshape(-1, n)
        b = self.muxing_attention_2(across, src_key_padding_mask=instance_padding)
        b = b.view(groups, length, n, d).transpose(1, 2)
        return (b + m).mean(dim=1)

    def published_transform(self) -> torch.Tensor:
        """The published ``instance_embedding`` (N, d)."""
        return self.instance_embedding
