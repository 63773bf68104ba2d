"""The published DataMUX and MUX-PLMs models, transcribed as plain float64 functions.

Written here from the published code's formulas (princeton-nlp/DataMUX models/multiplexing.py;
princeton-nlp/datamux-pretraining datamux_pretraining/models/multiplexing_pretraining_*.py),
not imported from it: a published-format state dict with random weights
(``random_published_state``, the published key layout) and a forward pass over it
(``published_logits``) plus the training objective with the published random draws
(``published_losses``). The encoder is a Hugging Face BERT/RoBERTa/ELECTRA encoder written
out (``encode``), so a test can check both our built-in encoder and a real Hugging Face one.

``spec`` is the published config.json as a dict (plus ``model_type`` and ``architectures``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

F64 = torch.float64
FILLER = {"roberta": 50000, "bert": 680, "electra": 680}
CLS = {"roberta": 49923, "bert": 101, "electra": 101}
PREFIX = {"roberta": "roberta", "bert": "bert", "electra": "electra"}
CLASSES = {
    ("roberta", "sequence"): "RobertaSequenceClassificationMuxed",
    ("roberta", "token"): "RobertaTokenClassificationMuxed",
    ("bert", "sequence"): "MuxedBertForSequenceClassification",
    ("bert", "token"): "MuxedBertForTokenClassification",
    ("bert", "retrieval"): "MuxedBertForMaskedLM",
    ("electra", "sequence"): "MuxedElectraForSequenceClassification",
    ("electra", "token"): "MuxedElectraForTokenClassification",
}


def make_spec(family: str, task: str, **fields: Any) -> dict[str, Any]:
    """A small published config of ``family`` for ``task``; ``fields`` override."""
    spec: dict[str, Any] = {
        "model_type": family,
        "architectures": [CLASSES[family, task]],
        "vocab_size": 50265 if family == "roberta" else 700,
        "hidden_size": 12,
        "num_hidden_layers": 2,
        "num_attention_heads": 3,
        "intermediate_size": 20,
        "max_position_embeddings": 40,
        "type_vocab_size": 1 if family == "roberta" else 2,
        "layer_norm_eps": 1e-5 if family == "roberta" else 1e-12,
        "pad_token_id": 1 if family == "roberta" else 0,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "num_instances": 3,
        "muxing_variant": "gaussian_hadamard",
        "demuxing_variant": "index" if family == "roberta" else "index_pos",
        "gaussian_hadamard_norm": 1.0,
        "binary_hadamard_epsilon": 0.0,
        "learn_muxing": 0,
        "num_hidden_demux_layers": 3,
        "retrieval_percentage": 0.5,
        "task_loss_coeff": 0.7,
        "retrieval_loss_coeff": 0.3,
    }
    if family == "electra":
        spec["embedding_size"] = 12
    spec |= fields
    if task != "retrieval":
        labels = spec.pop("num_labels", 4)
        spec["id2label"] = {str(i): f"LABEL_{i}" for i in range(labels)}
    return spec


def num_labels(spec: dict[str, Any]) -> int:
    return len(spec.get("id2label", {}))


def task_of(spec: dict[str, Any]) -> str:
    return {v: k for k, v in CLASSES.items()}[spec["architectures"][0]][1]


# --- the random published state dict ------------------------------------------------------


def _bert_layer_keys(prefix: str, d: int, inner: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for q in ("query", "key", "value"):
        shapes |= {
            f"{prefix}attention.self.{q}.weight": (d, d),
            f"{prefix}attention.self.{q}.bias": (d,),
        }
    shapes |= {
        f"{prefix}attention.output.dense.weight": (d, d),
        f"{prefix}attention.output.dense.bias": (d,),
        f"{prefix}attention.output.LayerNorm.weight": (d,),
        f"{prefix}attention.output.LayerNorm.bias": (d,),
        f"{prefix}intermediate.dense.weight": (inner, d),
        f"{prefix}intermediate.dense.bias": (inner,),
        f"{prefix}output.dense.weight": (d, inner),
        f"{prefix}output.dense.bias": (d,),
        f"{prefix}output.LayerNorm.weight": (d,),
        f"{prefix}output.LayerNorm.bias": (d,),
    }
    return shapes


def _linear(name: str, out: int, inp: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out, inp), f"{name}.bias": (out,)}


def _norm(name: str, d: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (d,), f"{name}.bias": (d,)}


def published_shapes(spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every key of the published model's state dict and its shape (tied copies included)."""
    family, task = spec["model_type"], task_of(spec)
    fam = PREFIX[family]
    n, d, v = spec["num_instances"], spec["hidden_size"], spec["vocab_size"]
    e = spec.get("embedding_size", d)
    inner, labels = spec["intermediate_size"], num_labels(spec)
    shapes: dict[str, tuple[int, ...]] = {
        f"{fam}.embeddings.word_embeddings.weight": (v, e),
        f"{fam}.embeddings.position_embeddings.weight": (spec["max_position_embeddings"], e),
        f"{fam}.embeddings.token_type_embeddings.weight": (spec["type_vocab_size"], e),
        **_norm(f"{fam}.embeddings.LayerNorm", e),
    }
    if e != d:
        shapes |= _linear(f"{fam}.embeddings_project", d, e)
    for k in range(spec["num_hidden_layers"]):
        shapes |= _bert_layer_keys(f"{fam}.encoder.layer.{k}.", d, inner)
    mux = spec["muxing_variant"]
    shapes["instance_embedding"] = (n, d, d) if "ortho" in mux else (n, e)
    if mux == "gaussian_attention_v2":
        for name in ("muxing_attention.", "muxing_attention_2."):
            shapes |= _bert_layer_keys(name, d, inner)
    demux = spec["demuxing_variant"]
    decoder = {"decoder.weight": (v, d), "decoder.bias": (v,), "bias": (v,)}
    if family == "roberta" and demux == "index":
        shapes |= {f"retrieval_head.{k}": s for k, s in decoder.items()}
        shapes |= _linear("retrieval_head.dense", d, 2 * d) | _norm("retrieval_head.layer_norm", d)
        shapes |= _linear("demultiplexer.dense", d, 2 * d) | _norm("demultiplexer.layer_norm", d)
        if task == "sequence":
            shapes |= _linear("demultiplexer.dense_before_out_proj", d, d)
            shapes |= _linear("demultiplexer.out_proj", labels, d)
        else:
            shapes |= {
                "demultiplexer.decoder.weight": (labels, d),
                "demultiplexer.decoder.bias": (labels,),
                "demultiplexer.bias": (labels,),
            }
    elif family == "roberta":  # mlp
        for head in ("demultiplexer", "retrieval_head"):
            for i in range(n):
                shapes |= _linear(f"{head}.demux_module.dense_{i}", d, d)
                shapes |= _norm(f"{head}.demux_module.layer_norm_{i}", d)
        shapes |= _linear("demultiplexer.dense_before_out_proj", d, d)
        shapes |= _norm("demultiplexer.layernorm_presoftmax", d)
        shapes |= _linear("demultiplexer.out_proj", labels, d)
        shapes |= _linear("retrieval_head.dense_pre_vocab", d, d)
        shapes |= _norm("retrieval_head.layer_norm_pre_vocab", d)
        shapes |= {f"retrieval_head.{k}": s for k, s in decoder.items()}
    elif demux == "index":
        shapes |= _linear("demultiplexer.dense", d, 2 * d) | _norm("demultiplexer.layer_norm", d)
        shapes |= _linear("retrieval_head.dense", d, 2 * d) | _norm("retrieval_head.layer_norm", d)
        shapes |= {f"retrieval_head.{k}": s for k, s in decoder.items()}
    else:  # index_pos
        module: dict[str, tuple[int, ...]] = {"demux_instance_embedding": (n, d)}
        for k in range(1, spec["num_hidden_demux_layers"] + 1):
            module |= _linear(f"dense_{k}", d, 2 * d if k == 1 else d) | _norm(f"layer_norm_{k}", d)
        for at in ("demux_module.", "demultiplexer.demux_module.", "retrieval_head.demux_module."):
            shapes |= {at + k: s for k, s in module.items()}
        for head in ("demultiplexer", "retrieval_head"):
            shapes |= _linear(f"{head}.pre_decoder", d, d) | _norm(
                f"{head}.pre_decoder_layer_norm", d
            )
        shapes |= {
            f"retrieval_head.{k}": s for k, s in decoder.items()
        }  # BERT: bias by _tie_weights
    if family != "roberta" and task == "sequence" and family == "electra":
        shapes |= _linear("classifier.dense", d, d) | _linear("classifier.out_proj", labels, d)
    elif family != "roberta" and task != "retrieval":
        shapes |= _linear("classifier", labels, d)
    return shapes


