"""The full MUX-PLMs index_pos (RSA) demultiplexer (design §5), published names included.

One shared ``demux_module`` holds learned instance keys k (N, d) and K hidden demux layers
(``num_hidden_demux_layers``): ``dense_1`` (2d → d) acting on [k_i; h_t], then ``dense_k``
(d → d) for k = 2…K, each with ``layer_norm_k`` and ``dropout_k``. Two heads read it, as in
the published model, and a model registers it under all three names:

task path (``demultiplexer``), for every instance i and position t:
    x = dropout_1(gelu(dense_1([k_i; h_t])))                 (no LayerNorm)
    x = dropout_k(gelu(dense_k(x))) + x                       k = 2 … K − 1
    u = pre_decoder_layer_norm(gelu(pre_decoder(x))) + x

retrieval path (``retrieval_head``), for instance j[g, t] (or every instance):
    x = layer_norm_1(gelu(dense_1([k_j; h_t])))               (the fused index_pos_demux op)
    residual (ELECTRA): x = layer_norm_k(gelu(dense_k(x))) + x, k = 2 … K;
                        x = pre_decoder_layer_norm(gelu(pre_decoder(x))) + x
    plain (BERT):       x = layer_norm_2(gelu(dense_2(x)));
                        x = pre_decoder_layer_norm(gelu(pre_decoder(x)))
    logits = decoder(x)                                       (bias tied to ``bias``)

The first layer never builds the 2d-wide concatenation: dense_1 [k; h] = W_h h + (W_k k + b).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._backend import Backend
from ..nn.heads import caller_rows
from ..ops import index_pos_demux
from ..reference import Gather


class IndexPosDemuxModule(nn.Module):
    """The shared parameters: ``demux_instance_embedding`` (N, d), ``dense_k``,
    ``layer_norm_k``, ``dropout_k`` for k = 1 … ``num_layers``."""

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        num_layers: int,
        layer_norm_eps: float,
        dropout: float,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        d = hidden_size
        self.num_layers = num_layers
        self.demux_instance_embedding = nn.Parameter(
            torch.randn(num_instances, d, generator=generator)
        )
        for k in range(1, num_layers + 1):
            setattr(self, f"dense_{k}", nn.Linear(2 * d if k == 1 else d, d))
            setattr(self, f"layer_norm_{k}", nn.LayerNorm(d, eps=layer_norm_eps))
            setattr(self, f"dropout_{k}", nn.Dropout(dropout))

    def layer(self, k: int) -> tuple[nn.Linear, nn.LayerNorm, nn.Dropout]:
        """(``dense_k``, ``layer_norm_k``, ``dropout_k``)."""
        return (
            getattr(self, f"dense_{k}"),
            getattr(self, f"layer_norm_{k}"),
            getattr(self, f"dropout_{k}"),
        )

    def first_layer_task(self, hidden: torch.Tensor) -> torch.Tensor:
        """dropout_1(gelu(dense_1([k_i; h_t]))) for every i: (B', L, d) → (B', N, L, d)."""
        dense, _, dropout = self.layer(1)
        d = hidden.shape[-1]
        keys = F.linear(self.demux_instance_embedding, dense.weight[:, :d], dense.bias)
        rows = F.linear(hidden, dense.weight[:, d:])
        return dropout(F.gelu(rows[:, None] + keys[None, :, None]))

    def first_layer_retrieval(
        self, hidden: torch.Tensor, gather: Gather, index: torch.Tensor | None, backend: Backend
    ) -> torch.Tensor:
        """layer_norm_1(gelu(dense_1([k_i; h_t]))) through the fused ``index_pos_demux`` op."""
        dense, norm, _ = self.layer(1)
        return index_pos_demux(
            hidden,
            self.demux_instance_embedding,
            dense.weight,
            dense.bias,
            norm.weight,
            norm.bias,
            eps=norm.eps,
            gather=gather,
            index=index,
            backend=backend,
        )


class _PreDecoder(nn.Module):
    """``pre_decoder`` + ``pre_decoder_layer_norm``: x ↦ LN(gelu(pre_decoder(x))) (+ x)."""

    def __init__(self, hidden_size: int, layer_norm_eps: float) -> None:
        super().__init__()
        self.pre_decoder = nn.Linear(hidden_size, hidden_size)
        self.pre_decoder_layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def _pre_decode(self, x: torch.Tensor, residual: bool) -> torch.Tensor:
        y = self.pre_decoder_layer_norm(F.gelu(self.pre_decoder(x)))
        return y + x if residual else y


class IndexPosTaskDemultiplexer(_PreDecoder):
    """The published ``demultiplexer`` of index_pos: (B', L, d) → u (B', N, L, d)."""

    def __init__(self, demux_module: IndexPosDemuxModule, hidden_size: int, eps: float) -> None:
        super().__init__(hidden_size, eps)
        self.demux_module = demux_module

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        module = self.demux_module
        x = module.first_layer_task(hidden)
        for k in range(2, module.num_layers):
            dense, _, dropout = module.layer(k)
            x = dropout(F.gelu(dense(x))) + x
        return self._pre_decode(x, residual=True)


class IndexPosRetrievalHead(_PreDecoder):
    """The published ``retrieval_head`` of index_pos: logits over the vocabulary.

    ``residual=True`` is the ELECTRA (and generic) head: every demux layer, residual
    connections. ``residual=False`` is the BERT head: layers 1 and 2 only, no residuals.
    Both tie ``decoder``'s bias to ``bias`` (the BERT head's ``_tie_weights`` does it when
    Hugging Face ties the model's weights).
    ``forward(hidden (B', L, d), index (B', L))`` → (B', L, V) for instance index[g, t];
    ``every_instance(hidden, batch_size, start)`` → (B, L − start, V), rows g·N+i.
    """

    def __init__(
        self,
        demux_module: IndexPosDemuxModule,
        hidden_size: int,
        vocab_size: int,
        eps: float,
        *,
        residual: bool,
        backend: Backend = "auto",
    ) -> None:
        super().__init__(hidden_size, eps)
        self.demux_module = demux_module
        self.residual = residual
        self.backend = backend
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.decoder.bias = self.bias

    def _logits(
        self,
        hidden: torch.Tensor,
        gather: Gather,
        index: torch.Tensor | None,
        batch_size: int | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        module = self.demux_module
        x = module.first_layer_retrieval(hidden, gather, index, self.backend)
        if gather == "token":
            x = caller_rows(x, batch_size, start)
        for k in range(2, module.num_layers + 1 if self.residual else 3):
            dense, norm, _ = module.layer(k)
            y = norm(F.gelu(dense(x)))
            x = y + x if self.residual else y
        return self.decoder(self._pre_decode(x, self.residual))

    def forward(self, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self._logits(hidden, "selected", index)

    def every_instance(
        self, hidden: torch.Tensor, batch_size: int | None = None, start: int = 0
    ) -> torch.Tensor:
        return self._logits(hidden, "token", None, batch_size, start)
