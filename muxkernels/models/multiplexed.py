"""A drop-in multiplexed model: embed, index-prefix, multiplex, encode, demultiplex.

The caller's batch of B = B'·N token sequences (row g·N+i is instance i of group g) runs
through one encoder pass per group:

    ids' = add_index_prefix(ids)                         (B, L' = N + 1 + L)
    e    = embeddings(input_ids=ids')                    (B, L', d)
    x    = multiplexer(e)                                (B', L', d)
    x    = embeddings(inputs_embeds=x)   if embed_twice  (the published second pass)
    h    = encoder(x, mask)                              (B', L', d)

then the heads of SPEC section 3 on h: ``retrieval_head`` (the warm-up, logits over the
vocabulary) and, for a classification task, ``demultiplexer`` (sequence or token level).
Module and parameter names follow the published DataMUX model (``instance_embedding``
under ``multiplexer``; ``dense``, ``layer_norm``, ``decoder``, ``bias``, … under the heads).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as mnn
from .._backend import Backend
from .._checks import check_integer, check_rank, check_shape, check_tensor
from ..nn.multiplexer import MuxingVariant
from ..prefix import add_index_prefix, pad_batch, roberta_index_ids
from .encoder import Embeddings, TransformerEncoder, as_encoder

Task = Literal["retrieval", "sequence", "token"]
TASKS: tuple[str, ...] = ("retrieval", "sequence", "token")
CHECKPOINT_FORMAT = "muxkernels.models.MultiplexedModel/1"


@dataclass
class MuxConfig:
    """Everything that rebuilds a ``MultiplexedModel`` (saved with its checkpoints).

    Special ids default to the top N + 2 ids of the vocabulary: ``index_ids[i]`` =
    V − (i + 2) (the published rule), ``cls_id`` = V − N − 2, ``filler_id`` = V − 1; ids
    below them are free for content. ``use_attention_mask=False`` is the published
    behaviour (the encoder sees no mask, whatever the caller passes); ``True`` masks the
    positions that are padding in all N instances of a group. ``pad=True`` fills a last incomplete
    group with copies of the last row and drops their outputs; otherwise such a batch is
    an error. ``seed`` draws the multiplexing transforms. The modules the model builds
    itself start as the published ones do: Linear and Embedding weights ~
    N(0, ``initializer_range``²), biases 0, LayerNorm 1 and 0.
    """

    vocab_size: int
    num_instances: int
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 512
    type_vocab_size: int = 1
    position_offset: int = 0
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0
    initializer_range: float = 0.02
    norm_first: bool = True
    muxing_variant: MuxingVariant = "gaussian_hadamard"
    gaussian_hadamard_norm: float = 1.0
    binary_hadamard_epsilon: float = 0.0
    learn_muxing: bool = False
    task: Task = "retrieval"
    num_labels: int = 0
    filler_id: int | None = None
    cls_id: int | None = None
    index_ids: list[int] | None = None
    embed_twice: bool = True
    use_attention_mask: bool = False
    pad: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        n, v = self.num_instances, self.vocab_size
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task != "retrieval" and self.num_labels < 1:
            raise ValueError(f"task={self.task!r} needs num_labels >= 1, got {self.num_labels}")
        if self.index_ids is None:
            self.index_ids = roberta_index_ids(v, n)
        self.index_ids = [int(i) for i in self.index_ids]
        if self.cls_id is None:
            self.cls_id = v - n - 2
        if self.filler_id is None:
            self.filler_id = v - 1
        special = [*self.index_ids, self.cls_id, self.filler_id]
        if len(self.index_ids) != n or len(set(special)) != n + 2:
            raise ValueError(
                f"need {n} index ids and distinct filler and cls ids, got index_ids="
                f"{self.index_ids}, cls_id={self.cls_id}, filler_id={self.filler_id}"
            )
        if min(special) < 0 or max(special) >= v:
            raise ValueError(f"special ids {special} must lie in [0, vocab_size={v})")

    @property
    def prefix_length(self) -> int:
        """N + 1: the index positions and the shared CLS in front of every sequence."""
        return self.num_instances + 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MuxConfig:
        return cls(**values)


@dataclass(frozen=True)
class Encoded:
    """The encoder output of one batch, ``hidden`` (B', L', d), and the caller's batch size B
    (B'·N minus the rows that ``pad`` added)."""

    hidden: torch.Tensor
    batch_size: int


class MultiplexedModel(nn.Module):
    """Embedding module + index prefix + multiplexer + any encoder + demultiplexing heads.

    ``embeddings`` defaults to the built-in ``Embeddings`` and ``encoder`` to the built-in
    ``TransformerEncoder``, both sized by ``config``. Any encoder mapping (B', L, d) to
    (B', L, d) works: one called as ``encoder(hidden, attention_mask)``, or a Hugging Face
    style model taking ``inputs_embeds`` (wrapped in ``InputsEmbedsEncoder``).

    - ``forward(input_ids, attention_mask)``: the task's logits — (B, C) for "sequence",
      (B, L, C) for "token", (B, L, V) for "retrieval" (every instance's token at every
      position). Row g·N+i is instance i of group g; the prefix positions are dropped.
    - ``retrieve(input_ids, instance_index)``: the warm-up's logits (B', L, V) for the
      token of instance index[g, t] at each position t.
    """

    def __init__(
        self,
        config: MuxConfig,
        *,
        embeddings: nn.Module | None = None,
        encoder: nn.Module | None = None,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        c = config
        self.config = c
        n, d, eps = c.num_instances, c.hidden_size, c.layer_norm_eps
        built: list[nn.Module] = []
        if embeddings is None:
            embeddings = Embeddings(
                c.vocab_size,
                d,
                c.max_position_embeddings,
                c.type_vocab_size,
                eps,
                c.dropout,
                c.position_offset,
            )
            built.append(embeddings)
        self.embeddings = embeddings
        self.multiplexer = mnn.Multiplexer(
            n,
            d,
            c.muxing_variant,
            learn_muxing=c.learn_muxing,
            gaussian_hadamard_norm=c.gaussian_hadamard_norm,
            binary_hadamard_epsilon=c.binary_hadamard_epsilon,
            generator=c.seed,
            backend=backend,
        )
        if encoder is None:
            encoder = TransformerEncoder(
                d,
                c.num_layers,
                c.num_heads,
                c.intermediate_size,
                dropout=c.dropout,
                layer_norm_eps=eps,
                norm_first=c.norm_first,
            )
            built.append(encoder)
        self.encoder = as_encoder(encoder)
        self.retrieval_head = mnn.IndexDemuxRetrievalHead(n, d, c.vocab_size, eps, backend=backend)
        heads = {
            "sequence": mnn.IndexDemuxSequenceClassificationHead,
            "token": mnn.IndexDemuxTokenClassificationHead,
        }
        self.demultiplexer = None
        if c.task in heads:
            self.demultiplexer = heads[c.task](n, d, c.num_labels, eps, backend=backend)
            built.append(self.demultiplexer)
        for module in [*built, self.retrieval_head]:
            module.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """The published initialisation of one module (caller-supplied modules keep theirs)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _group(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """Check the batch; pad a partial last group when ``config.pad``, else refuse it."""
        check_tensor("input_ids", input_ids)
        check_rank("input_ids", input_ids, 2, "(B, L)")
        check_integer("input_ids", input_ids)
        n, batch = self.config.num_instances, input_ids.shape[0]
        if attention_mask is not None:
            check_shape("attention_mask", attention_mask, tuple(input_ids.shape), "as input_ids")
        if batch % n == 0:
            return input_ids, attention_mask, batch
        if not self.config.pad:
            raise ValueError(
                f"input_ids has batch size {batch}, not a multiple of num_instances={n}; "
                "build the model with MuxConfig(pad=True) to fill the last group, or drop rows"
            )
        input_ids, _ = pad_batch(input_ids, n)
        if attention_mask is not None:
            attention_mask, _ = pad_batch(attention_mask, n)
        return input_ids, attention_mask, batch

    def _mixed_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """(B', L'): 1 on the prefix and where any instance of the group has a real token."""
        if attention_mask is None or not self.config.use_attention_mask:
            return None
        n = self.config.num_instances
        grouped = attention_mask.reshape(-1, n, attention_mask.shape[1]).amax(dim=1)
        return F.pad(grouped, (n + 1, 0), value=1)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> Encoded:
        """Prefix, embed, multiplex and encode a (B, L) id batch: hidden (B', L', d)."""
        c = self.config
        input_ids, attention_mask, batch = self._group(input_ids, attention_mask)
        prefixed = add_index_prefix(input_ids, c.num_instances, c.index_ids, c.filler_id, c.cls_id)
        x = self.multiplexer(self.embeddings(input_ids=prefixed))
        if c.embed_twice:
            x = self.embeddings(inputs_embeds=x)
        hidden = self.encoder(x, self._mixed_mask(attention_mask))
        return Encoded(hidden, batch)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The task's logits for a (B, L) batch; see the class docstring for shapes."""
        encoded = self.encode(input_ids, attention_mask)
        start = self.config.prefix_length
        if self.demultiplexer is None:
            return self.retrieve_all(encoded)
        logits, _ = self.demultiplexer(encoded.hidden, encoded.batch_size)
        return logits if self.config.task == "sequence" else logits[:, start:]

    def retrieve_all(self, encoded: Encoded) -> torch.Tensor:
        """Retrieval logits of every instance at every position: (B, L, V)."""
        head, start = self.retrieval_head, self.config.prefix_length
        # the retrieval head's own demultiplexer, token gather (its forward is the selected one)
        u = mnn.IndexDemultiplexer.forward(head, encoded.hidden, "token")
        return head.decoder(u.flatten(0, 1)[: encoded.batch_size, start:])

    def retrieve(
        self,
        input_ids: torch.Tensor,
        instance_index: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B', L, V) for the token of instance ``instance_index[g, t]`` at position t.

        ``instance_index`` is (B', L) with values in [0, N), one row per (padded) group.
        """
        encoded = self.encode(input_ids, attention_mask)
        groups, prefixed_length = encoded.hidden.shape[:2]
        start = self.config.prefix_length
        check_shape(
            "instance_index",
            instance_index,
            (groups, prefixed_length - start),
            "one instance per group and position",
        )
        index = F.pad(instance_index, (start, 0))  # prefix positions: any instance, dropped
        return self.retrieval_head(encoded.hidden, index)[:, start:]

    def save(self, path: str | Path) -> None:
        """Write the config and the state dict to ``path`` (one ``torch.save`` file)."""
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "config": self.config.to_dict(),
                "state_dict": self.state_dict(),
            },
            path,
        )

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        embeddings: nn.Module | None = None,
        encoder: nn.Module | None = None,
        map_location: str | torch.device = "cpu",
        backend: Backend = "auto",
    ) -> MultiplexedModel:
        """Rebuild a model saved by ``save``, in the saved dtype, on ``map_location``.

        Pass custom ``embeddings`` / ``encoder`` modules of the kinds that were saved.
        """
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (format "
                f"{checkpoint.get('format')!r})"
            )
        config, state = MuxConfig.from_dict(checkpoint["config"]), checkpoint["state_dict"]
        model = cls(config, embeddings=embeddings, encoder=encoder, backend=backend)
        dtype = next(v.dtype for v in state.values() if v.is_floating_point())
        model.to(device=map_location, dtype=dtype).load_state_dict(state, strict=True)
        return model