def _low_rank(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """The published construction: P[i] = U · G_iᵀ, G_i holding H's column block i."""
    u, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=F64))
    h, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=F64))
    c = d // n
    blocks = []
    for i in range(n):
        g = torch.zeros(d, d, dtype=F64)
        g[:, i * c : (i + 1) * c] = h[:, i * c : (i + 1) * c]
        blocks.append(u @ g.T)
    return torch.stack(blocks)


def random_published_state(spec: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float64 tensors under every published key; tied and shared keys equal."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    shared: dict[str, torch.Tensor] = {}
    for key, shape in published_shapes(spec).items():
        base = key.split("demux_module.", 1)[-1] if "demux_module." in key else None
        if base is not None and base in shared:
            state[key] = shared[base]
            continue
        scale = 0.5 if key.endswith(("weight", "embedding")) else 0.2
        tensor = scale * torch.randn(shape, generator=generator, dtype=F64)
        if "LayerNorm" in key or "layer_norm" in key or "layernorm" in key:
            tensor = 1 + tensor if key.endswith("weight") else tensor
        state[key] = tensor
        if base is not None:
            shared[base] = tensor
    for head in ("retrieval_head", "demultiplexer"):
        if f"{head}.bias" in state:
            state[f"{head}.decoder.bias"] = state[f"{head}.bias"]
    if spec["model_type"] == "bert":  # its output embeddings: Hugging Face ties them
        state["retrieval_head.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    mux = spec["muxing_variant"]
    n, d = spec["num_instances"], spec["hidden_size"]
    if mux == "random_ortho":
        state["instance_embedding"] = torch.stack(
            [
                torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=F64))[0]
                for _ in range(n)
            ]
        )
    elif mux == "random_ortho_low_rank":
        state["instance_embedding"] = _low_rank(n, d, generator)
    elif mux == "binary_hadamard":
        state["instance_embedding"] = _binary(n, state["instance_embedding"].shape[1], spec)
    return state


