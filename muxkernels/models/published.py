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

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .encoder import InputsEmbedsEncoder, TransformerEncoder
from .published_config import (
    FAMILIES,
    HEAD_FAMILIES,
    config_from_published,
    hf_model,
    published_config,
    published_family,
)

if TYPE_CHECKING:
    from .multiplexed import MultiplexedModel

STATE_FILES = ("pytorch_model.bin", "model.safetensors")

# Hugging Face BERT layer → nn.TransformerEncoderLayer (besides query/key/value → in_proj)
LAYER_NAMES = {
    "attention.output.dense.": "self_attn.out_proj.",
    "attention.output.LayerNorm.": "norm1.",
    "intermediate.dense.": "linear1.",
    "output.dense.": "linear2.",
    "output.LayerNorm.": "norm2.",
}
QKV = ("query", "key", "value")


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
    _check_convertible(model)
    state = state_to_published(model)
    if directory is not None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.contiguous() for k, v in state.items()}, directory / STATE_FILES[0])
        (directory / "config.json").write_text(json.dumps(values, indent=2) + "\n")
    return state, values
