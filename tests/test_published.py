"""Whole published checkpoints: every published variant loads strictly, its outputs and losses
equal the published model's (transcribed in tests/published_reference.py), in float64, on
padded batches; and the way back loads into the published layout key for key."""

from __future__ import annotations

import pytest
import torch
from helpers import REFERENCE, assert_close
from op_cases import runnable
from published_reference import (
    make_spec,
    published_logits,
    published_losses,
    random_published_state,
)

from muxkernels.models import MultiplexedModel
from muxkernels.models.published import to_published
from muxkernels.models.published_config import config_from_published

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
    ("electra", "index_pos", "token", "binary_hadamard", {"embedding_size": 8}),
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
    assert_close(model(ids, mask), expected, REFERENCE)


def test_losses_equal_the_published_objective(published):
    spec, state = published
    model = MultiplexedModel.from_published(state, spec)
    ids, mask = padded_batch(spec)
    task = model.config.task
    labels = labels_for(spec, task, ids, mask)
    out = model(ids, mask, labels, generator=torch.Generator().manual_seed(9))
    expected = published_losses(spec, state, ids, labels, mask, torch.Generator().manual_seed(9))
    for got, want in zip(out[:3], expected, strict=True):
        assert_close(got, want, REFERENCE)


def test_to_published_gives_back_every_key(published):
    spec, state = published
    model = MultiplexedModel.from_published(state, spec)
    back, values = to_published(model)
    assert back.keys() == state.keys()
    for key, tensor in state.items():
        assert_close(back[key], tensor, REFERENCE, what=key)
    assert config_from_published(values) == model.config


# --- low rank: exact or an error, learned ones dense ----------------------------------------


def low_rank_case(**extra):
    spec = make_spec("bert", "sequence", muxing_variant="random_ortho_low_rank", **extra)
    return spec, random_published_state(spec)


def test_a_trained_low_rank_transform_is_refused_by_name_when_frozen():
    spec, state = low_rank_case()
    state["instance_embedding"] = state["instance_embedding"] + 1e-3 * torch.randn(
        state["instance_embedding"].shape, generator=torch.Generator().manual_seed(0), dtype=F64
    )
    with pytest.raises(ValueError, match=r"not of rank d // N = 4: .* drop a singular value"):
        MultiplexedModel.from_published(state, spec)


def test_a_learned_low_rank_transform_loads_dense_and_matches():
    spec, state = low_rank_case(learn_muxing=1)
    state["instance_embedding"] = state["instance_embedding"] + 0.1 * torch.randn(
        state["instance_embedding"].shape, generator=torch.Generator().manual_seed(0), dtype=F64
    )
    model = MultiplexedModel.from_published(state, spec)
    assert model.multiplexer.instance_embedding.requires_grad
    ids, mask = padded_batch(spec)
    torch.testing.assert_close(model(ids, mask), published_logits(spec, state, ids, mask))
    torch.testing.assert_close(
        to_published(model)[0]["instance_embedding"], state["instance_embedding"]
    )


# --- what loads and what does not ----------------------------------------------------------


def bert_case(task="sequence"):
    spec = make_spec("bert", task)
    return spec, random_published_state(spec)


def test_keys_the_published_loader_skips_are_dropped_and_shared_keys_may_appear_once():
    spec, state = bert_case()
    ids, mask = padded_batch(spec)
    expected = published_logits(spec, state, ids, mask)
    state["bert.pooler.dense.weight"] = torch.zeros(12, 12, dtype=F64)
    state["bert.embeddings.position_ids"] = torch.arange(40)[None]
    copies = ("demultiplexer.demux_module.", "retrieval_head.demux_module.")
    state = {k: v for k, v in state.items() if not k.startswith(copies)}  # a deduplicated save
    model = MultiplexedModel.from_published(state, spec)
    torch.testing.assert_close(model(ids, mask), expected)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: s.pop("classifier.bias"), r"missing classifier\.bias"),
        (lambda s: s.update(extra=torch.zeros(1)), "unexpected extra"),
        (
            lambda s: s.update({"classifier.weight": torch.zeros(5, 12)}),
            r"classifier\.weight has shape \(5, 12\), the config gives \(4, 12\)",
        ),
        (
            lambda s: s["demultiplexer.demux_module.dense_1.bias"].add_(1),
            "must hold one shared tensor",
        ),
        (
            lambda s: s.update({"bert.embeddings.position_ids": torch.arange(40).flip(0)}),
            "not 0, 1, 2",
        ),
    ],
    ids=["missing", "unexpected", "shape", "shared-unequal", "positions"],
)
def test_a_checkpoint_that_does_not_fit_is_refused_with_every_problem_named(edit, match):
    spec, state = bert_case()
    state = {k: v.clone() for k, v in state.items()}
    edit(state)
    with pytest.raises(ValueError, match=match):
        MultiplexedModel.from_published(state, spec)


