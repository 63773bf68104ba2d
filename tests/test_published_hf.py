"""Published checkpoints with Hugging Face encoders (tiny random RobertaModel, BertModel,
ElectraModel): the same outputs as the published model, the published encoder keys, and a
Hugging Face encoder wired right by default."""

from __future__ import annotations

import pytest
import torch
from helpers import REFERENCE, assert_close
from published_reference import make_spec, published_logits, random_published_state

from muxkernels.models import InputsEmbedsEncoder, MultiplexedModel, MuxConfig
from muxkernels.models.published import to_published
from muxkernels.models.published_config import hf_model

transformers = pytest.importorskip("transformers")

CASES = [
    ("roberta", "index", "token", "gaussian_hadamard", {}),
    ("roberta", "mlp", "sequence", "random_ortho", {}),
    ("bert", "index_pos", "sequence", "gaussian_attention_v2", {}),
    ("bert", "index_pos", "retrieval", "random_ortho_low_rank", {}),
    ("electra", "index_pos", "token", "gaussian_hadamard", {"embedding_size": 8}),
    ("electra", "index", "sequence", "binary_hadamard", {}),
]


def spec_of(case):
    family, demux, task, mux, extra = case
    return make_spec(family, task, demuxing_variant=demux, muxing_variant=mux, **extra)


def padded_batch(spec):
    n, pad = spec["num_instances"], spec["pad_token_id"]
    low, high = (3, 1000) if spec["model_type"] == "roberta" else (110, 600)
    ids = torch.randint(low, high, (2 * n, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 3:] = 0
    mask[n + 1, 5:] = 0
    return ids.masked_fill(mask == 0, pad), mask


@pytest.mark.parametrize("case", CASES, ids=["-".join(c[:4]) for c in CASES])
def test_hugging_face_encoder_gives_the_published_outputs(case):
    spec = spec_of(case)
    state = random_published_state(spec)
    model = MultiplexedModel.from_published(state, spec, encoder="transformers")
    assert isinstance(model.encoder.model, transformers.PreTrainedModel)
    assert model.embeddings is model.encoder.model.embeddings
    ids, mask = padded_batch(spec)
    expected = published_logits(spec, state, ids, mask)
    assert_close(model(ids, mask), expected, REFERENCE)
    builtin = MultiplexedModel.from_published(state, spec)
    assert_close(builtin(ids, mask), expected, REFERENCE)


@pytest.mark.parametrize("family", ["roberta", "bert", "electra"])
def test_published_encoder_keys_load_strictly_into_hugging_face_models(family):
    """to_published of the built-in encoder gives the real Hugging Face layout, key for key."""
    task = "sequence"
    spec = make_spec(family, task, **({"embedding_size": 8} if family == "electra" else {}))
    model = MultiplexedModel.from_published(random_published_state(spec), spec)
    state, values = to_published(model)
    hf = hf_model(values, family).double()
    encoder_state = {k[len(family) + 1 :]: v for k, v in state.items() if k.startswith(family)}
    hf.load_state_dict(encoder_state, strict=True)


def tiny(kind: str, **fields):
    config_type = {"roberta": "RobertaConfig", "bert": "BertConfig", "electra": "ElectraConfig"}
    sizes = dict(vocab_size=60, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=16, max_position_embeddings=32)  # fmt: skip
    config = getattr(transformers, config_type[kind])(**(sizes | fields))
    model = getattr(transformers, f"{kind.capitalize()}Model")
    extra = {} if kind == "electra" else {"add_pooling_layer": False}
    return model(config, **extra).double().eval()


@pytest.mark.parametrize("wrapped", [False, True], ids=["model", "hf_encoder-wrapped"])
@pytest.mark.parametrize("kind", ["roberta", "bert", "electra"])
def test_hugging_face_encoder_is_wired_right_by_default(kind, wrapped):
    """Its own embeddings embed the ids, it makes the second pass itself (positions once per
    pass, as published) and its word embeddings get gradients."""
    n = 2
    embedding = {"embedding_size": 6} if kind == "electra" else {}
    hf = tiny(kind, **embedding)
    config = MuxConfig(60, n, hidden_size=8, filler_id=59, cls_id=56, **embedding)
    model = MultiplexedModel(config, encoder=InputsEmbedsEncoder(hf) if wrapped else hf).double()
    assert model.embeddings is hf.embeddings
    ids = torch.randint(3, 50, (2 * n, 5), generator=torch.Generator().manual_seed(0))
    prefixed = torch.cat([torch.tensor([[58, 59, 56], [59, 57, 56]]).repeat(2, 1), ids], dim=1)
    mixed = model.multiplexer(hf.embeddings(input_ids=prefixed))
    expected = hf(inputs_embeds=mixed).last_hidden_state
    torch.testing.assert_close(model.encode(ids).hidden, expected, rtol=0, atol=0)
    model(ids).sum().backward()
    assert hf.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="would add positions a third time"):
        MultiplexedModel(MuxConfig(60, n, 8, filler_id=59, cls_id=56, embed_twice=True), encoder=hf)
