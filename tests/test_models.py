"""muxkernels.models: the multiplexed model wrapper against the published forward pass.

The published DataMUX forward (docs/design.md §1-3) is transcribed below in plain PyTorch, in
the published code's own style (prefix block repeated per group, view/expand/cat, rows
g·N+i from viewing (B', N, …) as (B'·N, …)), on a model whose every parameter is random.
Everything runs in float64 and on the reference backend.
"""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import BACKEND, assert_close

import muxkernels
from muxkernels.models import (
    InputsEmbedsEncoder,
    MultiplexedModel,
    MuxConfig,
    TransformerEncoder,
    as_encoder,
    hf_encoder,
    retrieval_loss,
    retrieval_targets,
    train_retrieval,
)

N, D, L, GROUPS, LABELS, VOCAB = 3, 8, 5, 2, 4, 24
FILLER, CLS = 3, 4  # explicit special ids, as the published 50000 / 49923 are for RoBERTa
EPS = 1e-3  # not the default, so a LayerNorm that ignored it would show
OFFSET = 2  # RoBERTa's padding_idx + 1
F64 = torch.float64


def config(**overrides) -> MuxConfig:
    values = dict(
        vocab_size=VOCAB,
        num_instances=N,
        hidden_size=D,
        num_layers=1,
        num_heads=2,
        intermediate_size=16,
        max_position_embeddings=L + N + 1 + OFFSET,
        position_offset=OFFSET,
        layer_norm_eps=EPS,
        filler_id=FILLER,
        cls_id=CLS,
        gaussian_hadamard_norm=20.0,
    )
    return MuxConfig(**(values | overrides))


def randomized(model: MultiplexedModel, seed: int = 0) -> MultiplexedModel:
    """The model in float64, eval mode, every parameter (transforms included) random."""
    generator = torch.Generator().manual_seed(seed)
    model.double().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=F64))
    return model


def token_ids(batch: int = GROUPS * N, length: int = L, seed: int = 1) -> torch.Tensor:
    """Content ids below every special id."""
    return torch.randint(
        5, VOCAB - N - 2, (batch, length), generator=torch.Generator().manual_seed(seed)
    )


# --- the published forward, transcribed --------------------------------------------------


