"""The modules around the multiplexer: an embedding module and the encoders it can drive.

An *encoder* here is any module called as ``encoder(hidden, attention_mask)`` that maps
(B', L, d) to (B', L, d); ``attention_mask`` is None or (B', L) with 1 at real positions.
``TransformerEncoder`` is the small built-in one; ``InputsEmbedsEncoder`` adapts a Hugging
Face style model called as ``model(inputs_embeds=…, attention_mask=…)``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from torch import nn


class Embeddings(nn.Module):
    """e = dropout(LayerNorm(word_embeddings[id] + position_embeddings[p(t)] + type)).

    The parameter names are those of the Hugging Face BERT/RoBERTa embedding module that the
    published DataMUX code multiplexes (``word_embeddings``, ``position_embeddings``,
    ``token_type_embeddings``, ``LayerNorm``). Positions p(t) = ``position_offset + t``
    (BERT: 0), except with ``roberta_positions``: ids equal to ``pad_token_id`` get position
    ``pad_token_id`` and every other id ``position_offset + k − 1``, k its 1-based index
    among the row's non-pad ids (RoBERTa: offset 2 = padding_idx + 1, so pad + k).
    ``pad_token_id`` is also the ``padding_idx`` of the word table (and, with
    ``roberta_positions``, of the position table): those rows get no gradient.
    Called Hugging Face style: ``forward(input_ids=…)`` embeds ids, ``forward(inputs_embeds=x)``
    adds positions ``position_offset + t`` and types to x — the published second pass over
    the multiplexed mixture.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 1,
        layer_norm_eps: float = 1e-5,
        dropout: float = 0.0,
        position_offset: int = 0,
        pad_token_id: int | None = None,
        roberta_positions: bool = False,
    ) -> None:
        super().__init__()
        if roberta_positions and pad_token_id is None:
            raise ValueError("roberta_positions=True needs a pad_token_id")
        position_padding = pad_token_id if roberta_positions else None
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(
            max_position_embeddings, hidden_size, padding_idx=position_padding
        )
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.position_offset = position_offset
        self.pad_token_id = pad_token_id
        self.roberta_positions = roberta_positions

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed ``input_ids`` (…, L), or add positions and types to ``inputs_embeds`` (…, L, d)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if position_ids is None and input_ids is not None and self.roberta_positions:
            position_ids = self.padding_positions(input_ids)
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        length = inputs_embeds.shape[-2]
        if position_ids is None:
            position_ids = self.position_offset + torch.arange(length, device=inputs_embeds.device)
        x = inputs_embeds + self.position_embeddings(position_ids)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))

    def padding_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """RoBERTa's rule: pad ids → ``pad_token_id``, the k-th non-pad id → offset + k − 1."""
        real = (input_ids != self.pad_token_id).long()
        counted = self.position_offset - 1 + torch.cumsum(real, dim=-1)
        return torch.where(real.bool(), counted, self.pad_token_id)


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(1 − mask) · (the dtype's lowest value), added to attention scores: Hugging Face's
    extended mask, so a row whose keys are all masked attends uniformly instead of NaN."""
    return (1.0 - attention_mask.to(dtype)) * torch.finfo(dtype).min


def encoder_layer(
    hidden_size: int,
    num_heads: int,
    intermediate_size: int,
    *,
    dropout: float = 0.0,
    layer_norm_eps: float = 1e-5,
    norm_first: bool = False,
) -> nn.TransformerEncoderLayer:
    """One ``nn.TransformerEncoderLayer`` (exact gelu, batch first). With ``norm_first=False``
    it is the BERT/RoBERTa/ELECTRA layer: x = LN1(x + attn(x)); x = LN2(x + W2 gelu(W1 x))."""
    return nn.TransformerEncoderLayer(
        hidden_size,
        num_heads,
        intermediate_size,
        dropout,
        activation="gelu",
        layer_norm_eps=layer_norm_eps,
        batch_first=True,
        norm_first=norm_first,
    )


class TransformerEncoder(nn.Module):
    """A stack of ``encoder_layer`` s: (B', L, d) → (B', L, d).

    Pre-LayerNorm (``norm_first=True``, with a final ``norm``) trains from scratch more
    easily; ``norm_first=False`` is the post-LayerNorm BERT/RoBERTa layout. A mask is added
    to the attention scores as Hugging Face does (``additive_mask``).
    """

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        intermediate_size: int,
        *,
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        norm_first: bool = True,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            encoder_layer(
                hidden_size,
                num_heads,
                intermediate_size,
                dropout=dropout,
                layer_norm_eps=layer_norm_eps,
                norm_first=norm_first,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps) if norm_first else nn.Identity()

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encode ``hidden`` (B', L, d); ``attention_mask`` (B', L) has 0 at ignored positions."""
        padding = None if attention_mask is None else additive_mask(attention_mask, hidden.dtype)
        for layer in self.layers:
            hidden = layer(hidden, src_key_padding_mask=padding)
        return self.norm(hidden)


class InputsEmbedsEncoder(nn.Module):
    """Adapts a Hugging Face style model: ``model(inputs_embeds=x, attention_mask=m)``.

    Returns the output's ``last_hidden_state`` (or its first element). Such a model runs its
    own embedding module over ``inputs_embeds`` first: that is the published second
    embedding pass, so ``MultiplexedModel`` makes no pass of its own with it and embeds the
    ids with ``model.embeddings`` by default, as the published model does.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.model(inputs_embeds=hidden, attention_mask=attention_mask)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def takes_inputs_embeds(module: nn.Module) -> bool:
    """Whether ``module.forward`` has an ``inputs_embeds`` argument (Hugging Face style)."""
    return "inputs_embeds" in inspect.signature(module.forward).parameters


def as_encoder(module: nn.Module) -> nn.Module:
    """``module`` itself, or ``InputsEmbedsEncoder(module)`` when it takes ``inputs_embeds``."""
    return InputsEmbedsEncoder(module) if takes_inputs_embeds(module) else module


def is_hugging_face_style(module: nn.Module) -> bool:
    """Whether ``module`` embeds its inputs itself: it takes ``inputs_embeds`` or is
    already wrapped in ``InputsEmbedsEncoder``."""
    return isinstance(module, InputsEmbedsEncoder) or takes_inputs_embeds(module)


def hf_encoder(name_or_path: str, **kwargs: Any) -> InputsEmbedsEncoder:
    """``transformers.AutoModel.from_pretrained(name_or_path, **kwargs)``, adapted.

    Needs the optional ``transformers`` package, imported only here.
    """
    try:
        transformers = importlib.import_module("transformers")
    except ImportError as err:
        raise ImportError(
            "hf_encoder needs the optional package transformers (pip install transformers); "
            "any module taking inputs_embeds also works: wrap it in InputsEmbedsEncoder"
        ) from err
    return InputsEmbedsEncoder(transformers.AutoModel.from_pretrained(name_or_path, **kwargs))
