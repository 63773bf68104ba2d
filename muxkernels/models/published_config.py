"""The configs of the published DataMUX and MUX-PLMs models: their families, and the
mapping between a published config.json and a ``MuxConfig``.

What a family fixes (``Family``): its head style, the special ids its code hard-codes, its
position rule, the multiplexers it has, its scripts' loss weights and its model classes.
What a model class fixes (``front_end``): whether CLS overwrites the first token and how
many leading positions get no retrieval label.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from .encoder import TransformerEncoder

if TYPE_CHECKING:
    from .multiplexed import MultiplexedModel, MuxConfig


@dataclass(frozen=True)
class Family:
    """What a published model family fixes: its head style, its special ids (hard-coded in
    the published code), its position rule, whether Hugging Face ties its retrieval decoder
    to the word embeddings (the BERT models name it their output embeddings), its
    multiplexers and the defaults of its training scripts."""

    prefix: str
    heads: str
    filler_id: int
    cls_id: int
    index_base: int | None  # idx(i) = base − (i + 2); None: the vocabulary size
    roberta_positions: bool
    ties_decoder: bool
    muxing_variants: tuple[str, ...]
    task_loss_coeff: float
    retrieval_loss_coeff: float
    architectures: dict[str, str]  # published class → task

    def index_ids(self, vocab_size: int, num_instances: int) -> list[int]:
        base = vocab_size if self.index_base is None else self.index_base
        return [base - (i + 2) for i in range(num_instances)]


ALL_MUXING = ("gaussian_hadamard", "binary_hadamard", "random_ortho", "random_ortho_low_rank")
FAMILIES: dict[str, Family] = {
    "roberta": Family(
        "roberta", "datamux", 50000, 49923, None, True, False,
        ("gaussian_hadamard", "binary_hadamard", "random_ortho"), 0.9, 0.1,
        {"RobertaSequenceClassificationMuxed": "sequence",
         "RobertaTokenClassificationMuxed": "token"},
    ),
    "bert": Family(
        "bert", "muxplms_bert", 680, 101, 680, False, True,
        (*ALL_MUXING, "gaussian_attention_v2"), 1.0, 0.0,
        {"MuxedBertForSequenceClassification": "sequence",
         "MuxedBertForTokenClassification": "token", "MuxedBertForMaskedLM": "retrieval"},
    ),
    "electra": Family(
        "electra", "muxplms_electra", 680, 101, 680, False, False, ALL_MUXING, 1.0, 0.0,
        {"MuxedElectraForSequenceClassification": "sequence",
         "MuxedElectraForTokenClassification": "token"},
    ),
}  # fmt: skip
HEAD_FAMILIES = {f.heads: name for name, f in FAMILIES.items()}


def front_end(family: str, demuxing: str, task: str) -> tuple[bool, int | None]:
    """(cls_at_first, special_positions) of a published model class; None = the prefix."""
    if demuxing == "index":
        return False, None
    if demuxing == "mlp":  # DataMUX: CLS over <s>; the sequence head reads it, no retrieval
        return True, 1 if task == "sequence" else 0
    if family == "bert":
        return True, 0
    return False, 1 if task == "sequence" else 0  # ELECTRA


def published_family(values: Mapping[str, Any], family: str | None = None) -> str:
    """The family named by ``family`` or the config's ``model_type``."""
    family = family or values.get("model_type")
    if family not in FAMILIES:
        raise ValueError(
            f"unknown published model family {family!r}: pass family= one of {tuple(FAMILIES)} "
            "(or a config.json with that model_type)"
        )
    return family


def published_task(
    values: Mapping[str, Any], family: str, task: str | None = None, *, retask: bool = False
) -> str:
    """``task``, or the one the config's ``architectures`` names. They must agree unless
    ``retask`` (a pretraining checkpoint starting a task model)."""
    known = FAMILIES[family].architectures
    architectures = list(values.get("architectures") or ())
    named = {known[a] for a in architectures if a in known}
    if task is None:
        if len(named) != 1:
            raise ValueError(
                f"the config's architectures {architectures} name no published {family} model "
                f"that muxkernels converts ({sorted(known)}): pass task="
            )
        return named.pop()
    if named and task not in named and not retask:
        raise ValueError(
            f"task={task!r} but the config's architectures say {sorted(named)} (to start a "
            f"{task} model from a pretraining checkpoint, use new_task_heads)"
        )
    return task


