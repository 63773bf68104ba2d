"""Whole published checkpoints, both ways: DataMUX (RoBERTa) and MUX-PLMs (BERT, ELECTRA).

A published checkpoint is a state dict (``pytorch_model.bin`` or ``model.safetensors``) and
a Hugging Face ``config.json`` holding the encoder fields and the multiplexing ones
(``num_instances``, ``muxing_variant``, ``demuxing_variant``, ``gaussian_hadamard_norm``,
``binary_hadamard_epsilon``, ``learn_muxing``, ``num_hidden_demux_layers``,
``retrieval_percentage``, ``task_loss_coeff``, ``retrieval_loss_coeff``, the labels). Its
keys, and ours:

    {family}.embeddings.*             embeddings.*            (Hugging Face encoder: also
    {family}.encoder.layer.{k}.*      encoder.layers.{k}.*     encoder.model.{…}, unchanged)
    {family}.embeddings_project.*     embeddings_project.*    (ELECTRA, embedding_size != d)
    instance_embedding                multiplexer.instance_embedding (low-rank: factored)
    muxing_attention{,_2}.*           multiplexer.muxing_attention{,_2}.*
    demultiplexer.*, retrieval_head.*, classifier.*, demux_module.*     unchanged

A Hugging Face BERT layer becomes an ``nn.TransformerEncoderLayer``: query, key and value
stack into ``self_attn.in_proj_*``; ``attention.output.dense`` → ``self_attn.out_proj``,
``attention.output.LayerNorm`` → ``norm1``, ``intermediate.dense`` → ``linear1``,
``output.dense`` → ``linear2``, ``output.LayerNorm`` → ``norm2``. Keys the published loader
itself skips (``{family}.pooler.*``, the ``position_ids``/``token_type_ids`` buffers) are
dropped; every other key must match, and tensors that the model shares (tied decoder
biases, the index_pos ``demux_module`` under its three names) may appear once or several
times, equal.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .encoder import InputsEmbedsEncoder, TransformerEncoder

if TYPE_CHECKING:
    from .multiplexed import MultiplexedModel, MuxConfig

STATE_FILES = ("pytorch_model.bin", "model.safetensors")


@dataclass(frozen=True)
class Family:
    """What a published model family fixes: its head style, its special ids (hard-coded in
    the published code), its position rule and the defaults of its training scripts."""

    prefix: str
    heads: str
    filler_id: int
    cls_id: int
    index_base: int | None  # idx(i) = base − (i + 2); None: the vocabulary size
    roberta_positions: bool
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
        "roberta", "datamux", 50000, 49923, None, True,
        ("gaussian_hadamard", "binary_hadamard", "random_ortho"), 0.9, 0.1,
        {"RobertaSequenceClassificationMuxed": "sequence",
         "RobertaTokenClassificationMuxed": "token"},
    ),
    "bert": Family(
        "bert", "muxplms_bert", 680, 101, 680, False,
        (*ALL_MUXING, "gaussian_attention_v2"), 1.0, 0.0,
        {"MuxedBertForSequenceClassification": "sequence",
         "MuxedBertForTokenClassification": "token", "MuxedBertForMaskedLM": "retrieval"},
    ),
    "electra": Family(
        "electra", "muxplms_electra", 680, 101, 680, False, ALL_MUXING, 1.0, 0.0,
        {"MuxedElectraForSequenceClassification": "sequence",
         "MuxedElectraForTokenClassification": "token", "MuxedElectraForMaskedLM": "retrieval"},
    ),
}  # fmt: skip
HEAD_FAMILIES = {f.heads: name for name, f in FAMILIES.items()}

# Hugging Face BERT layer → nn.TransformerEncoderLayer (besides query/key/value → in_proj)
LAYER_NAMES = {
    "attention.output.dense.": "self_attn.out_proj.",
    "attention.output.LayerNorm.": "norm1.",
    "intermediate.dense.": "linear1.",
    "output.dense.": "linear2.",
    "output.LayerNorm.": "norm2.",
}
QKV = ("query", "key", "value")


def _front_end(family: str, demuxing: str, task: str) -> tuple[bool, int | None]:
    """(cls_at_first, special_positions) of a published model class; None = the prefix."""
    if demuxing == "index":
        return False, None
    if demuxing == "mlp":  # DataMUX: CLS over <s>; the sequence head reads it, no retrieval
        return True, 1 if task == "sequence" else 0
    if family == "bert":
        return True, 0
    return task == "retrieval", 1 if task == "sequence" else 0  # ELECTRA


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, config.json values or None) of a checkpoint directory or state file."""
    path = Path(path)
    config = None
    if path.is_dir():
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
        found = [path / name for name in STATE_FILES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"{path} holds none of {STATE_FILES}")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ImportError(
                f"reading {path} needs safetensors (pip install safetensors)"
            ) from err
        return load_file(path), config
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError) as err:
        reason = str(err).strip().splitlines()[0]
        raise ValueError(f"cannot read {path} as a PyTorch state dict: {reason}") from err
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{path} does not hold a state dict (name → tensor)")
    return dict(state), config


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
    cls_at_first, special_positions = _front_end(family, demuxing, task)
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


