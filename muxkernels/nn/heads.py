"""Task heads on the demultiplexers, with the published DataMUX parameter names.

Outputs are flattened to the caller's batch: row g·N+i is instance i of group g. Pass
``batch_size`` (the caller's B before padding) to drop rows that ``pad=True`` added.
Dropout is left to the caller: in eval mode these heads match the published ones exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._backend import Backend
from .._checks import as_int, check_tensor
from ..ops import index_demux_logits
from .demultiplexers import IndexDemultiplexer, MLPDemultiplexer


def _tied_decoder(head: nn.Module, hidden_size: int, out_features: int) -> None:
    """The published ``decoder`` Linear whose bias is the head's own ``bias`` Parameter."""
    head.decoder = nn.Linear(hidden_size, out_features)
    head.bias = nn.Parameter(torch.zeros(out_features))
    head.decoder.bias = head.bias


def kept_rows(hidden: object, batch_size: object, num_instances: int) -> int | None:
    """``batch_size`` checked before any work: None (keep all B'·N rows), or an integer in
    [1, B'·N] (numpy integers and 0-d integer tensors too), as int."""
    if batch_size is None:
        return None
    check_tensor("hidden", hidden)
    rows = hidden.shape[0] * num_instances if hidden.dim() else 0
    return as_int(f"batch_size (rows to keep of the B'·N={rows})", batch_size, 1, rows)


def caller_rows(t: torch.Tensor, batch_size: int | None, start: int = 0) -> torch.Tensor:
    """Flatten (B', N, …) to the caller's rows (B'·N, …), keep the first ``batch_size`` rows
    and, for (B', N, L, …), the positions from ``start`` on."""
    flat = t.flatten(0, 1)
    if batch_size is not None and batch_size != flat.shape[0]:
        flat = flat[:batch_size]
    return flat[:, start:] if start else flat