def _field(values: Mapping[str, Any], name: str, default: Any = dataclasses.MISSING) -> Any:
    if name in values and values[name] is not None:
        return values[name]
    if default is dataclasses.MISSING:
        raise ValueError(f"the published config lacks {name!r}")
    return default


def config_from_published(
    values: Mapping[str, Any],
    *,
    task: str | None = None,
    family: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    retask: bool = False,
) -> MuxConfig:
    """The ``MuxConfig`` of a published model from its config.json ``values``.

    ``overrides`` sets fields the published config does not hold (``pad``,
    ``use_attention_mask`` — False by default, as published —, ``num_labels`` of a new task
    head, ``seed``, …). ``retask``: see ``published_task``.
    """
    from .multiplexed import MuxConfig

    family = published_family(values, family)
    fam = FAMILIES[family]
    task = published_task(values, family, task, retask=retask)
    if _field(values, "hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {values['hidden_act']!r}: the encoders here use exact gelu")
    if _field(values, "position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are published (and converted)")
    n, v = int(_field(values, "num_instances")), int(_field(values, "vocab_size"))
    demuxing = _field(values, "demuxing_variant")
    cls_at_first, special_positions = front_end(family, demuxing, task)
    d = int(_field(values, "hidden_size"))
    pad_token_id = _field(values, "pad_token_id")
    labels = values.get("id2label")
    fields = dict(
        vocab_size=v,
        num_instances=n,
        hidden_size=d,
        num_layers=int(_field(values, "num_hidden_layers")),
        num_heads=int(_field(values, "num_attention_heads")),
        intermediate_size=int(_field(values, "intermediate_size")),
        max_position_embeddings=int(_field(values, "max_position_embeddings")),
        type_vocab_size=int(_field(values, "type_vocab_size")),
        position_offset=pad_token_id + 1 if fam.roberta_positions else 0,
        embedding_size=int(_field(values, "embedding_size", d)) if family == "electra" else None,
        layer_norm_eps=float(_field(values, "layer_norm_eps")),
        dropout=float(_field(values, "hidden_dropout_prob", 0.1)),
        initializer_range=float(_field(values, "initializer_range", 0.02)),
        norm_first=False,
        muxing_variant=_field(values, "muxing_variant"),
        gaussian_hadamard_norm=float(_field(values, "gaussian_hadamard_norm", 1.0)),
        binary_hadamard_epsilon=float(_field(values, "binary_hadamard_epsilon", 0.0)),
        learn_muxing=bool(_field(values, "learn_muxing", False)),
        demuxing_variant=demuxing,
        num_hidden_demux_layers=int(_field(values, "num_hidden_demux_layers", 2)),
        heads=fam.heads,
        task=task,
        num_labels=0 if task == "retrieval" else len(labels or {}) or values.get("num_labels", 2),
        filler_id=fam.filler_id,
        cls_id=fam.cls_id,
        index_ids=fam.index_ids(v, n),
        cls_at_first=cls_at_first,
        special_positions=special_positions,
        pad_token_id=pad_token_id,
        roberta_positions=fam.roberta_positions,
        tie_word_embeddings=fam.ties_decoder and bool(_field(values, "tie_word_embeddings", True)),
        task_loss_coeff=float(_field(values, "task_loss_coeff", fam.task_loss_coeff)),
        retrieval_loss_coeff=float(
            _field(values, "retrieval_loss_coeff", fam.retrieval_loss_coeff)
        ),
        retrieval_percentage=float(_field(values, "retrieval_percentage", 1.0)),
        use_attention_mask=False,
    )
    return MuxConfig(**(fields | dict(overrides or {})))


def hf_config(values: Mapping[str, Any], family: str) -> Any:
    """A ``transformers`` config of the published encoder (needs ``transformers``)."""
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            "encoder='transformers' needs the optional package transformers "
            "(pip install transformers); the built-in encoder needs nothing"
        ) from err
    hf_fields = {k: v for k, v in values.items() if k not in ("architectures", "model_type")}
    return transformers.AutoConfig.for_model(family, **hf_fields)