# --- key mapping ----------------------------------------------------------------------------


def _layer_to_torch(layer: Mapping[str, torch.Tensor], into: dict[str, torch.Tensor], at: str):
    """One Hugging Face BERT layer's tensors (relative names) → nn.TransformerEncoderLayer."""
    for kind in ("weight", "bias"):
        into[f"{at}self_attn.in_proj_{kind}"] = torch.cat(
            [layer[f"attention.self.{q}.{kind}"] for q in QKV]
        )
    for name, tensor in layer.items():
        for theirs, ours in LAYER_NAMES.items():
            if name.startswith(theirs):
                into[at + ours + name[len(theirs) :]] = tensor


def _layer_from_torch(layer: Mapping[str, torch.Tensor], into: dict[str, torch.Tensor], at: str):
    """The inverse of ``_layer_to_torch``."""
    for kind in ("weight", "bias"):
        for q, part in zip(QKV, layer[f"self_attn.in_proj_{kind}"].chunk(3), strict=True):
            into[f"{at}attention.self.{q}.{kind}"] = part
    for name, tensor in layer.items():
        for theirs, ours in LAYER_NAMES.items():
            if name.startswith(ours):
                into[at + theirs + name[len(ours) :]] = tensor


def _family_prefix(model: MultiplexedModel) -> str:
    return FAMILIES[HEAD_FAMILIES[model.config.heads]].prefix


def _builtin_encoder(model: MultiplexedModel) -> bool:
    return isinstance(model.encoder, TransformerEncoder)


def _renames(model: MultiplexedModel) -> list[tuple[str, str]]:
    """(published prefix, our prefix) of the keys that are renamed as they are."""
    fam = _family_prefix(model)
    encoder = [(f"{fam}.", "encoder.model.")]
    if _builtin_encoder(model):
        encoder = [
            (f"{fam}.embeddings.", "embeddings."),
            (f"{fam}.embeddings_project.", "embeddings_project."),
        ]
    return [*encoder, ("instance_embedding", "multiplexer.instance_embedding")]


def _layers(model: MultiplexedModel) -> list[tuple[str, str, bool]]:
    """(published prefix, our prefix, numbered) of the BERT layers stored as torch layers."""
    layers = [
        (f"{m}.", f"multiplexer.{m}.", False) for m in ("muxing_attention", "muxing_attention_2")
    ]
    if _builtin_encoder(model):
        layers.append((f"{_family_prefix(model)}.encoder.layer.", "encoder.layers.", True))
    return layers


def _take_layers(
    state: dict[str, torch.Tensor], prefix: str, numbered: bool
) -> dict[str, dict[str, torch.Tensor]]:
    """Remove the keys under ``prefix`` from ``state``: {'{k}.' or '': {name: tensor}}."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key in [k for k in state if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        at, name = rest.split(".", 1) if numbered else ("", rest)
        layers.setdefault(f"{at}." if numbered else "", {})[name] = state.pop(key)
    return layers


def _rename(
    state: dict[str, torch.Tensor], pairs: list[tuple[str, str]]
) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, tensor in state.items():
        for old, new in pairs:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        renamed[key] = tensor
    return renamed


def state_from_published(
    model: MultiplexedModel, published: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Our names for a published state dict (complete, as ``checked_published`` gives it)."""
    rest = dict(published)
    state: dict[str, torch.Tensor] = {}
    for theirs, ours, numbered in _layers(model):
        for at, layer in _take_layers(rest, theirs, numbered).items():
            _layer_to_torch(layer, state, ours + at)
    state |= _rename(rest, _renames(model))
    if not _builtin_encoder(model):  # the Hugging Face embeddings are the model's embeddings
        for key in [k for k in state if k.startswith("encoder.model.embeddings.")]:
            state[key.replace("encoder.model.", "", 1)] = state[key]
    return state