def test_a_pretraining_checkpoint_starts_a_task_model_with_new_task_heads():
    spec, state = bert_case("retrieval")
    state["discriminator_predictions.dense.weight"] = torch.zeros(12, 12, dtype=F64)
    task_spec = make_spec("bert", "sequence")
    with pytest.raises(ValueError, match=r"missing classifier\.bias, classifier\.weight"):
        MultiplexedModel.from_published(state, task_spec)
    model = MultiplexedModel.from_published(state, task_spec, new_task_heads=True)
    with pytest.raises(ValueError, match="to start a sequence model from a pretraining"):
        MultiplexedModel.from_published(state, spec, task="sequence")
    fresh = MultiplexedModel.from_published(
        state, spec, task="sequence", new_task_heads=True, overrides={"num_labels": 3}
    )
    assert fresh.classifier.out_features == 3
    pretrained = MultiplexedModel.from_published(bert_case("retrieval")[1], spec)
    ids, _ = padded_batch(spec)
    torch.testing.assert_close(model.encode(ids).hidden, pretrained.encode(ids).hidden)


def test_task_and_family_come_from_the_config():
    spec, _ = bert_case("token")
    assert config_from_published(spec).task == "token"
    with pytest.raises(ValueError, match="task='sequence' but the config's architectures say"):
        config_from_published(spec, task="sequence")
    with pytest.raises(ValueError, match="unknown published model family 'gpt2'"):
        config_from_published(spec | {"model_type": "gpt2"})
    with pytest.raises(ValueError, match="lacks 'num_instances'"):
        config_from_published({k: v for k, v in spec.items() if k != "num_instances"})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"norm_first": True}, "norm_first=True"),
        ({"cls_id": 102}, r"cls_id=102 \(published: 101\)"),
        ({"use_attention_mask": True}, "use_attention_mask=True"),
    ],
)
def test_to_published_refuses_what_the_published_model_cannot_reproduce(change, match):
    spec, _ = bert_case()
    config = config_from_published(spec, overrides=change)
    with pytest.raises(ValueError, match=match):
        to_published(MultiplexedModel(config))


def test_to_published_writes_a_checkpoint_directory_that_loads_back(tmp_path):
    spec, state = bert_case("token")
    model = MultiplexedModel.from_published(state, spec)
    to_published(model, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.json",
        "pytorch_model.bin",
    ]
    again = MultiplexedModel.from_published(tmp_path / "out")
    ids, mask = padded_batch(spec)
    torch.testing.assert_close(again(ids, mask), model(ids, mask), rtol=0, atol=0)


# --- every backend on whole published models ------------------------------------------

KERNEL_CASES = {
    "roberta-index-token": (CASES[1], ("binary_hadamard", "index_demux")),
    "roberta-mlp-token": (CASES[4], ("ortho_mux", "mlp_demux")),
    "bert-index_pos-token-low_rank": (CASES[6], ("lowrank_ortho_mux", "index_pos_demux")),
    "bert-index_pos-retrieval": (CASES[7], ("hadamard_mux", "index_pos_demux")),
}


@pytest.mark.parametrize("backend", ["cpu", "triton", "cuda"])
@pytest.mark.parametrize("name", list(KERNEL_CASES))
def test_every_backend_gives_the_reference_outputs_and_gradients(name, backend):
    case, ops = KERNEL_CASES[name]
    ops = tuple("hadamard_mux" if op == "binary_hadamard" else op for op in ops)
    if not all(runnable(op, backend) for op in ops):
        pytest.skip(f"{backend} cannot run {ops} here")
    spec = spec_of(case)
    state = random_published_state(spec)
    ids, mask = padded_batch(spec)
    labels = labels_for(spec, case[2], ids, mask)
    results = []
    for be in (backend, "reference"):
        model = MultiplexedModel.from_published(state, spec, backend=be)
        out = model(ids, mask, labels, generator=torch.Generator().manual_seed(2))
        params = [p for p in model.parameters() if p.requires_grad]
        results.append((out, torch.autograd.grad(out.loss, params)))
    (out, grads), (want, want_grads) = results
    for got, expected in zip([*out, *grads], [*want, *want_grads], strict=True):
        torch.testing.assert_close(got, expected)
