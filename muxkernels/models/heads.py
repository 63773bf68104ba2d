"""The published heads of a whole model, for each demuxing variant and head style.

A ``MultiplexedModel`` registers these modules under the published names, so its state
dict holds the published keys:

- datamux, index: ``demultiplexer`` = IndexDemux{Sequence,Token}ClassificationHead,
  ``retrieval_head`` = IndexDemuxRetrievalHead.
- datamux, mlp: ``demultiplexer`` = MLPDemux{Sequence,Token}ClassificationHead,
  ``retrieval_head`` = MLPDemuxRetrievalHead.
- muxplms_*, index: ``demultiplexer`` = IndexDemultiplexer, ``classifier``,
  ``retrieval_head`` = IndexDemuxRetrievalHead.
- muxplms_*, index_pos: ``demux_module`` (shared), ``demultiplexer`` =
  IndexPosTaskDemultiplexer, ``classifier``, ``retrieval_head`` = IndexPosRetrievalHead.

``classifier`` is MUX-PLMs' Linear (dropout first) except ELECTRA's sequence head
(``dense``, ``out_proj``). A retrieval-task model builds the task heads of a muxplms style
too, as the published masked LM does, frozen (its forward never reads them).
The sequence position is the shared CLS (N) for index demux and the first position
otherwise. Every function returns rows g·N+i of the caller's batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as mnn
from .._backend import Backend
from ..nn.heads import caller_rows
from .index_pos import IndexPosDemuxModule, IndexPosRetrievalHead, IndexPosTaskDemultiplexer

if TYPE_CHECKING:
    from .multiplexed import MultiplexedModel, MuxConfig

HEAD_STYLES: tuple[str, ...] = ("datamux", "muxplms_bert", "muxplms_electra")
DEMUXING_VARIANTS: tuple[str, ...] = ("index", "mlp", "index_pos")


class DropoutLinear(nn.Linear):
    """MUX-PLMs' ``classifier``: Linear(dropout(u))."""

    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__(in_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return super().forward(self.dropout(u))


class ElectraClassifier(nn.Module):
    """ELECTRA's sequence ``classifier``: out_proj(dropout(gelu(dense(dropout(u)))))."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(F.gelu(self.dense(self.dropout(u)))))


def build_heads(config: MuxConfig, backend: Backend) -> dict[str, nn.Module]:
    """The published head modules of ``config``, by name."""
    c = config
    n, d, v, eps = c.num_instances, c.hidden_size, c.vocab_size, c.layer_norm_eps
    task, labels = c.task, c.num_labels
    if c.heads == "datamux":
        if c.demuxing_variant == "index":
            retrieval = mnn.IndexDemuxRetrievalHead(n, d, v, eps, backend=backend)
            kinds = {
                "sequence": mnn.IndexDemuxSequenceClassificationHead,
                "token": mnn.IndexDemuxTokenClassificationHead,
            }
        else:
            retrieval = mnn.MLPDemuxRetrievalHead(n, d, v, eps, backend=backend)
            kinds = {
                "sequence": mnn.MLPDemuxSequenceClassificationHead,
                "token": mnn.MLPDemuxTokenClassificationHead,
            }
        heads: dict[str, nn.Module] = {"retrieval_head": retrieval}
        if task != "retrieval":
            heads["demultiplexer"] = kinds[task](n, d, labels, eps, backend=backend)
        return heads
    if c.demuxing_variant == "index":
        heads = {
            "demultiplexer": mnn.IndexDemultiplexer(n, d, eps, backend=backend),
            "retrieval_head": mnn.IndexDemuxRetrievalHead(n, d, v, eps, backend=backend),
        }
    else:
        generator = torch.Generator().manual_seed(c.seed)
        module = IndexPosDemuxModule(
            n, d, c.num_hidden_demux_layers, eps, c.dropout, generator=generator
        )
        residual = c.heads == "muxplms_electra"
        heads = {
            "demux_module": module,
            "demultiplexer": IndexPosTaskDemultiplexer(module, d, eps),
            "retrieval_head": IndexPosRetrievalHead(
                module, d, v, eps, residual=residual, backend=backend
            ),
        }
    if task == "sequence" and c.heads == "muxplms_electra":
        heads["classifier"] = ElectraClassifier(d, labels, c.dropout)
    elif task != "retrieval":
        heads["classifier"] = DropoutLinear(d, labels, c.dropout)
    return heads


def unread_parameters(model: MultiplexedModel) -> list[nn.Parameter]:
    """Parameters that the published forward and loss never read for this configuration:
    a masked LM's task demultiplexer, and the index_pos layers past 2 that neither path
    of a BERT-style model uses (its task path stops at layer K − 1, its retrieval head at
    layer 2). Frozen, so that DDP with default settings finds no unused parameter."""
    c = model.config
    if c.heads == "datamux":
        return []
    unread: list[nn.Parameter] = []
    if c.task == "retrieval":
        shared = set(map(id, model.retrieval_head.parameters()))
        unread += [p for p in model.demultiplexer.parameters() if id(p) not in shared]
    if c.demuxing_variant == "index_pos" and c.heads == "muxplms_bert":
        task_layers = 0 if c.task == "retrieval" else c.num_hidden_demux_layers - 1
        for k in range(3, c.num_hidden_demux_layers + 1):
            dense, norm, _ = model.demux_module.layer(k)
            unread += list(norm.parameters())
            if k > task_layers:
                unread += list(dense.parameters())
    return unread


def task_logits(model: MultiplexedModel, hidden: torch.Tensor, batch: int) -> torch.Tensor:
    """The task's logits from the encoder output: (B, C) for "sequence", (B, L, C) for
    "token" (the caller's positions), (B, L, V) for "retrieval" (every instance)."""
    return unviewed(_task_logits(model, hidden, batch))


def unviewed(t: torch.Tensor) -> torch.Tensor:
    """``t`` without a view relation to another tensor, for a module's output.

    A Linear over a 3-d input returns a view of its 2-d result, and FSDP2 warns about a
    module returning a view (an in-place op on it would skip FSDP's pre-backward hook).
    When ``t`` covers its whole base contiguously, ``aten._unsafe_view`` gives the same
    tensor, no copy, without the relation (what ``torch.matmul`` does for its results);
    otherwise it is copied.
    """
    base = t._base
    if base is None or torch.compiler.is_compiling():
        return t
    whole = t.is_contiguous() and base.is_contiguous() and t.numel() == base.numel()
    if whole and t.storage_offset() == base.storage_offset():
        return torch.ops.aten._unsafe_view(base, t.shape)
    return t.clone()


def _task_logits(model: MultiplexedModel, hidden: torch.Tensor, batch: int) -> torch.Tensor:
    c, start = model.config, model.prefix_length
    if c.task == "retrieval":
        return model.retrieval_head.every_instance(hidden, batch, start)
    head = model.demultiplexer
    if c.heads == "datamux":
        if c.task == "token" and c.demuxing_variant == "index":
            u = mnn.IndexDemultiplexer.forward(head, hidden, "token")
            return head.decoder(caller_rows(u, batch, start))
        return head(hidden, batch)[0]
    if c.demuxing_variant == "index" and c.task == "sequence":
        u = caller_rows(head(hidden, "sequence"), batch)
    elif c.demuxing_variant == "index":
        u = caller_rows(head(hidden, "token"), batch, start)
    elif c.task == "sequence":
        u = caller_rows(head(hidden[:, :1])[:, :, 0], batch)
    else:
        u = caller_rows(head(hidden), batch)
    return model.classifier(u)