def state_to_published(model: MultiplexedModel) -> dict[str, torch.Tensor]:
    """The published state dict of ``model``: every key the published model's
    ``state_dict()`` has, shared tensors under each of their names."""
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    for name in ("lowrank_u", "lowrank_h"):
        ours.pop(f"multiplexer.{name}", None)
    ours["multiplexer.instance_embedding"] = model.multiplexer.published_transform().detach()
    if not _builtin_encoder(model):
        ours = {k: v for k, v in ours.items() if not k.startswith("embeddings.")}
    published: dict[str, torch.Tensor] = {}
    for theirs, mine, numbered in _layers(model):
        for at, layer in _take_layers(ours, mine, numbered).items():
            _layer_from_torch(layer, published, theirs + at)
    return published | _rename(ours, [(new, old) for old, new in _renames(model)])


def _listing(keys: set[str]) -> str:
    shown = sorted(keys)[:8]
    return ", ".join(shown) + (f" (+{len(keys) - len(shown)} more)" if len(keys) > 8 else "")


def checked_published(
    model: MultiplexedModel, published: Mapping[str, torch.Tensor], *, new_task_heads: bool = False
) -> dict[str, torch.Tensor]:
    """The published state dict completed for ``model``, or a ValueError naming every key
    that is missing, unexpected, of the wrong shape, or shared but unequal.

    Keys the published loader skips are dropped; a tensor the model shares (a tied bias,
    the index_pos ``demux_module``) may be stored under one of its names or several, equal.
    ``new_task_heads=True`` loads a pretraining checkpoint into a task model: its missing
    ``classifier`` (DataMUX: ``demultiplexer``) keeps the model's fresh initialisation and
    its pretraining-only heads (top-level names this model lacks) are dropped.
    """
    fam = _family_prefix(model)
    skipped = set(skipped_keys(published, fam))
    given = {k: v for k, v in published.items() if k not in skipped}
    expected = state_to_published(model)
    shared: dict[tuple, list[str]] = {}
    for key, tensor in expected.items():
        shared.setdefault((tensor.data_ptr(), tensor.shape, tensor.stride()), []).append(key)
    for keys in shared.values():
        present = [k for k in keys if k in given]
        for k in present[1:]:
            if not torch.equal(given[k], given[present[0]]):
                raise ValueError(f"{k} and {present[0]} must hold one shared tensor, and differ")
        for k in keys if present else ():
            given.setdefault(k, given[present[0]])
    missing, unexpected = expected.keys() - given.keys(), given.keys() - expected.keys()
    if new_task_heads:
        fresh = "demultiplexer." if model.config.heads == "datamux" else "classifier."
        for key in [k for k in missing if k.startswith(fresh)]:
            given[key] = expected[key].clone()
            missing.discard(key)
        tops = {k.split(".", 1)[0] for k in expected} | {fam}
        unexpected = {k for k in unexpected if k.split(".", 1)[0] in tops}
        given = {k: v for k, v in given.items() if k in expected}
    problems = [f"missing {_listing(missing)}"] if missing else []
    problems += [f"unexpected {_listing(unexpected)}"] if unexpected else []
    problems += [
        f"{k} has shape {tuple(given[k].shape)}, the config gives {tuple(expected[k].shape)}"
        for k in sorted(expected.keys() & given.keys())
        if given[k].shape != expected[k].shape
    ]
    if problems:
        raise ValueError(
            f"the published checkpoint does not fit this {fam} model ({model.config.task}, "
            f"{model.config.muxing_variant}, {model.config.demuxing_variant}): "
            + "; ".join(problems)
        )
    return given


def skipped_keys(published: Mapping[str, torch.Tensor], family_prefix: str) -> list[str]:
    """The keys the published loader skips too: ``{family}.pooler.*`` (the published models
    build no pooler) and the ``position_ids`` / ``token_type_ids`` buffers, which must hold
    0, 1, 2, … and zeros (anything else is an error)."""
    skipped = []
    for key, tensor in published.items():
        if key == f"{family_prefix}.embeddings.position_ids":
            count = torch.arange(tensor.numel(), device=tensor.device)
            if not torch.equal(tensor.flatten(), count):
                raise ValueError(f"{key} is not 0, 1, 2, …: positions this model cannot reproduce")
        elif key == f"{family_prefix}.embeddings.token_type_ids":
            if bool(tensor.any()):
                raise ValueError(f"{key} is not all 0: token types this model cannot reproduce")
        elif not key.startswith(f"{family_prefix}.pooler."):
            continue
        skipped.append(key)
    return skipped