class IndexDemuxTokenClassificationHead(IndexDemultiplexer):
    """Token classification: logits = decoder(u) on every position.

    Parameters: ``dense``, ``layer_norm``, ``decoder`` (d → num_labels), ``bias`` (tied to
    ``decoder.bias``). Returns (logits (B'·N, L', C), u (B'·N, L', d)).
    """

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        num_labels: int,
        layer_norm_eps: float = 1e-5,
        *,
        backend: Backend = "auto",
    ) -> None:
        super().__init__(num_instances, hidden_size, layer_norm_eps, backend=backend)
        num_labels = as_int("num_labels", num_labels, 1)
        _tied_decoder(self, hidden_size, num_labels)

    def forward(
        self, hidden: torch.Tensor, batch_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size = kept_rows(hidden, batch_size, self.num_instances)
        u = caller_rows(super().forward(hidden, "token"), batch_size)
        return self.decoder(u), u

    def logits(self, hidden: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """The logits alone, (B'·N, L', C): with a kernel backend and at most 64 labels the
        decoder runs inside the demux kernel, so u is never written (inference, and less
        memory traffic in training)."""
        batch_size = kept_rows(hidden, batch_size, self.num_instances)
        logits = index_demux_logits(
            hidden,
            self.dense.weight,
            self.dense.bias,
            self.layer_norm.weight,
            self.layer_norm.bias,
            self.decoder.weight,
            self.bias,
            num_instances=self.num_instances,
            eps=self.layer_norm.eps,
            backend=self.backend,
        )
        return caller_rows(logits, batch_size)


class IndexDemuxSequenceClassificationHead(IndexDemultiplexer):
    """Sequence classification at the shared CLS position t = N.

    logits = out_proj(gelu(dense_before_out_proj(u))). Parameters: ``dense``,
    ``layer_norm``, ``dense_before_out_proj``, ``out_proj``. Returns (logits (B'·N, C),
    u (B'·N, d)).
    """

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        num_labels: int,
        layer_norm_eps: float = 1e-5,
        *,
        backend: Backend = "auto",
    ) -> None:
        super().__init__(num_instances, hidden_size, layer_norm_eps, backend=backend)
        num_labels = as_int("num_labels", num_labels, 1)
        self.dense_before_out_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(
        self, hidden: torch.Tensor, batch_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size = kept_rows(hidden, batch_size, self.num_instances)
        u = caller_rows(super().forward(hidden, "sequence"), batch_size)
        return self.out_proj(F.gelu(self.dense_before_out_proj(u))), u


class IndexDemuxRetrievalHead(IndexDemultiplexer):
    """Retrieval warm-up: logits over the vocabulary for instance index[g,t] at each t.

    Parameters: ``dense``, ``layer_norm``, ``decoder`` (d → V), ``bias`` (tied).
    ``forward(hidden (B', L', d), index (B', L'))`` returns logits (B', L', V).
    """

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        vocab_size: int,
        layer_norm_eps: float = 1e-5,
        *,
        backend: Backend = "auto",
    ) -> None:
        super().__init__(num_instances, hidden_size, layer_norm_eps, backend=backend)
        vocab_size = as_int("vocab_size", vocab_size, 1)
        _tied_decoder(self, hidden_size, vocab_size)

    def forward(self, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.decoder(super().forward(hidden, "selected", index))

    def every_instance(
        self, hidden: torch.Tensor, batch_size: int | None = None, start: int = 0
    ) -> torch.Tensor:
        """Logits of every instance at every position from ``start``: (B, L' − start, V)."""
        batch_size = kept_rows(hidden, batch_size, self.num_instances)
        u = caller_rows(super().forward(hidden, "token"), batch_size, start)
        return self.decoder(u)


class _MLPDemuxHead(nn.Module):
    """``demux_module`` (MLP branches) + ``dense_before_out_proj``, ``layernorm_presoftmax``,
    ``out_proj``: logits = out_proj(layernorm_presoftmax(gelu(dense_before_out_proj(u))))."""

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        num_labels: int,
        layer_norm_eps: float = 1e-5,
        *,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        num_labels = as_int("num_labels", num_labels, 1)
        self.demux_module = MLPDemultiplexer(
            num_instances, hidden_size, layer_norm_eps, backend=backend
        )
        self.num_instances = self.demux_module.num_instances
        hidden_size, layer_norm_eps = (
            self.demux_module.weight.shape[-1],
            self.demux_module.layer_norm_eps,
        )
        self.dense_before_out_proj = nn.Linear(hidden_size, hidden_size)
        self.layernorm_presoftmax = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def _project(self, u: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.dense_before_out_proj(u))
        return self.out_proj(self.layernorm_presoftmax(x))


class MLPDemuxSequenceClassificationHead(_MLPDemuxHead):
    """Sequence classification with MLP demux on the CLS position t = 0.

    Returns (logits (B'·N, C), u (B'·N, d)).
    """

    def forward(
        self, hidden: torch.Tensor, batch_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size = kept_rows(hidden, batch_size, self.num_instances)
        u = caller_rows(self.demux_module(hidden[:, :1])[:, :, 0], batch_size)
        return self._project(u), u


class MLPDemuxTokenClassificationHead(_MLPDemuxHead):
    """Token classification with MLP demux on every position.

    Returns (logits (B'·N, L, C), u (B'·N, L, d)).
    """

    def forward(
        self, hidden: torch.Tensor, batch_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size = kept_rows(hidden, batch_size, self.num_instances)
        u = caller_rows(self.demux_module(hidden), batch_size)
        return self._project(u), u


class MLPDemuxRetrievalHead(nn.Module):
    """The published MLP retrieval head: branch j[g,t] of ``demux_module`` at each position,
    then shared ``dense_pre_vocab``, ``layer_norm_pre_vocab`` and ``decoder`` (bias tied to
    ``bias``): logits = decoder(LN_pre(gelu(dense_pre_vocab(u_j)))).

    ``forward(hidden (B', L, d), index (B', L))`` → (B', L, V);
    ``every_instance(hidden, batch_size, start)`` → (B, L − start, V), rows g·N+i.
    """

    def __init__(
        self,
        num_instances: int,
        hidden_size: int,
        vocab_size: int,
        layer_norm_eps: float = 1e-5,
        *,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        vocab_size = as_int("vocab_size", vocab_size, 1)
        self.demux_module = MLPDemultiplexer(
            num_instances, hidden_size, layer_norm_eps, backend=backend
        )
        self.num_instances = self.demux_module.num_instances
        hidden_size, layer_norm_eps = (
            self.demux_module.weight.shape[-1],
            self.demux_module.layer_norm_eps,
        )
        self.dense_pre_vocab = nn.Linear(hidden_size, hidden_size)
        self.layer_norm_pre_vocab = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        _tied_decoder(self, hidden_size, vocab_size)

    def _project(self, u: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm_pre_vocab(F.gelu(self.dense_pre_vocab(u))))

    def forward(self, hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        u = self.demux_module(hidden)  # (B', N, L, d)
        picked = index.long()[:, None, :, None].expand(-1, 1, -1, u.shape[-1])
        return self._project(u.gather(1, picked).squeeze(1))

    def every_instance(
        self, hidden: torch.Tensor, batch_size: int | None = None, start: int = 0
    ) -> torch.Tensor:
        batch_size = kept_rows(hidden, batch_size, self.num_instances)
        return self._project(caller_rows(self.demux_module(hidden), batch_size, start))
