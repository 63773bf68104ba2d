"""Whole published checkpoints: every published variant loads strictly, its outputs and losses
equal the published model's (transcribed in tests/published_reference.py), in float64, on
padded batches; and the way back loads into the published layout key for key."""

from __future__ import annotations

import pytest
import torch
from published_reference import (
    make_spec,
    published_logits,
    published_losses,
    random_published_state,
)

from muxkernels.models import MultiplexedModel
from muxkernels.models.published import config_from_published, to_published

F64 = torch.float64
GROUPS = 2
LENGTH = 7

# (family, demuxing, task, muxing, extra config fields)
CASES = [
    ("roberta", "index", "sequence", "gaussian_hadamard", {}),
    ("roberta", "index", "token", "binary_hadamard", {"binary_hadamard_epsilon": 0.5}),
    ("roberta", "index", "sequence", "random_ortho", {}),
    ("roberta", "mlp", "sequence", "gaussian_hadamard", {}),
    ("roberta", "mlp", "token", "random_ortho", {}),
    ("bert", "index_pos", "sequence", "gaussian_hadamard", {}),
    ("bert", "index_pos", "token", "random_ortho_low_rank", {}),
    ("bert", "index_pos", "retrieval", "gaussian_hadamard", {"num_hidden_demux_layers": 2}),
    ("bert", "index_pos", "sequence", "gaussian_attention_v2", {}),
    ("bert", "index_pos", "token", "gaussian_attention_v2", {}),
    ("bert", "index", "sequence", "random_ortho", {}),
    ("bert", "index", "token", "binary_hadamard", {}),
    ("bert", "index_pos", "sequence", "gaussian_hadamard", {"num_labels": 1}),
    ("electra", "index_pos", "sequence", "gaussian_hadamard", {"embedding_size": 8}),
    ("electra", "index_pos", "token", "random_ortho_low_rank", {}),
    ("electra", "index_pos", "retrieval", "binary_hadamard", {"embedding_size": 8}),
    ("electra", "index", "sequence", "gaussian_hadamard", {}),
    ("electra", "index", "token", "random_ortho", {}),
]


def case_id(case) -> str:
    family, demux, task, mux, extra = case
    return "-".join([family, demux, task, mux, *(f"{k}={v}" for k, v in extra.items())])


def spec_of(case):
    family, demux, task, mux, extra = case
    return make_spec(family, task, demuxing_variant=demux, muxing_variant=mux, **extra)


def padded_batch(spec, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Content ids with trailing pads in some rows (and their mask); no special ids."""
    n, pad = spec["num_instances"], spec["pad_token_id"]
    generator = torch.Generator().manual_seed(seed)
    low, high = (3, 1000) if spec["model_type"] == "roberta" else (110, 600)
    ids = torch.randint(low, high, (GROUPS * n, LENGTH), generator=generator)
    mask = torch.ones_like(ids)
    for row, real in [(0, 4), (2, 6), (n, 3), (2 * n - 1, 5)]:
        mask[row, real:] = 0
    return ids.masked_fill(mask == 0, pad), mask


def labels_for(spec, task, ids, mask, seed: int = 5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    classes = max(len(spec.get("id2label", {})), 1)
    if task == "sequence":
        if classes == 1:
            return torch.randn(ids.shape[0], generator=generator, dtype=F64)
        return torch.randint(classes, (ids.shape[0],), generator=generator)
    high = classes if task == "token" else spec["vocab_size"]
    labels = torch.randint(high, ids.shape, generator=generator)
    labels[:, 0] = -100
    return labels.masked_fill(mask == 0, -100)


@pytest.fixture(params=CASES, ids=[case_id(c) for c in CASES])
def published(request):
    spec = spec_of(request.param)
    return spec, random_published_state(spec)


def test_outputs_equal_the_published_model_on_padded_batches(published):
    spec, state = published
    model = MultiplexedModel.from_published(state, spec)
    ids, mask = padded_batch(spec)
    expected = published_logits(spec, state, ids, mask)
    torch.testing.assert_close(model(ids, mask), expected, rtol=1e-10, atol=1e-10)


def test_losses_equal_the_published_objective(published):
    spec, state = published
    model = MultiplexedModel.from_published(state, spec)
    ids, mask = padded_batch(spec)
    task = model.config.task
    labels = labels_for(spec, task, ids, mask)
    out = model(ids, mask, labels, generator=torch.Generator().manual_seed(9))
    expected = published_losses(spec, state, ids, labels, mask, torch.Generator().manual_seed(9))
    for got, want in zip(out[:3], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_to_published_gives_back_every_key(published):
    spec, state = published
    model = MultiplexedModel.from_published(state, spec)
    back, values = to_published(model)
    assert back.keys() == state.keys()
    for key, tensor in state.items():
        torch.testing.assert_close(back[key], tensor, rtol=1e-12, atol=1e-12, msg=key)
    assert config_from_published(values) == model.config