def hf_model(values: Mapping[str, Any], family: str) -> nn.Module:
    """The published encoder as a ``transformers`` model (no pooler), randomly initialised."""
    import transformers

    config = hf_config(values, family)
    kinds = {
        "roberta": transformers.RobertaModel,
        "bert": transformers.BertModel,
        "electra": transformers.ElectraModel,
    }
    extra = {} if family == "electra" else {"add_pooling_layer": False}
    return kinds[family](config, **extra)


def published_config(model: MultiplexedModel) -> dict[str, Any]:
    """The config.json values of ``model`` as a published model, or a ValueError naming the
    setting the published code cannot reproduce."""
    c = model.config
    family = HEAD_FAMILIES[c.heads]
    fam = FAMILIES[family]
    classes = {task: name for name, task in fam.architectures.items()}
    if c.task not in classes:
        raise ValueError(f"the published {family} code has no {c.task!r} model")
    cls_at_first, special = front_end(family, c.demuxing_variant, c.task)
    wanted = {
        "muxing_variant": (c.muxing_variant in fam.muxing_variants, fam.muxing_variants),
        "filler_id": (c.filler_id == fam.filler_id, fam.filler_id),
        "cls_id": (c.cls_id == fam.cls_id, fam.cls_id),
        "index_ids": (c.index_ids == fam.index_ids(c.vocab_size, c.num_instances), "fixed"),
        "roberta_positions": (c.roberta_positions == fam.roberta_positions, fam.roberta_positions),
        "cls_at_first": (c.cls_at_first == cls_at_first, cls_at_first),
        "special_positions": (c.special_positions == (special or c.prefix_length), special),
        "embed_twice": (c.embed_twice is not False, "None or True"),
        "use_attention_mask": (not c.use_attention_mask, "False or None"),
    }
    if not fam.ties_decoder:
        wanted["tie_word_embeddings"] = (not c.tie_word_embeddings, False)
    if fam.roberta_positions:
        wanted["position_offset"] = (c.position_offset == (c.pad_token_id or 0) + 1, "pad + 1")
    else:
        wanted["position_offset"] = (c.position_offset == 0, 0)
    wrong = [f"{k}={getattr(c, k)!r} (published: {v})" for k, (ok, v) in wanted.items() if not ok]
    if wrong:
        raise ValueError(f"the published {family} model cannot reproduce " + ", ".join(wrong))
    if isinstance(model.encoder, TransformerEncoder):
        values: dict[str, Any] = {
            "vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size,
            "num_hidden_layers": c.num_layers,
            "num_attention_heads": c.num_heads,
            "intermediate_size": c.intermediate_size,
            "max_position_embeddings": c.max_position_embeddings,
            "type_vocab_size": c.type_vocab_size,
            "layer_norm_eps": c.layer_norm_eps,
            "pad_token_id": c.pad_token_id,
            "hidden_dropout_prob": c.dropout,
            "attention_probs_dropout_prob": c.dropout,
            "initializer_range": c.initializer_range,
            "hidden_act": "gelu",
            "position_embedding_type": "absolute",
        }
        if family == "electra":
            values["embedding_size"] = c.width
    else:
        values = model.encoder.model.config.to_dict()
    if fam.ties_decoder:
        values["tie_word_embeddings"] = c.tie_word_embeddings
    values |= {
        "model_type": family,
        "architectures": [classes[c.task]],
        "num_instances": c.num_instances,
        "muxing_variant": c.muxing_variant,
        "demuxing_variant": c.demuxing_variant,
        "gaussian_hadamard_norm": c.gaussian_hadamard_norm,
        "binary_hadamard_epsilon": c.binary_hadamard_epsilon,
        "learn_muxing": int(c.learn_muxing),
        "num_hidden_demux_layers": c.num_hidden_demux_layers,
        "retrieval_percentage": c.retrieval_percentage,
        "task_loss_coeff": c.task_loss_coeff,
        "retrieval_loss_coeff": c.retrieval_loss_coeff,
    }
    if c.task != "retrieval":
        values["id2label"] = {str(i): f"LABEL_{i}" for i in range(c.num_labels)}
        values["label2id"] = {f"LABEL_{i}": i for i in range(c.num_labels)}
    return values
