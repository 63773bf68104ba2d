"""Bad arguments to the layers, the index prefix and the multiplexed model: each is one
ValueError naming the argument and its allowed range, raised before any work; integer-like
values (numpy integers, 0-d integer tensors) are accepted wherever an int is."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

import muxkernels as mk
from muxkernels import nn as mnn
from muxkernels.models import MultiplexedModel, MuxConfig

N, D, V = 2, 8, 40
INTEGER_LIKE = [np.int64(2), np.int32(2), torch.tensor(2), 2]


def _config(**overrides) -> MuxConfig:
    values = dict(vocab_size=V, num_instances=N, hidden_size=D, num_heads=2,
                  intermediate_size=16, max_position_embeddings=16, filler_id=30,
                  cls_id=31, task="sequence", num_labels=3)  # fmt: skip
    return MuxConfig(**(values | overrides))


def _ids(batch: int = 2 * N, length: int = 5) -> torch.Tensor:
    return torch.randint(0, 30, (batch, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("batch_size", [-1, 0, 5, 2.0, torch.tensor(1.0), True])
@pytest.mark.parametrize(
    "make",
    [
        lambda: mnn.IndexDemuxSequenceClassificationHead(N, D, 3),
        lambda: mnn.IndexDemuxTokenClassificationHead(N, D, 3),
        lambda: mnn.MLPDemuxSequenceClassificationHead(N, D, 3),
        lambda: mnn.MLPDemuxTokenClassificationHead(N, D, 3),
    ],
    ids=["index-sequence", "index-token", "mlp-sequence", "mlp-token"],
)
def test_head_batch_size_outside_the_rows_is_refused(make, batch_size):
    head = make()
    hidden = torch.randn(2, N + 3, D)  # B' = 2 groups: 4 rows
    with pytest.raises(ValueError, match=re.escape("batch_size (rows to keep of the B'·N=4)")):
        head(hidden, batch_size)


@pytest.mark.parametrize("batch_size", [np.int64(3), torch.tensor(3), 3])
def test_head_batch_size_integer_like_keeps_that_many_rows(batch_size):
    head = mnn.IndexDemuxSequenceClassificationHead(N, D, 3)
    logits, u = head(torch.randn(2, N + 3, D), batch_size)
    assert logits.shape == (3, 3) and u.shape == (3, D)
    logits = mnn.IndexDemuxTokenClassificationHead(N, D, 3).logits(torch.randn(2, 6, D), 3)
    assert logits.shape == (3, 6, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"index_ids": [7.9, 8.2]}, "index_ids[0] must be an integer >= 0, got 7.9"),
        ({"index_ids": torch.tensor([7.0, 8.0])}, "index_ids must hold integer ids"),
        ({"index_ids": [7, -1]}, "index_ids[1] must be an integer >= 0, got -1"),
        ({"index_ids": 7}, "index_ids must be a sequence of 2 ids"),
        ({"filler_id": 9.5}, "filler_id must be an integer >= 0, got 9.5"),
        ({"cls_id": 10.7}, "cls_id must be an integer >= 0, got 10.7"),
        ({"num_instances": 2.0}, "num_instances must be an integer >= 1, got 2.0"),
    ],
)
def test_index_prefix_refuses_float_and_negative_ids(overrides, message):
    args = {"num_instances": N, "index_ids": [7, 8], "filler_id": 9, "cls_id": 10} | overrides
    with pytest.raises(ValueError, match=re.escape(message)):
        mk.add_index_prefix(_ids(), **args)


@pytest.mark.parametrize("value", INTEGER_LIKE, ids=repr)
def test_index_prefix_accepts_integer_like_values(value):
    ids = [np.int64(7), torch.tensor(8)]
    out = mk.add_index_prefix(_ids(), value, ids, np.int32(9), torch.tensor(10))
    assert out[0, : N + 1].tolist() == [7, 9, 10] and out[1, : N + 1].tolist() == [9, 8, 10]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"index_ids": [7.9, 8.2]}, "index_ids[0] must be an integer >= 0, got 7.9"),
        ({"filler_id": 9.5}, "filler_id must be an integer >= 0, got 9.5"),
        ({"cls_id": 10.7}, "cls_id must be an integer >= 0, got 10.7"),
        ({"num_instances": 0}, "num_instances must be an integer >= 1, got 0"),
        ({"vocab_size": 0}, "vocab_size must be an integer >= 1, got 0"),
        ({"hidden_size": 8.0}, "hidden_size must be an integer >= 1, got 8.0"),
        ({"num_heads": 3}, "hidden_size=8 must be a multiple of num_heads=3"),
        ({"num_layers": -1}, "num_layers must be an integer >= 1, got -1"),
        ({"max_position_embeddings": 0}, "max_position_embeddings must be an integer >= 1"),
        ({"position_offset": -2}, "position_offset must be an integer >= 0, got -2"),
        ({"num_labels": -1}, "num_labels must be an integer >= 0, got -1"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps must be a finite number > 0.0, got 0.0"),
        ({"dropout": 1.5}, "dropout must be a finite number in [0.0, 1.0], got 1.5"),
        ({"initializer_range": float("nan")}, "initializer_range must be a finite number > 0.0"),
        ({"gaussian_hadamard_norm": -1.0}, "gaussian_hadamard_norm must be a finite number > 0"),
        ({"binary_hadamard_epsilon": 2.0}, "binary_hadamard_epsilon must be a finite number in"),
        ({"pad_token_id": V}, f"pad_token_id must be an integer in [0, {V - 1}], got {V}"),
        ({"seed": 1.5}, "seed must be an integer >= 0, got 1.5"),
    ],
)
def test_config_refuses_each_bad_field(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _config(**overrides)


@pytest.mark.parametrize("value", INTEGER_LIKE, ids=repr)
def test_config_and_layers_accept_integer_like_counts(value):
    config = _config(num_instances=value, index_ids=[np.int64(20), torch.tensor(21)])
    assert config.num_instances == 2 and type(config.num_instances) is int
    assert config.index_ids == [20, 21] and all(type(i) is int for i in config.index_ids)
    model = MultiplexedModel(config)
    assert model(_ids()).shape == (2 * N, 3)
    for layer in (
        mnn.Multiplexer(value, D),
        mnn.IndexDemultiplexer(value, D),
        mnn.MLPDemultiplexer(value, D),
        mnn.IndexPosDemultiplexer(value, D),
    ):
        assert layer.num_instances == 2 and type(layer.num_instances) is int
    x = torch.randn(2, 5, D)
    weights = (torch.randn(D, 2 * D), torch.randn(D), torch.randn(D), torch.randn(D))
    assert mk.index_demux(x, *weights, num_instances=value, eps=np.float32(1e-5)).shape == (
        2, 2, 5, D,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: mnn.Multiplexer(0, D), "num_instances must be an integer >= 1, got 0"),
        (lambda: mnn.Multiplexer(N, 0), "hidden_size must be an integer >= 1, got 0"),
        (lambda: mnn.Multiplexer(N, D, gaussian_hadamard_norm=0.0), "gaussian_hadamard_norm"),
        (lambda: mnn.Multiplexer(N, D, binary_hadamard_epsilon=-0.1), "binary_hadamard_epsilon"),
        (lambda: mnn.IndexDemultiplexer(N, D, 0.0), "layer_norm_eps must be a finite number > 0"),
        (lambda: mnn.MLPDemultiplexer(N, -D), "hidden_size must be an integer >= 1, got -8"),
        (lambda: mnn.IndexPosDemultiplexer(1.5, D), "num_instances must be an integer >= 1"),
        (lambda: mnn.IndexDemuxTokenClassificationHead(N, D, 0), "num_labels must be an integer"),
        (lambda: mnn.IndexDemuxRetrievalHead(N, D, -5), "vocab_size must be an integer >= 1"),
        (lambda: mnn.MLPDemuxSequenceClassificationHead(N, D, 0.5), "num_labels must be an"),
    ],
)
def test_layer_constructors_refuse_bad_sizes(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (torch.full((2 * N, 5), V), f"input_ids holds values in [{V}, {V}] but the vocabulary"),
        (torch.full((2 * N, 5), -1), "input_ids holds values in [-1, -1] but the vocabulary"),
        (torch.zeros(2 * N, 14, dtype=torch.long), "positions run to 16, but the position table"),
        (torch.zeros(0, 5, dtype=torch.long), "input_ids is empty"),
        (torch.zeros(2 * N, 5, device="meta", dtype=torch.long), "input_ids is on meta but"),
    ],
    ids=["id-equal-to-vocab", "negative-id", "too-long", "empty", "meta-device"],
)
def test_model_refuses_ids_it_cannot_embed(ids, message):
    model = MultiplexedModel(_config())
    with pytest.raises(ValueError, match=re.escape(message)):
        model(ids)


def test_model_with_an_encoder_of_another_width_says_so():
    class Wider(nn.Module):
        def forward(self, hidden, attention_mask=None):
            return torch.cat([hidden, hidden], dim=-1)

    model = MultiplexedModel(_config(), encoder=Wider())
    with pytest.raises(ValueError, match=r"encoder returned hidden states of width 16 .* is 8"):
        model(_ids())


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (torch.full((2, 5), N), r"instance_index holds values in \[2, 2\]"),
        (torch.zeros(2, 4, dtype=torch.long), r"instance_index must have shape \(2, 5\)"),
        (torch.zeros(2, 5), "instance_index must be an integer tensor"),
    ],
)
def test_retrieve_names_instance_index(index, message):
    model = MultiplexedModel(_config(task="retrieval", num_labels=0))
    with pytest.raises((ValueError, TypeError), match=message):
        model.retrieve(_ids(), index)
