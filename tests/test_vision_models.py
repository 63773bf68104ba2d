"""MultiplexedCNN, MultiplexedMLP, FeatureDemultiplexer and the image training helpers."""

from __future__ import annotations

import image_loops
import pytest
import torch
import torch.nn.functional as F
from helpers import REFERENCE, assert_close

from muxkernels.models import MultiplexedCNN, MultiplexedMLP, image_training
from muxkernels.nn import FeatureDemultiplexer


def published_state(n: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights under the notebook's MuxLeNet names and shapes ("nonlinear-expand",
    20×20 images, expand factor 8)."""
    shapes = {
        "rop": (n, 16, 1, 3, 3),
        "rop2": (n, 8, 16, 3, 3),
        "C1.weight": (10, 8, 3, 3),
        "C1.bias": (10,),
        "C3.weight": (16, 10, 4, 4),
        "C3.bias": (16,),
        "C5.weight": (120, 16, 3, 3),
        "C5.bias": (120,),
        "F6.weight": (84, 120),
        "F6.bias": (84,),
        "OL.weight": (10, 84),
        "OL.bias": (10,),
        **{f"DCs.{i}.weight": (84, 84) for i in range(n)},
        **{f"DCs.{i}.bias": (84,) for i in range(n)},
    }
    return {k: 0.3 * torch.randn(s, generator=rng, dtype=torch.float64) for k, s in shapes.items()}


def published_forward(state: dict[str, torch.Tensor], grouped: torch.Tensor) -> torch.Tensor:
    """The notebook's MuxLeNet on (B', N, 1, 20, 20): proj, then forward, outputs stacked as
    rows g·N+i."""
    x = image_loops.two_layer(grouped, state["rop"], state["rop2"])
    x = F.max_pool2d(torch.tanh(F.conv2d(x, state["C1.weight"], state["C1.bias"])), 2)
    x = F.max_pool2d(torch.tanh(F.conv2d(x, state["C3.weight"], state["C3.bias"])), 2)
    x = torch.tanh(F.conv2d(x, state["C5.weight"], state["C5.bias"])).flatten(1)
    x = torch.tanh(F.linear(x, state["F6.weight"], state["F6.bias"]))
    outs = [
        torch.tanh(
            F.linear(
                torch.tanh(F.linear(x, state[f"DCs.{i}.weight"], state[f"DCs.{i}.bias"])),
                state["OL.weight"],
                state["OL.bias"],
            )
        )
        for i in range(grouped.shape[1])
    ]
    return torch.stack(outs, dim=1).flatten(0, 1)


def test_a_published_muxlenet_state_dict_loads_and_computes_the_same(randn):
    rng = torch.Generator().manual_seed(0)
    state = published_state(3, rng)
    model = MultiplexedCNN(3, mode="nonlinear-expand", demux_activation="tanh").double()
    assert set(model.state_dict()) == set(state)
    model.load_state_dict(state)
    grouped = randn(2, 3, 1, 20, 20)
    expected = published_forward(state, grouped)
    assert_close(torch.tanh(model(grouped)), expected, REFERENCE)
    assert_close(torch.tanh(model(grouped.flatten(0, 1))), expected, REFERENCE)
    saved = model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in state.items())


def test_default_names_add_the_branch_layer_norms():
    names = set(MultiplexedCNN(2, mode="learnable").state_dict())
    published = {
        "rop",
        *(f"{m}.{p}" for m in ("C1", "C3", "C5", "F6", "OL") for p in ("weight", "bias")),
    }
    branches = {f"DCs.{i}.{p}" for i in range(2) for p in ("weight", "bias")}
    norms = {f"DCs.layer_norm_{i}.{p}" for i in range(2) for p in ("weight", "bias")}
    assert names == published | branches | norms


@pytest.mark.parametrize(
    "build",
    [
        lambda: MultiplexedCNN(
            3, (2, 8, 8), mode="SO(N)", paddings=(1, 1), batch_norm=True, generator=0
        ),
        lambda: MultiplexedCNN(3, (1, 20, 20), mode="remap", generator=0),
        lambda: MultiplexedMLP(3, (1, 8, 8), hidden_sizes=(32, 16), generator=0),
        lambda: MultiplexedMLP(3, (2, 4, 4), mode="learnable", out_channels=5, generator=0),
    ],
)
def test_each_group_is_classified_on_its_own(build, randn):
    """Row g·N+i of the logits belongs to group g: changing group 1 leaves group 0 alone."""
    model = build().double().eval()
    c, h, w = model.mux.image_shape
    images = randn(6, c, h, w)
    logits = model(images)
    assert logits.shape == (6, 10)
    changed = images.clone()
    changed[3:] = randn(3, c, h, w)
    again = model(changed)
    torch.testing.assert_close(again[:3], logits[:3])
    assert not torch.allclose(again[3:], logits[3:])


def test_state_dict_round_trip_and_published_top_level_names(randn):
    model = MultiplexedMLP(2, (1, 8, 8), generator=1)
    state = model.state_dict()
    assert "instance_embedding" in state and not any(k.startswith("mux.") for k in state)
    other = MultiplexedMLP(2, (1, 8, 8), generator=2)
    other.load_state_dict(state)
    images = randn(4, 1, 8, 8, dtype=torch.float32)
    torch.testing.assert_close(other(images), model(images))


def test_pad_returns_one_row_per_image(randn):
    model = MultiplexedCNN(4, (1, 8, 8), paddings=(1, 1), pad=True, generator=0).double().eval()
    images = randn(5, 1, 8, 8)
    logits = model(images)
    assert logits.shape == (5, 10)
    full = torch.cat([images, images[-1:].expand(3, 1, 8, 8)])
    torch.testing.assert_close(logits, model(full)[:5])


def test_cnn_geometry_errors():
    with pytest.raises(ValueError, match="too small for C1"):
        MultiplexedCNN(2, (1, 8, 8))  # the notebook's 20×20 geometry
    with pytest.raises(ValueError, match="channels must be three ints"):
        MultiplexedCNN(2, channels=(4, 4))
    with pytest.raises(ValueError, match=r"channels\[1\] must be a positive int"):
        MultiplexedCNN(2, channels=(4, 0, 4))
    with pytest.raises(ValueError, match="paddings must be two ints >= 0"):
        MultiplexedCNN(2, paddings=(-1, 0))
    with pytest.raises(ValueError, match="hidden_sizes must name at least one"):
        MultiplexedMLP(2, (1, 8, 8), hidden_sizes=())
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        MultiplexedMLP(2, (1, 8, 8), num_classes=0)


@pytest.mark.parametrize("activation", ["gelu_layernorm", "tanh"])
def test_feature_demultiplexer_branches(activation, randn):
    demux = FeatureDemultiplexer(3, 5, activation).double()
    h = randn(2, 5)
    u = demux(h)
    assert u.shape == (6, 5)
    for g in range(2):
        for i in range(3):
            pre = demux.weight[i] @ h[g] + demux.bias[i]
            if activation == "tanh":
                want = torch.tanh(pre)
            else:
                want = F.layer_norm(F.gelu(pre), (5,), demux.ln_weight[i], demux.ln_bias[i])
            assert_close(u[3 * g + i], want, REFERENCE)
    names = set(demux.state_dict())
    assert {"0.weight", "2.bias"} <= names and ("layer_norm_1.weight" in names) == (
        activation != "tanh"
    )
    assert torch.autograd.gradcheck(demux, (h.requires_grad_(),))


def test_feature_demultiplexer_errors(randn):
    with pytest.raises(ValueError, match="activation must be one of"):
        FeatureDemultiplexer(2, 4, "relu")
    with pytest.raises(ValueError, match="features must be a positive int"):
        FeatureDemultiplexer(2, 0)
    for activation in ("gelu_layernorm", "tanh"):
        demux = FeatureDemultiplexer(2, 4, activation)
        with pytest.raises(ValueError, match=r"hidden must have shape \(B', d\)"):
            demux(torch.zeros(2, 3, 4))
        with pytest.raises(ValueError):
            demux(torch.zeros(2, 5))


def test_epoch_batches_use_every_image_in_full_batches():
    batches = image_training.epoch_batches(10, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4, 4]
    assert set(torch.cat(batches).tolist()) == set(range(10))
    assert image_training.training_steps(10, 4, 3) == 9


class _Oracle(torch.nn.Module):
    """Predicts the class stored in pixel (0, 0): a perfect classifier of its test data."""

    num_instances = 4

    def forward(self, images):
        assert images.shape[0] % self.num_instances == 0
        return F.one_hot(images[:, 0, 0, 0].long(), 10).float()


def test_accuracy_pads_the_last_group_and_counts_each_image_once():
    labels = torch.arange(10) % 10
    images = torch.zeros(10, 1, 2, 2)
    images[:, 0, 0, 0] = labels.float()
    model = _Oracle()
    assert image_training.accuracy(model, images, labels, generator=torch.Generator()) == 1.0
    wrong = labels.clone()
    wrong[:3] = (wrong[:3] + 1) % 10
    got = image_training.accuracy(model, images, wrong, groupings=3, generator=torch.Generator())
    assert got == pytest.approx(0.7)


def test_training_lowers_the_loss_and_throughput_is_measured(randn):
    torch.manual_seed(0)
    model = MultiplexedCNN(
        2,
        (1, 8, 8),
        mode="learnable",
        out_channels=4,
        channels=(4, 4, 8),
        features=8,
        paddings=(1, 1),
        generator=0,
    )
    images = randn(32, 1, 8, 8, dtype=torch.float32)
    labels = torch.arange(32) % 10
    steps = []
    losses = image_training.train_classifier(
        model,
        images,
        labels,
        epochs=30,
        groups_per_batch=4,
        lr=1e-2,
        generator=torch.Generator().manual_seed(0),
        on_step=lambda s, loss: steps.append(s),
    )
    assert len(losses) == image_training.training_steps(32, 8, 30) == len(steps)
    assert sum(losses[-4:]) < sum(losses[:4])
    assert image_training.images_per_second(model, images, groups=3, repeats=3) > 0


def test_training_helpers_refuse_bad_data():
    model = MultiplexedMLP(2, (1, 4, 4), hidden_sizes=(8,))
    images = torch.zeros(4, 1, 4, 4)
    with pytest.raises(ValueError, match="labels must have shape"):
        image_training.train_classifier(
            model,
            images,
            torch.zeros(3, dtype=torch.long),
            epochs=1,
            groups_per_batch=1,
            lr=1e-3,
            generator=torch.Generator(),
        )
    with pytest.raises(ValueError, match="epochs and groups_per_batch must be at least 1"):
        image_training.train_classifier(
            model,
            images,
            torch.zeros(4, dtype=torch.long),
            epochs=0,
            groups_per_batch=1,
            lr=1e-3,
            generator=torch.Generator(),
        )
    with pytest.raises(ValueError, match=r"images must be a non-empty \(B, C, H, W\)"):
        image_training.images_per_second(model, torch.zeros(4, 16), groups=1)


def test_random_shift_moves_each_image_by_at_most_one_pixel(randn):
    images = randn(6, 2, 5, 5)
    shifted = image_training.random_shift(images, torch.Generator().manual_seed(0))
    padded = F.pad(images, (1, 1, 1, 1))
    for b in range(6):
        candidates = [padded[b, :, dy : dy + 5, dx : dx + 5] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(shifted[b], c) for c in candidates)
    assert not torch.equal(shifted, images)