def _check_convertible(model: MultiplexedModel) -> None:
    """The encoder must be the built-in post-LayerNorm one or a Hugging Face model whose
    embedding module is the model's: the two layouts a published checkpoint maps onto."""
    encoder = model.encoder
    if isinstance(encoder, TransformerEncoder):
        if model.config.norm_first:
            raise ValueError(
                "a pre-LayerNorm encoder (norm_first=True) has no published counterpart: "
                "the published encoders are post-LayerNorm (norm_first=False)"
            )
        return
    inner = getattr(encoder, "model", None)
    if (
        not isinstance(encoder, InputsEmbedsEncoder)
        or getattr(inner, "embeddings", None) is not model.embeddings
    ):
        raise ValueError(
            "published checkpoints map onto the built-in TransformerEncoder or a Hugging Face "
            "model whose embeddings are the model's embeddings; this model has "
            f"{type(encoder).__name__}"
        )


def published_config(model: MultiplexedModel) -> dict[str, Any]:
    """The config.json values of ``model`` as a published model, or a ValueError naming the
    setting the published code cannot reproduce."""
    c = model.config
    family = HEAD_FAMILIES[c.heads]
    fam = FAMILIES[family]
    classes = {task: name for name, task in fam.architectures.items()}
    if c.task not in classes:
        raise ValueError(f"the published {family} code has no {c.task!r} model")
    cls_at_first, special = _front_end(family, c.demuxing_variant, c.task)
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
    if fam.roberta_positions:
        wanted["position_offset"] = (c.position_offset == (c.pad_token_id or 0) + 1, "pad + 1")
    else:
        wanted["position_offset"] = (c.position_offset == 0, 0)
    wrong = [f"{k}={getattr(c, k)!r} (published: {v})" for k, (ok, v) in wanted.items() if not ok]
    if wrong:
        raise ValueError(f"the published {family} model cannot reproduce " + ", ".join(wrong))
    _check_convertible(model)
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


def from_published(
    checkpoint: str | Path | Mapping[str, torch.Tensor],
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    task: str | None = None,
    family: str | None = None,
    encoder: str | nn.Module = "builtin",
    new_task_heads: bool = False,
    overrides: Mapping[str, Any] | None = None,
    backend: str = "auto",
) -> MultiplexedModel:
    """A ``MultiplexedModel`` whose outputs equal the published model's.

    ``checkpoint``: a checkpoint directory (config.json + pytorch_model.bin or
    model.safetensors), a state file, or a state dict. ``config``: its config.json (a path
    or the values) when the checkpoint does not hold one. ``task`` and ``family`` default to
    the config's ``architectures`` and ``model_type``. ``encoder``: "builtin" (no extra
    dependency), "transformers" (the published Hugging Face model, needs transformers) or a
    module of that kind. ``new_task_heads``: see ``checked_published``; ``overrides``: see
    ``config_from_published``. The model is in the checkpoint's dtype, in eval mode.
    """
    from .multiplexed import MultiplexedModel

    if isinstance(checkpoint, Mapping):
        state, stored = dict(checkpoint), None
    else:
        state, stored = read_checkpoint(checkpoint)
    if isinstance(config, str | Path):
        config = json.loads(Path(config).read_text())
    values = config if config is not None else stored
    if values is None:
        raise ValueError("no published config: pass config= (the checkpoint's config.json)")
    family = published_family(values, family)
    mux_config = config_from_published(
        values, task=task, family=family, overrides=overrides, retask=new_task_heads
    )
    if encoder == "transformers":
        encoder = hf_model(values, family)
    elif encoder == "builtin":
        encoder = None
    elif not isinstance(encoder, nn.Module):
        raise ValueError(f"encoder must be 'builtin', 'transformers' or a module, got {encoder!r}")
    model = MultiplexedModel(mux_config, encoder=encoder, backend=backend)
    dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
    model.to(dtype)
    checked = checked_published(model, state, new_task_heads=new_task_heads)
    model.load_state_dict(state_from_published(model, checked), strict=True)
    return model.eval()


def to_published(
    model: MultiplexedModel, directory: str | Path | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, config.json values) that load into the published model with
    ``strict=True``; with ``directory``, also written there as pytorch_model.bin and
    config.json (``from_pretrained`` reads them)."""
    values = published_config(model)
    state = state_to_published(model)
    if directory is not None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.contiguous() for k, v in state.items()}, directory / STATE_FILES[0])
        (directory / "config.json").write_text(json.dumps(values, indent=2) + "\n")
    return state, values