def published_prefixed(ids: torch.Tensor, n: int) -> torch.Tensor:
    """[filler…, V−(i+2) at i, …filler, CLS] in front of every row of instance i."""
    prefix = torch.full((n, n), FILLER)
    prefix[torch.arange(n), torch.arange(n)] = -(torch.arange(n) + 2) + VOCAB
    prefix = torch.cat([prefix, torch.full((n, 1), CLS)], dim=1)
    return torch.cat([prefix.repeat(ids.shape[0] // n, 1), ids], dim=1)


def published_embed(state, ids=None, inputs_embeds=None) -> torch.Tensor:
    """The embedding module: LN(word[ids] or inputs_embeds + pos[offset + t] + type[0])."""
    x = state["embeddings.word_embeddings.weight"][ids] if ids is not None else inputs_embeds
    positions = OFFSET + torch.arange(x.shape[-2])
    x = x + state["embeddings.position_embeddings.weight"][positions]
    x = x + state["embeddings.token_type_embeddings.weight"][0]
    w, b = state["embeddings.LayerNorm.weight"], state["embeddings.LayerNorm.bias"]
    return F.layer_norm(x, (D,), w, b, EPS)


def published_mux(embedding_output: torch.Tensor, instance_embedding: torch.Tensor, n: int):
    groups, length = embedding_output.shape[0] // n, embedding_output.shape[1]
    grouped = embedding_output.view(groups, n, length, D)
    if instance_embedding.dim() == 3:  # random_ortho
        mixed = torch.matmul(instance_embedding, grouped.permute(0, 1, 3, 2)).permute(0, 1, 3, 2)
        return mixed.sum(dim=1) / math.sqrt(n)
    return (grouped * instance_embedding.unsqueeze(1).unsqueeze(0)).mean(dim=1)


def published_hidden(model, ids, embed_twice=True) -> torch.Tensor:
    state = model.state_dict()
    x = published_embed(state, ids=published_prefixed(ids, N))
    x = published_mux(x, state["multiplexer.instance_embedding"], N)
    if embed_twice:
        x = published_embed(state, inputs_embeds=x)
    return model.encoder(x, None)  # the published encoder call passes attention_mask=None


def dense_gelu_ln(x, state, head):
    x = F.gelu(F.linear(x, state[f"{head}.dense.weight"], state[f"{head}.dense.bias"]))
    w, b = state[f"{head}.layer_norm.weight"], state[f"{head}.layer_norm.bias"]
    return F.layer_norm(x, (D,), w, b, EPS)


def published_token_demux(features, state, head):
    """Every instance at every position, rows g·N+i: (B'·N, L', d)."""
    batch, length, _ = features.shape
    positional = features[:, :N].unsqueeze(2).expand(batch, N, length, D)
    expanded = features.unsqueeze(1).expand(batch, N, length, D)
    both = torch.cat([positional, expanded], dim=3).view(-1, length, 2 * D)
    return dense_gelu_ln(both, state, head)


def published_sequence_logits(features, state):
    positional = features[:, :N].reshape(-1, D)
    x = features[:, N].unsqueeze(1).repeat(1, N, 1).view(-1, D)
    u = dense_gelu_ln(torch.cat([positional, x], dim=1), state, "demultiplexer")
    x = F.gelu(F.linear(u, state["demultiplexer.dense_before_out_proj.weight"],
                        state["demultiplexer.dense_before_out_proj.bias"]))  # fmt: skip
    return F.linear(x, state["demultiplexer.out_proj.weight"], state["demultiplexer.out_proj.bias"])


def published_selected_logits(features, instance_labels, state):
    batch, length, _ = features.shape
    rows = torch.arange(batch).unsqueeze(1).repeat(1, length)
    positional = features[:, :N][rows, instance_labels]
    u = dense_gelu_ln(torch.cat([positional, features], dim=2), state, "retrieval_head")
    return F.linear(u, state["retrieval_head.decoder.weight"], state["retrieval_head.bias"])


def decode(u, state, head):
    return F.linear(u, state[f"{head}.decoder.weight"], state[f"{head}.bias"])


# --- parity ------------------------------------------------------------------------------

PUBLISHED_NAMES = {
    "retrieval_head": ["dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias",
                       "decoder.weight", "decoder.bias", "bias"],
    "sequence": ["dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias",
                 "dense_before_out_proj.weight", "dense_before_out_proj.bias",
                 "out_proj.weight", "out_proj.bias"],
    "token": ["dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias",
              "decoder.weight", "decoder.bias", "bias"],
}  # fmt: skip
EMBEDDING_NAMES = [
    "word_embeddings.weight",
    "position_embeddings.weight",
    "token_type_embeddings.weight",
    "LayerNorm.weight",
    "LayerNorm.bias",
]


@pytest.mark.parametrize("task", ["retrieval", "sequence", "token"])
def test_state_dict_uses_published_names(task):
    model = MultiplexedModel(config(task=task, num_labels=LABELS))
    expected = {f"embeddings.{k}" for k in EMBEDDING_NAMES} | {"multiplexer.instance_embedding"}
    expected |= {f"retrieval_head.{k}" for k in PUBLISHED_NAMES["retrieval_head"]}
    if task != "retrieval":
        expected |= {f"demultiplexer.{k}" for k in PUBLISHED_NAMES[task]}
    assert {k for k in model.state_dict() if not k.startswith("encoder.")} == expected


@pytest.mark.parametrize("variant", ["gaussian_hadamard", "binary_hadamard", "random_ortho"])
@pytest.mark.parametrize("embed_twice", [True, False], ids=["embed-twice", "embed-once"])
def test_retrieval_matches_published(variant, embed_twice):
    model = randomized(MultiplexedModel(config(muxing_variant=variant, embed_twice=embed_twice)))
    ids = token_ids()
    hidden = published_hidden(model, ids, embed_twice)
    state = model.state_dict()
    index = torch.randint(0, N, (GROUPS, L), generator=torch.Generator().manual_seed(3))
    selected = published_selected_logits(hidden, F.pad(index, (N + 1, 0)), state)[:, N + 1 :]
    torch.testing.assert_close(model.retrieve(ids, index), selected)
    every = decode(published_token_demux(hidden, state, "retrieval_head"), state, "retrieval_head")
    torch.testing.assert_close(model(ids), every[:, N + 1 :])


def test_classification_heads_match_published():
    ids = token_ids()
    for task in ("sequence", "token"):
        model = randomized(MultiplexedModel(config(task=task, num_labels=LABELS)))
        hidden, state = published_hidden(model, ids), model.state_dict()
        if task == "sequence":
            expected = published_sequence_logits(hidden, state)
        else:
            u = published_token_demux(hidden, state, "demultiplexer")
            expected = decode(u, state, "demultiplexer")[:, N + 1 :]
        torch.testing.assert_close(model(ids), expected)


def test_front_end_matches_fused_embed_mux_op():
    """The wrapper's embed → mux → embed equals the public fused front-end op."""
    model = randomized(MultiplexedModel(config()))
    prefixed = published_prefixed(token_ids(), N)
    emb = model.embeddings
    positions = OFFSET + torch.arange(prefixed.shape[1])
    fused = muxkernels.embed_mux(
        prefixed,
        emb.word_embeddings.weight,
        emb.position_embeddings.weight,
        emb.token_type_embeddings.weight,
        emb.LayerNorm.weight,
        emb.LayerNorm.bias,
        model.multiplexer.instance_embedding,
        position_ids=positions,
        mixed_position_ids=positions,
        eps=EPS,
    )
    unfused = emb(inputs_embeds=model.multiplexer(emb(input_ids=prefixed)))
    torch.testing.assert_close(unfused, fused)


# --- shapes, row order, masks, padding ---------------------------------------------------


@pytest.mark.parametrize(
    ("task", "shape"),
    [("retrieval", (GROUPS * N, L, VOCAB)), ("sequence", (GROUPS * N, LABELS)),
     ("token", (GROUPS * N, L, LABELS))],
)  # fmt: skip
def test_output_shapes_and_row_order(task, shape):
    """Row g·N+i depends only on group g: running each group alone gives the same rows."""
    model = randomized(MultiplexedModel(config(task=task, num_labels=LABELS)))
    ids = token_ids()
    out = model(ids)
    assert out.shape == shape
    for g in range(GROUPS):
        rows = slice(g * N, (g + 1) * N)
        torch.testing.assert_close(out[rows], model(ids[rows]))


class RecordingEncoder(torch.nn.Module):
    """An encoder that adds a linear map and records the mask it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(D, D)
        self.masks: list[torch.Tensor | None] = []

    def forward(self, hidden, attention_mask=None):
        self.masks.append(attention_mask)
        return hidden + self.linear(hidden)


def test_attention_mask_off_is_published_on_is_group_union():
    ids, mask = token_ids(), torch.ones(GROUPS * N, L, dtype=torch.long)
    mask[:N, -2:] = 0  # group 0: every instance pads its last two positions
    mask[N, -1:] = 0  # group 1: only instance 0 pads, the others keep the position
    off = randomized(MultiplexedModel(config(use_attention_mask=False), encoder=RecordingEncoder()))
    torch.testing.assert_close(off(ids, mask), off(ids))
    assert off.encoder.masks == [None, None]
    on = randomized(MultiplexedModel(config(use_attention_mask=True), encoder=RecordingEncoder()))
    on(ids, mask)
    expected = torch.ones(GROUPS, N + 1 + L, dtype=torch.long)
    expected[0, -2:] = 0
    torch.testing.assert_close(on.encoder.masks[0], expected)


def test_builtin_encoder_uses_the_mask():
    model = randomized(MultiplexedModel(config(use_attention_mask=True)))
    ids, mask = token_ids(), torch.ones(GROUPS * N, L, dtype=torch.long)
    mask[:N, -2:] = 0
    masked, unmasked = model(ids, mask), model(ids)
    torch.testing.assert_close(masked[N:], unmasked[N:])  # group 1 has no padding
    assert not torch.allclose(masked[:N, :-2], unmasked[:N, :-2])


def test_partial_batch_is_an_error_by_default():
    model = MultiplexedModel(config())
    with pytest.raises(ValueError, match=r"batch size 7, not a multiple of num_instances=3.*pad"):
        model(token_ids(7))


@pytest.mark.parametrize("task", ["retrieval", "sequence", "token"])
def test_pad_fills_the_last_group_and_drops_its_outputs(task):
    model = randomized(MultiplexedModel(config(pad=True, task=task, num_labels=LABELS)))
    ids = token_ids(7)
    out = model(ids)
    assert out.shape[0] == 7
    torch.testing.assert_close(out[:6], model(ids[:6]))
    torch.testing.assert_close(out[6:], model(ids[[6, 6, 6]])[:1])
    index = torch.zeros(3, L, dtype=torch.long)
    assert model.retrieve(ids, index).shape == (3, L, VOCAB)


def test_retrieve_checks_instance_index_shape():
    model = MultiplexedModel(config())
    with pytest.raises(ValueError, match="instance_index must have shape"):
        model.retrieve(token_ids(), torch.zeros(GROUPS, L + N + 1, dtype=torch.long))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"task": "ner"}, "task must be one of"),
        ({"task": "sequence"}, "needs num_labels"),
        ({"cls_id": FILLER}, "distinct filler and cls"),
        ({"index_ids": [1, 2]}, "index_ids must hold num_instances=3 ids, got 2"),
        ({"filler_id": VOCAB}, r"must lie in \[0, vocab_size"),
    ],
)
def test_config_rejects(overrides, match):
    with pytest.raises(ValueError, match=match):
        config(**overrides)


def test_a_passed_mask_is_never_silently_ignored():
    model = MultiplexedModel(config())
    with pytest.raises(ValueError, match="use_attention_mask is None: set it to True"):
        model(token_ids(), torch.ones(GROUPS * N, L, dtype=torch.long))


def test_config_defaults_are_the_published_ones():
    c = MuxConfig(vocab_size=50265, num_instances=N)
    assert c.index_ids == muxkernels.roberta_index_ids(50265, N) == [50263, 50262, 50261]
    assert (c.filler_id, c.cls_id) == (50000, 49923)
    assert (c.task_loss_coeff, c.retrieval_loss_coeff, c.retrieval_percentage) == (0.9, 0.1, 1)
    with pytest.raises(ValueError, match="filler 50000 and cls 49923 are the published"):
        MuxConfig(vocab_size=VOCAB, num_instances=N)


# --- encoders ------------------------------------------------------------------------------


class FakeHFModel(torch.nn.Module):
    """A Hugging Face style model: takes inputs_embeds, returns last_hidden_state."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
        return SimpleNamespace(last_hidden_state=self.inner(inputs_embeds, attention_mask))


def test_inputs_embeds_encoder_is_wrapped_and_matches():
    inner = TransformerEncoder(D, 1, 2, 16, layer_norm_eps=EPS).double().eval()
    hf = MultiplexedModel(config(use_attention_mask=True), encoder=FakeHFModel(inner))
    assert isinstance(hf.encoder, InputsEmbedsEncoder)
    # a Hugging Face style model embeds inputs_embeds itself: the wrapper skips its own pass
    plain = MultiplexedModel(config(use_attention_mask=True, embed_twice=False), encoder=inner)
    assert as_encoder(inner) is inner
    hf = randomized(hf)
    plain.double().eval().load_state_dict(
        {k.replace("encoder.model.inner.", "encoder."): v for k, v in hf.state_dict().items()}
    )
    ids, mask = token_ids(), torch.ones(GROUPS * N, L, dtype=torch.long)
    mask[:N, -1] = 0
    torch.testing.assert_close(hf(ids, mask), plain(ids, mask))


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="installed")
def test_hf_encoder_without_transformers_says_what_to_install():
    with pytest.raises(ImportError, match="pip install transformers"):
        hf_encoder("roberta-base")


def test_embeddings_take_exactly_one_input():
    emb = MultiplexedModel(config()).embeddings
    with pytest.raises(ValueError, match="exactly one"):
        emb()


# --- checkpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["retrieval", "token"])
def test_save_load_round_trip(tmp_path, task):
    model = randomized(MultiplexedModel(config(task=task, num_labels=LABELS)))
    path = tmp_path / "mux.pt"
    model.save(path)
    loaded = MultiplexedModel.load(path).eval()
    assert loaded.config == model.config
    assert loaded.retrieval_head.bias is loaded.retrieval_head.decoder.bias
    ids = token_ids()
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


def test_save_load_with_a_custom_encoder(tmp_path):
    model = randomized(MultiplexedModel(config(), encoder=RecordingEncoder()))
    model.save(tmp_path / "mux.pt")
    loaded = MultiplexedModel.load(tmp_path / "mux.pt", encoder=RecordingEncoder()).eval()
    torch.testing.assert_close(loaded(token_ids()), model(token_ids()), rtol=0, atol=0)


def test_load_rejects_other_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"not a muxkernels\.models\.MultiplexedModel/1"):
        MultiplexedModel.load(tmp_path / "other.pt")


# --- the retrieval warm-up -------------------------------------------------------------------


def test_retrieval_targets_pick_instance_j_of_group_g():
    ids, index = token_ids(), torch.tensor([[0, 1, 2, 0, 1], [2, 2, 1, 0, 0]])
    expected = torch.tensor([[ids[g * N + index[g, t], t] for t in range(L)] for g in range(2)])
    torch.testing.assert_close(retrieval_targets(ids, index), expected)


def test_short_training_lowers_the_loss():
    torch.manual_seed(0)
    model = MultiplexedModel(
        MuxConfig(
            vocab_size=16,
            num_instances=2,
            hidden_size=16,
            intermediate_size=32,
            filler_id=15,
            cls_id=12,
        )
    )
    generator = torch.Generator().manual_seed(0)
    losses = train_retrieval(model, steps=40, groups=8, length=L, lr=1e-2, generator=generator)
    assert not model.training
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, losses
    ids = torch.randint(0, 10, (4, L), generator=generator)
    assert torch.isfinite(retrieval_loss(model, ids, generator))


# --- on a CUDA device (backend "auto": the kernels where they exist) ------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("n", [2, 10])
def test_cuda_model_matches_cpu_reference(n):
    """The benchmark width (d=768, L=128) on CUDA against the same model on the CPU."""
    torch.manual_seed(n)
    cfg = MuxConfig(
        vocab_size=1000,
        num_instances=n,
        filler_id=999,
        cls_id=998 - n,
        hidden_size=768,
        num_layers=2,
        num_heads=12,
        intermediate_size=3072,
        gaussian_hadamard_norm=20.0,
        use_attention_mask=True,
        task="token",
        num_labels=9,
    )
    model = MultiplexedModel(cfg).eval()
    ids = torch.randint(0, 900, (4 * n, 128), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[:n, -7:] = 0
    index = torch.randint(0, n, (4, 128), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = (model(ids, mask), model.retrieve(ids, index, mask))
        model.cuda()
        got = (
            model(ids.cuda(), mask.cuda()),
            model.retrieve(ids.cuda(), index.cuda(), mask.cuda()),
        )
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e, BACKEND)


@pytest.mark.gpu
def test_cuda_training_lowers_the_loss():
    torch.manual_seed(0)
    model = MultiplexedModel(MuxConfig(70, 4, filler_id=69, cls_id=64)).cuda()
    generator = torch.Generator().manual_seed(0)
    losses = train_retrieval(model, steps=60, groups=32, length=16, lr=1e-2, generator=generator)
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