def _binary(n: int, d: int, spec: dict[str, Any]) -> torch.Tensor:
    """The published binary chunks with overlap epsilon (integer chunk bounds)."""
    chunk = d // n
    overlap = spec["binary_hadamard_epsilon"] / 2 * chunk
    vectors = torch.zeros(n, d, dtype=F64)
    for i in range(n):
        start = i * chunk if i == 0 else int(i * chunk - overlap)
        end = d if i == n - 1 else int((i + 1) * chunk + overlap)
        vectors[i, start:end] = 1
    return vectors


# --- the forward pass ----------------------------------------------------------------------


def _ln(x, state, name, eps):
    return F.layer_norm(x, x.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"], eps)


def _lin(x, state, name):
    return F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"])


def embed(spec, state, ids=None, vectors=None):
    """The Hugging Face embedding module: LN(word or vectors + position + type 0)."""
    family, pad = spec["model_type"], spec["pad_token_id"]
    fam = PREFIX[family]
    x = state[f"{fam}.embeddings.word_embeddings.weight"][ids] if ids is not None else vectors
    length = x.shape[-2]
    if family != "roberta":
        positions = torch.arange(length)
    elif ids is not None:  # RoBERTa: pad + running count of real tokens, pads at pad
        real = (ids != pad).long()
        positions = torch.cumsum(real, dim=1) * real + pad
    else:
        positions = pad + 1 + torch.arange(length)
    x = x + state[f"{fam}.embeddings.position_embeddings.weight"][positions]
    x = x + state[f"{fam}.embeddings.token_type_embeddings.weight"][0]
    return _ln(x, state, f"{fam}.embeddings.LayerNorm", spec["layer_norm_eps"])


def bert_layer(spec, state, prefix, x, mask=None):
    """A post-LayerNorm BERT layer; ``mask`` (rows, L) with 0 at padding, added as the
    lowest float to the scores, as Hugging Face extends it."""
    rows, length, d = x.shape
    heads = spec["num_attention_heads"]
    size = d // heads

    def split(t):
        return t.view(rows, length, heads, size).transpose(1, 2)

    q, k, v = (
        split(_lin(x, state, f"{prefix}attention.self.{n}")) for n in ("query", "key", "value")
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(size)
    if mask is not None:
        scores = scores + (1.0 - mask.to(F64))[:, None, None, :] * torch.finfo(F64).min
    context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(rows, length, d)
    eps = spec["layer_norm_eps"]
    a = _ln(_lin(context, state, f"{prefix}attention.output.dense") + x, state,
            f"{prefix}attention.output.LayerNorm", eps)  # fmt: skip
    inner = F.gelu(_lin(a, state, f"{prefix}intermediate.dense"))
    return _ln(
        _lin(inner, state, f"{prefix}output.dense") + a, state, f"{prefix}output.LayerNorm", eps
    )


def encode(spec, state, mixed):
    """The encoder called on inputs_embeds with no mask: its second embedding pass, the
    ELECTRA projection, the layers."""
    fam = PREFIX[spec["model_type"]]
    x = embed(spec, state, vectors=mixed)
    if f"{fam}.embeddings_project.weight" in state:
        x = _lin(x, state, f"{fam}.embeddings_project")
    for k in range(spec["num_hidden_layers"]):
        x = bert_layer(spec, state, f"{fam}.encoder.layer.{k}.", x)
    return x


def front(spec, ids):
    """(ids the embeddings see, number of leading special positions)."""
    family, task = spec["model_type"], task_of(spec)
    n, demux = spec["num_instances"], spec["demuxing_variant"]
    ids = ids.clone()
    if demux == "index":
        base = spec["vocab_size"] if family == "roberta" else 680
        block = torch.full((n, n + 1), FILLER[family])
        block[torch.arange(n), torch.arange(n)] = base - (torch.arange(n) + 2)
        block[:, n] = CLS[family]
        return torch.cat([block.repeat(ids.shape[0] // n, 1), ids], dim=1), n + 1
    if demux == "mlp":
        ids[:, 0] = CLS[family]
        return ids, 1 if task == "sequence" else 0
    if family == "bert" or task == "retrieval":
        ids[:, 0] = CLS[family]
        return ids, 0
    return ids, 1 if task == "sequence" else 0


def multiplex(spec, state, e, mask):
    """The published muxing of per-instance embeddings e (B, L, e) → (B', L, e)."""
    n, mux = spec["num_instances"], spec["muxing_variant"]
    batch, length, width = e.shape
    grouped = e.view(batch // n, n, length, width)
    p = state["instance_embedding"]
    if "ortho" in mux:
        return torch.einsum("nij,gntj->gti", p, grouped) / math.sqrt(n)
    if mux != "gaussian_attention_v2":
        return (grouped * p[None, :, None, :]).mean(dim=1)
    a = bert_layer(spec, state, "muxing_attention.", e, mask) + e
    m = a.view(batch // n, n, length, width) * p[None, :, None, :]
    across = m.permute(0, 2, 1, 3).reshape(-1, n, width)
    instance_mask = None
    if task_of(spec) == "sequence":
        instance_mask = mask.view(batch // n, n, length).permute(0, 2, 1).reshape(-1, n)
    b = bert_layer(spec, state, "muxing_attention_2.", across, instance_mask)
    b = b.view(batch // n, length, n, width).permute(0, 2, 1, 3)
    return (b + m).mean(dim=1)


def hidden_states(spec, state, ids, mask=None):
    """(encoder output (B', L', d), ids the embeddings saw, special positions)."""
    fronted, special = front(spec, ids)
    if mask is not None and spec["demuxing_variant"] == "index":
        mask = F.pad(mask, (spec["num_instances"] + 1, 0), value=1)
    mixed = multiplex(spec, state, embed(spec, state, ids=fronted), mask)
    return encode(spec, state, mixed), fronted, special


def _index_demux(state, head, h, n, eps, positions=None):
    """LN(gelu(dense([h[g,i]; h[g,t]]))) for every i and t: (B'·N, L', d)."""
    groups, length, d = h.shape
    index_part = h[:, :n, None, :].expand(groups, n, length, d)
    rows = h[:, None].expand(groups, n, length, d)
    x = torch.cat([index_part, rows], dim=-1).reshape(groups * n, length, 2 * d)
    return _ln(F.gelu(_lin(x, state, f"{head}.dense")), state, f"{head}.layer_norm", eps)


def _index_pos_pairs(state, h, n, module):
    groups, length, d = h.shape
    keys = state[f"{module}.demux_instance_embedding"][None, :, None, :].expand(
        groups, n, length, d
    )
    rows = h[:, None].expand(groups, n, length, d)
    return torch.cat([keys, rows], dim=-1).reshape(groups * n, length, 2 * d)


def _pre_decode(state, head, x, eps, residual):
    y = _ln(
        F.gelu(_lin(x, state, f"{head}.pre_decoder")), state, f"{head}.pre_decoder_layer_norm", eps
    )
    return y + x if residual else y


def index_pos_task(spec, state, h):
    """The task path: dense_1 then dropout (no LayerNorm), residual layers 2 … K − 1."""
    n, eps = spec["num_instances"], spec["layer_norm_eps"]
    module = "demultiplexer.demux_module"
    x = F.gelu(_lin(_index_pos_pairs(state, h, n, module), state, f"{module}.dense_1"))
    for k in range(2, spec["num_hidden_demux_layers"]):
        x = F.gelu(_lin(x, state, f"{module}.dense_{k}")) + x
    return _pre_decode(state, "demultiplexer", x, eps, residual=True)


def index_pos_retrieval(spec, state, pairs):
    """The retrieval path on [k; h] rows: ELECTRA residual over every layer, BERT two plain."""
    eps, module = spec["layer_norm_eps"], "retrieval_head.demux_module"
    electra = spec["model_type"] == "electra"
    x = pairs
    last = spec["num_hidden_demux_layers"] if electra else 2
    for k in range(1, last + 1):
        y = _ln(
            F.gelu(_lin(x, state, f"{module}.dense_{k}")), state, f"{module}.layer_norm_{k}", eps
        )
        x = y + x if electra and k > 1 else y
    x = _pre_decode(state, "retrieval_head", x, eps, residual=electra)
    return _lin(x, state, "retrieval_head.decoder")


def _mlp_branches(state, head, x, n, eps):
    """Branch i: LN_i(gelu(dense_i(x))) → (…, N, …) stacked on a new dim 1."""
    out = [
        _ln(F.gelu(_lin(x, state, f"{head}.demux_module.dense_{i}")), state,
            f"{head}.demux_module.layer_norm_{i}", eps)
        for i in range(n)
    ]  # fmt: skip
    return torch.stack(out, dim=1)


def published_logits(spec, state, ids, mask=None):
    """The task's logits as the published model's loss sees them: (B, C) for a sequence
    task; (B, L, C) for a token task (the index prefix sliced off); (B, L, V) for the masked
    LM (every instance's retrieval logits)."""
    family, task = spec["model_type"], task_of(spec)
    n, eps, demux = spec["num_instances"], spec["layer_norm_eps"], spec["demuxing_variant"]
    h, _, _ = hidden_states(spec, state, ids, mask)
    if task == "retrieval":
        return index_pos_retrieval(
            spec, state, _index_pos_pairs(state, h, n, "retrieval_head.demux_module")
        )
    if family == "roberta" and demux == "index":
        u = _index_demux(state, "demultiplexer", h, n, eps)
        if task == "sequence":
            u = u[:, n]
            x = F.gelu(_lin(u, state, "demultiplexer.dense_before_out_proj"))
            return _lin(x, state, "demultiplexer.out_proj")
        return F.linear(u, state["demultiplexer.decoder.weight"], state["demultiplexer.bias"])[
            :, n + 1 :
        ]
    if family == "roberta":  # mlp
        source = h[:, 0] if task == "sequence" else h
        u = _mlp_branches(state, "demultiplexer", source, n, eps).flatten(0, 1)
        x = _ln(F.gelu(_lin(u, state, "demultiplexer.dense_before_out_proj")), state,
                "demultiplexer.layernorm_presoftmax", eps)  # fmt: skip
        return _lin(x, state, "demultiplexer.out_proj")
    if demux == "index":
        u = _index_demux(state, "demultiplexer", h, n, eps)
        u = u[:, n] if task == "sequence" else u[:, n + 1 :]
    else:
        u = index_pos_task(spec, state, h[:, :1] if task == "sequence" else h)
        u = u[:, 0] if task == "sequence" else u
    if family == "electra" and task == "sequence":
        return _lin(F.gelu(_lin(u, state, "classifier.dense")), state, "classifier.out_proj")
    return _lin(u, state, "classifier")


def published_retrieval_logits(spec, state, h, instance_labels):
    """The retrieval head for instance j[g, t] at each position: (B', L', V)."""
    family, n, eps = spec["model_type"], spec["num_instances"], spec["layer_norm_eps"]
    demux = spec["demuxing_variant"]
    groups, length, d = h.shape
    picked = instance_labels[:, :, None, None].expand(groups, length, 1, d)
    if family == "roberta" and demux == "mlp":
        u = _mlp_branches(state, "retrieval_head", h, n, eps)  # (B', N, L', d)
        u = u.permute(0, 2, 1, 3).gather(2, picked).squeeze(2)
        x = _ln(F.gelu(_lin(u, state, "retrieval_head.dense_pre_vocab")), state,
                "retrieval_head.layer_norm_pre_vocab", eps)  # fmt: skip
        return F.linear(x, state["retrieval_head.decoder.weight"], state["retrieval_head.bias"])
    if demux == "index":
        index_rows = h[:, :n].gather(1, instance_labels[:, :, None].expand(groups, length, d))
        x = _lin(torch.cat([index_rows, h], dim=-1), state, "retrieval_head.dense")
        x = _ln(F.gelu(x), state, "retrieval_head.layer_norm", eps)
        return F.linear(x, state["retrieval_head.decoder.weight"], state["retrieval_head.bias"])
    keys = state["retrieval_head.demux_module.demux_instance_embedding"][instance_labels]
    return index_pos_retrieval(spec, state, torch.cat([keys, h], dim=-1))


def published_losses(spec, state, ids, labels, mask=None, generator=None):
    """(loss, task loss, retrieval loss) with the published draws on ``generator``: the
    instance of every position after the special ones (randint), then the Bernoulli wipe."""
    family, task = spec["model_type"], task_of(spec)
    n = spec["num_instances"]
    logits = published_logits(spec, state, ids, mask)
    h, fronted, special = hidden_states(spec, state, ids, mask)
    groups, length, _ = h.shape
    instance_labels = torch.zeros(groups, length, dtype=torch.long)
    instance_labels[:, special:] = torch.randint(n, (groups, length - special), generator=generator)
    by_position = fronted.view(groups, n, length).permute(0, 2, 1)
    targets = by_position.gather(2, instance_labels[:, :, None]).squeeze(2)
    targets[:, :special] = -100
    if task != "retrieval":  # the masked LM keeps pads and wipes nothing
        pads = targets == spec["pad_token_id"]
        keep = torch.full((groups, length), 1 - spec["retrieval_percentage"])
        wipe = torch.bernoulli(keep, generator=generator)
        targets[pads | (~pads & wipe.bool())] = -100
    retrieval_logits = published_retrieval_logits(spec, state, h, instance_labels)
    retrieval = F.cross_entropy(retrieval_logits.reshape(-1, spec["vocab_size"]), targets.view(-1))
    if task == "token" and family == "roberta" and mask is not None:
        labels = torch.where(mask == 1, labels, torch.full_like(labels, -100))
    if logits.shape[-1] == 1:
        task_loss = F.mse_loss(logits.view(-1), labels.view(-1).to(F64))
    else:
        task_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    loss = spec["task_loss_coeff"] * task_loss + spec["retrieval_loss_coeff"] * retrieval
    return loss, task_loss, retrieval
