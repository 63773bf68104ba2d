"""A drop-in multiplexed model: embed, prefix, multiplex, encode, demultiplex.

The caller's batch of B = B'·N token sequences (row g·N+i is instance i of group g) runs
through one encoder pass per group:

    ids' = front(ids)            index prefix (index demux), or cls_id at t = 0 (cls_at_first)
    e    = embeddings(input_ids=ids')                    (B, L', e)
    x    = multiplexer(e)                                (B', L', e)
    x    = embeddings(inputs_embeds=x)   if embed_twice  (the published second pass)
    x    = embeddings_project(x)         if e != d       (ELECTRA)
    h    = encoder(x, mask)                              (B', L', d)

then the published heads on h (``muxkernels.models.heads``): ``retrieval_head`` and, for a
classification task, ``demultiplexer`` (+ ``classifier`` for MUX-PLMs). Module and
parameter names follow the published DataMUX and MUX-PLMs models; ``from_published`` /
``to_published`` convert whole checkpoints (``muxkernels.models.published``).
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
from .._checks import (
    as_int,
    as_number,
    check_choice,
    check_index,
    check_int_at_least,
    check_integer,
    check_number_in,
    check_rank,
    check_shape,
    check_tensor,
    check_values_below,
)
from ..nn.multiplexer import MUXING_VARIANTS
from ..prefix import (
    ROBERTA_CLS_ID,
    ROBERTA_FILLER_ID,
    add_index_prefix,
    index_id_list,
    pad_batch,
    roberta_index_ids,
)
from . import heads, losses
from .contextual import ContextualMultiplexer
from .encoder import (
    Embeddings,
    InputsEmbedsEncoder,
    TransformerEncoder,
    as_encoder,
    is_hugging_face_style,
)

Task = Literal["retrieval", "sequence", "token"]
TASKS: tuple[str, ...] = ("retrieval", "sequence", "token")
MuxingVariant = Literal[
    "gaussian_hadamard",
    "binary_hadamard",
    "random_ortho",
    "random_ortho_low_rank",
    "gaussian_attention_v2",
]
MODEL_MUXING_VARIANTS: tuple[str, ...] = (*MUXING_VARIANTS, "gaussian_attention_v2")
DemuxingVariant = Literal["index", "mlp", "index_pos"]
HeadStyle = Literal["datamux", "muxplms_bert", "muxplms_electra"]
CHECKPOINT_FORMAT = "muxkernels.models.MultiplexedModel/1"


@dataclass
class MuxConfig:
    """Everything that rebuilds a ``MultiplexedModel`` (saved with its checkpoints).

    Defaults are the published DataMUX ones: index ids ``index_ids[i]`` = V − (i + 2),
    ``filler_id`` 50000, ``cls_id`` 49923 (RoBERTa's vocabulary: pass your own ids for a
    vocabulary of 50000 tokens or fewer), loss weights 0.9 (task) and 0.1 (retrieval),
    ``retrieval_percentage`` 1.

    - ``muxing_variant``: the four ``muxkernels.nn.Multiplexer`` variants or MUX-PLMs'
      contextual ``gaussian_attention_v2`` (``ContextualMultiplexer``).
    - ``demuxing_variant``: "index" (index prefix, design §3), "mlp" (design §4), "index_pos"
      (MUX-PLMs, design §5, with ``num_hidden_demux_layers`` >= 2); ``heads`` picks the
      published head style: "datamux" (index, mlp), "muxplms_bert" or "muxplms_electra"
      (index, index_pos) — see ``muxkernels.models.heads``.
    - ``cls_at_first``: the first token of every sequence is replaced by ``cls_id`` (the
      published mlp front end, and MUX-PLMs BERT's index_pos); None = mlp only.
    - ``special_positions``: leading positions that get no retrieval label; None = the
      index prefix N + 1 for index demux, else 0.
    - ``pad_token_id``: the padding id (no retrieval label; ``padding_idx`` of the word
      table); ``roberta_positions``: RoBERTa's position rule (see ``Embeddings``).
    - ``tie_word_embeddings``: the retrieval head's decoder weight is the word embedding
      table (MUX-PLMs BERT, whose output embeddings Hugging Face ties).
    - ``embedding_size``: width of the embeddings and the multiplexer when it differs from
      ``hidden_size`` (ELECTRA: an ``embeddings_project`` Linear follows the second pass).
    - ``embed_twice``: the published second embedding pass over the mixture. None = on,
      except that a Hugging Face style encoder (``inputs_embeds``) makes it itself.
    - ``use_attention_mask``: True masks the encoder's attention to positions that are
      padding in all N instances of a group; False is the published behaviour (the encoder
      sees no mask; a passed mask still drops token-task loss positions and masks the
      contextual multiplexer). None (the default) refuses a passed mask: choose.
    - ``pad=True`` fills a last incomplete group with copies of the last row and drops
      their outputs; otherwise such a batch is an error. ``seed`` draws the transforms.

    The modules the model builds itself start as the published ones do: Linear and
    Embedding weights ~ N(0, ``initializer_range``²) (padding rows 0), biases 0, LayerNorm 1
    and 0.
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
    embedding_size: int | None = None
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0
    initializer_range: float = 0.02
    norm_first: bool = True
    muxing_variant: MuxingVariant = "gaussian_hadamard"
    gaussian_hadamard_norm: float = 1.0
    binary_hadamard_epsilon: float = 0.0
    learn_muxing: bool = False
    demuxing_variant: DemuxingVariant = "index"
    num_hidden_demux_layers: int = 2
    heads: HeadStyle = "datamux"
    task: Task = "retrieval"
    num_labels: int = 0
    filler_id: int | None = None
    cls_id: int | None = None
    index_ids: list[int] | None = None
    cls_at_first: bool | None = None
    special_positions: int | None = None
    pad_token_id: int | None = None
    roberta_positions: bool = False
    tie_word_embeddings: bool = False
    task_loss_coeff: float = 0.9
    retrieval_loss_coeff: float = 0.1
    retrieval_percentage: float = 1.0
    embed_twice: bool | None = None
    use_attention_mask: bool | None = None
    pad: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self._check_numbers()
        n, v = self.num_instances, self.vocab_size
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task != "retrieval" and self.num_labels < 1:
            raise ValueError(f"task={self.task!r} needs num_labels >= 1, got {self.num_labels}")
        check_choice("muxing_variant", self.muxing_variant, MODEL_MUXING_VARIANTS)
        check_choice("demuxing_variant", self.demuxing_variant, heads.DEMUXING_VARIANTS)
        check_choice("heads", self.heads, heads.HEAD_STYLES)
        check_int_at_least("num_hidden_demux_layers", self.num_hidden_demux_layers, 2)
        if self.embedding_size is not None:
            check_int_at_least("embedding_size", self.embedding_size, 1)
        published = {"datamux": ("index", "mlp")}.get(self.heads, ("index", "index_pos"))
        if self.demuxing_variant not in published:
            raise ValueError(
                f"heads={self.heads!r} has no {self.demuxing_variant!r} demultiplexer (published "
                f"ones: {published}); DataMUX has index and mlp, MUX-PLMs index and index_pos"
            )
        for name in ("task_loss_coeff", "retrieval_loss_coeff"):
            check_number_in(name, getattr(self, name), 0.0, float("inf"))
        check_number_in("retrieval_percentage", self.retrieval_percentage, 0.0, 1.0)
        if self.index_ids is None:
            self.index_ids = roberta_index_ids(v, n)
        self.index_ids = index_id_list(self.index_ids, n)
        self.cls_id = ROBERTA_CLS_ID if self.cls_id is None else as_int("cls_id", self.cls_id, 0)
        if self.filler_id is None:
            self.filler_id = ROBERTA_FILLER_ID
        self.filler_id = as_int("filler_id", self.filler_id, 0)
        if self.cls_at_first is None:
            self.cls_at_first = self.demuxing_variant == "mlp"
        if self.special_positions is None:
            self.special_positions = self.prefix_length
        check_int_at_least("special_positions", self.special_positions, 0)
        if self.roberta_positions and self.pad_token_id is None:
            raise ValueError("roberta_positions=True needs a pad_token_id")
        self._check_special_ids()

    def _check_numbers(self) -> None:
        """Every count, size and rate: an error naming the field and its range, before any
        module is built; integer-like values (numpy, 0-d tensors) are stored as int/float."""
        for name in (
            "vocab_size",
            "num_instances",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            setattr(self, name, as_int(name, getattr(self, name), 1))
        for name in ("position_offset", "num_labels", "seed"):
            setattr(self, name, as_int(name, getattr(self, name), 0))
        if self.pad_token_id is not None:
            self.pad_token_id = as_int("pad_token_id", self.pad_token_id, 0, self.vocab_size - 1)
        for name in ("layer_norm_eps", "initializer_range", "gaussian_hadamard_norm"):
            setattr(self, name, as_number(name, getattr(self, name), 0.0, above=True))
        self.dropout = as_number("dropout", self.dropout, 0.0, 1.0)
        self.binary_hadamard_epsilon = as_number(
            "binary_hadamard_epsilon", self.binary_hadamard_epsilon, 0.0, 1.0
        )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be a multiple of num_heads="
                f"{self.num_heads} (each attention head gets hidden_size / num_heads features)"
            )

    def _check_special_ids(self) -> None:
        n, v = self.num_instances, self.vocab_size
        if self.demuxing_variant == "index":
            special = [*self.index_ids, self.cls_id, self.filler_id]
            if len(self.index_ids) != n or len(set(special)) != n + 2:
                raise ValueError(
                    f"need {n} index ids and distinct filler and cls ids, got index_ids="
                    f"{self.index_ids}, cls_id={self.cls_id}, filler_id={self.filler_id}"
                )
        else:
            special = [self.cls_id] if self.cls_at_first else []
        if self.pad_token_id is not None:
            special.append(self.pad_token_id)
        if special and (min(special) < 0 or max(special) >= v):
            raise ValueError(
                f"special ids {special} must lie in [0, vocab_size={v}) (filler 50000 and cls "
                "49923 are the published RoBERTa defaults: pass filler_id and cls_id for a "
                "smaller vocabulary)"
            )

    @property
    def prefix_length(self) -> int:
        """Positions in front of the caller's sequence: N + 1 for index demux, else 0."""
        return self.num_instances + 1 if self.demuxing_variant == "index" else 0

    @property
    def width(self) -> int:
        """The embeddings' and multiplexer's width: ``embedding_size`` or ``hidden_size``."""
        return self.embedding_size or self.hidden_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MuxConfig:
        return cls(**values)


@dataclass(frozen=True)
class Encoded:
    """The encoder output of one batch: ``hidden`` (B', L', d); the caller's batch size B
    (B'·N minus the rows that ``pad`` added); ``input_ids`` (B'·N, L') and
    ``attention_mask`` (B'·N, L) or None as the model saw them (padded, front end applied)."""

    hidden: torch.Tensor
    batch_size: int
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None


class MultiplexedModel(nn.Module):
    """Embedding module + front end + multiplexer + any encoder + the published heads.

    ``embeddings`` defaults to the built-in ``Embeddings`` and ``encoder`` to the built-in
    ``TransformerEncoder``, both sized by ``config``. Any encoder mapping (B', L, d) to
    (B', L, d) works: one called as ``encoder(hidden, attention_mask)``, or a Hugging Face
    style model taking ``inputs_embeds`` (wrapped in ``InputsEmbedsEncoder``), whose own
    embedding module then serves as ``embeddings`` by default and makes the second pass, as
    in the published model (positions added once per pass, word-embedding gradients flow).

    - ``forward(input_ids, attention_mask)``: the task's logits — (B, C) for "sequence",
      (B, L, C) for "token", (B, L, V) for "retrieval" (every instance's token at every
      position). Row g·N+i is instance i of group g; the index prefix is dropped.
    - ``forward(input_ids, attention_mask, labels=…)``: the published training objective
      as a ``MuxOutput`` (loss, task_loss, retrieval_loss, logits); see
      ``muxkernels.models.losses``. Labels: (B,) for "sequence", (B, L) for "token" and for
      "retrieval" (the token of each instance, masked-LM style), −100 ignored.
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
        d, e, eps = c.hidden_size, c.width, c.layer_norm_eps
        hugging_face = encoder is not None and is_hugging_face_style(encoder)
        if hugging_face and c.embed_twice:
            raise ValueError(
                "embed_twice=True with a Hugging Face style encoder would add positions a third "
                "time: the encoder embeds inputs_embeds itself (the published second pass); "
                "leave embed_twice=None"
            )
        self.second_pass = not hugging_face and c.embed_twice is not False
        built: list[nn.Module] = []
        inner = encoder.model if isinstance(encoder, InputsEmbedsEncoder) else encoder
        if embeddings is None and hugging_face and hasattr(inner, "embeddings"):
            embeddings = inner.embeddings
        if embeddings is None:
            embeddings = Embeddings(
                c.vocab_size,
                e,
                c.max_position_embeddings,
                c.type_vocab_size,
                eps,
                c.dropout,
                c.position_offset,
                c.pad_token_id,
                c.roberta_positions,
            )
            built.append(embeddings)
        self.embeddings = embeddings
        self.multiplexer = self._build_multiplexer(backend)
        self.embeddings_project = None
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
            if e != d:
                self.embeddings_project = nn.Linear(e, d)
                built.append(self.embeddings_project)
        self.encoder = as_encoder(encoder)
        self.demultiplexer = None
        for name, module in heads.build_heads(c, backend).items():
            setattr(self, name, module)
            built.append(module)
        if c.muxing_variant == "gaussian_attention_v2":
            built += [self.multiplexer.muxing_attention, self.multiplexer.muxing_attention_2]
        for module in built:
            module.apply(self._init_weights)
        if c.tie_word_embeddings:
            self._tie_decoder()
        for param in heads.unread_parameters(self):
            param.requires_grad_(False)

    def _tie_decoder(self) -> None:
        """The retrieval decoder's weight becomes the word embedding table."""
        table = self.embeddings.word_embeddings.weight
        decoder = self.retrieval_head.decoder
        if table.shape != decoder.weight.shape:
            raise ValueError(
                f"tie_word_embeddings needs a word table of the decoder's shape "
                f"{tuple(decoder.weight.shape)}, got {tuple(table.shape)}"
            )
        decoder.weight = table

    def _build_multiplexer(self, backend: Backend) -> nn.Module:
        c = self.config
        if c.muxing_variant == "gaussian_attention_v2":
            return ContextualMultiplexer(
                c.num_instances,
                c.width,
                c.num_heads,
                c.intermediate_size,
                layer_norm_eps=c.layer_norm_eps,
                dropout=c.dropout,
                gaussian_hadamard_norm=c.gaussian_hadamard_norm,
                learn_muxing=c.learn_muxing,
                mask_instances=c.task == "sequence",
                generator=c.seed,
            )
        return mnn.Multiplexer(
            c.num_instances,
            c.width,
            c.muxing_variant,
            learn_muxing=c.learn_muxing,
            gaussian_hadamard_norm=c.gaussian_hadamard_norm,
            binary_hadamard_epsilon=c.binary_hadamard_epsilon,
            generator=c.seed,
            backend=backend,
        )

    @property
    def prefix_length(self) -> int:
        """Positions the front end adds in front of the caller's sequence (N + 1 or 0)."""
        return self.config.prefix_length

    def _init_weights(self, module: nn.Module) -> None:
        """The published initialisation of one module (caller-supplied modules keep theirs)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
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
        self._check_ids(input_ids)
        n, batch = self.config.num_instances, input_ids.shape[0]
        if attention_mask is not None:
            check_shape("attention_mask", attention_mask, tuple(input_ids.shape), "as input_ids")
            if self.config.use_attention_mask is None:
                raise ValueError(
                    "an attention_mask was passed but MuxConfig.use_attention_mask is None: set "
                    "it to True (the encoder masks positions padded in all N instances) or False "
                    "(the published model: the encoder sees no mask; the mask still drops "
                    "token-task loss positions and masks the contextual multiplexer)"
                )
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

    def _check_ids(self, input_ids: torch.Tensor) -> None:
        """Ids on the model's device, in [0, vocab_size), and few enough positions for the
        built-in position table (prefix included)."""
        c = self.config
        device = next(self.parameters()).device
        if input_ids.device != device:
            raise ValueError(
                f"input_ids is on {input_ids.device} but the model's parameters are on "
                f"{device}; move them to one device (model.to(...) or input_ids.to(...))"
            )
        if 0 in input_ids.shape:
            raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)})")
        v = c.vocab_size
        what = f"the vocabulary has vocab_size={v} ids, so ids must lie in [0, {v - 1}]"
        check_values_below([("input_ids", input_ids, v, what)])
        table = getattr(self.embeddings, "position_embeddings", None)
        if isinstance(self.embeddings, Embeddings) and table is not None:
            length = input_ids.shape[1] + self.prefix_length
            last = self.embeddings.position_offset + length - 1
            if last >= table.num_embeddings:
                raise ValueError(
                    f"input_ids has L={input_ids.shape[1]} tokens: with the prefix of "
                    f"{self.prefix_length} the positions run to {last}, but the position "
                    f"table has max_position_embeddings={table.num_embeddings} rows, so L must be "
                    f"at most {table.num_embeddings - last + input_ids.shape[1] - 1}"
                )

    def _front(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The index prefix (index demux), or ``cls_id`` at t = 0 (``cls_at_first``)."""
        c = self.config
        if c.demuxing_variant == "index":
            return add_index_prefix(input_ids, c.num_instances, c.index_ids, c.filler_id, c.cls_id)
        if c.cls_at_first:
            input_ids = input_ids.clone()
            input_ids[:, 0] = c.cls_id
        return input_ids

    def _prefixed_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The mask extended with ones over the prefix: (B, L')."""
        if attention_mask is None:
            return None
        return F.pad(attention_mask, (self.prefix_length, 0), value=1)

    def _mixed_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """(B', L'): 1 on the prefix and where any instance of the group has a real token."""
        if attention_mask is None or not self.config.use_attention_mask:
            return None
        n = self.config.num_instances
        return attention_mask.reshape(-1, n, attention_mask.shape[1]).amax(dim=1)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> Encoded:
        """Front end, embed, multiplex and encode a (B, L) id batch: hidden (B', L', d)."""
        input_ids, attention_mask, batch = self._group(input_ids, attention_mask)
        fronted, mask = self._front(input_ids), self._prefixed_mask(attention_mask)
        e = self.embeddings(input_ids=fronted)
        if isinstance(self.multiplexer, ContextualMultiplexer):
            x = self.multiplexer(e, mask)
        else:
            x = self.multiplexer(e)
        if self.second_pass:
            x = self.embeddings(inputs_embeds=x)
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)
        hidden = self.encoder(x, self._mixed_mask(mask))
        if hidden.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"the encoder returned hidden states of width {hidden.shape[-1]} (shape "
                f"{tuple(hidden.shape)}) but config.hidden_size is {self.config.hidden_size}; "
                "give the config the encoder's hidden size"
            )
        return Encoded(hidden, batch, fronted, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | losses.MuxOutput:
        """The task's logits, or with ``labels`` the published objective (``generator``
        draws the retrieval instances); see the class docstring for shapes."""
        encoded = self.encode(input_ids, attention_mask)
        logits = heads.task_logits(self, encoded.hidden, encoded.batch_size)
        if labels is None:
            return logits
        return losses.published_objective(self, encoded, logits, labels, generator)

    def retrieve(
        self,
        input_ids: torch.Tensor,
        instance_index: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B', L, V) for the token of instance ``instance_index[g, t]`` at position t.

        ``instance_index`` is (B', L) with values in [0, N), one row per (padded) group.
        """
        c = self.config
        check_tensor("input_ids", input_ids)
        check_rank("input_ids", input_ids, 2, "(B, L)")
        groups = -(-input_ids.shape[0] // c.num_instances) if c.pad else None
        if groups is None:
            groups = input_ids.shape[0] // c.num_instances
        check_index("instance_index", instance_index, (groups, input_ids.shape[1]), c.num_instances)
        encoded = self.encode(input_ids, attention_mask)
        start = self.prefix_length
        index = F.pad(instance_index, (start, 0))  # prefix positions: any instance, dropped
        return self.retrieval_head(encoded.hidden, index)[:, start:]

    @classmethod
    def from_published(
        cls,
        checkpoint: str | Path | dict[str, torch.Tensor],
        config: str | Path | dict[str, Any] | None = None,
        **options: Any,
    ) -> MultiplexedModel:
        """A model whose outputs equal the published DataMUX / MUX-PLMs model's; the options
        are those of ``muxkernels.models.published.from_published``."""
        from .published import from_published

        return from_published(checkpoint, config, **options)

    def to_published(
        self, directory: str | Path | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(state dict, config.json values) for the published code; written to ``directory``
        (pytorch_model.bin, config.json) when given. See ``muxkernels.models.published``."""
        from .published import to_published

        return to_published(self, directory)

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
