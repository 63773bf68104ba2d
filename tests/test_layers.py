"""muxkernels.nn layers: published DataMUX state-dict names, published forward, row order.

Each head loads (strict=True) a state dict built from random tensors under the published
parameter names and must match a plain-PyTorch transcription of the published forward
written below: concatenate [p; h], one Linear, exact gelu, LayerNorm, then the head's
projections. Everything runs in float64. Flattened outputs put instance i of group g at
row g·N+i, which the transcriptions spell out by appending rows in that order.
"""

from __future__ import annotations

import math

import helpers
import pytest
import torch
import torch.nn.functional as F

import muxkernels
from muxkernels import nn as mnn
from muxkernels.reference import lowrank_dense
from muxkernels.transforms import haar_orthogonal

N, D, L, GROUPS, LABELS, VOCAB = 3, 8, 4, 2, 5, 11
PREFIXED = N + 1 + L
EPS = 1e-3  # not the default, so a LayerNorm that ignored it would show
F64 = torch.float64


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return helpers.randn(*shape, generator=seed)


def random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {name: randn(*shape, seed=k) for k, (name, shape) in enumerate(shapes.items())}


def linear_shapes(name: str, fan_in: int, fan_out: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (fan_out, fan_in), f"{name}.bias": (fan_out,)}


def layer_norm_shapes(name: str) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (D,), f"{name}.bias": (D,)}


def index_demux_shapes() -> dict[str, tuple[int, ...]]:
    return {**linear_shapes("dense", 2 * D, D), **layer_norm_shapes("layer_norm")}


def mlp_demux_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(N):
        shapes |= linear_shapes(f"demux_module.dense_{i}", D, D)
        shapes |= layer_norm_shapes(f"demux_module.layer_norm_{i}")
    return shapes


def decoder_shapes(outputs: int) -> dict[str, tuple[int, ...]]:
    return {**linear_shapes("decoder", D, outputs), "bias": (outputs,)}


def loaded(module: torch.nn.Module, shapes: dict[str, tuple[int, ...]]):
    """Load a published-named random state dict strictly; return (module, state) in float64."""
    state = random_state(shapes)
    if "decoder.bias" in state:  # published heads tie decoder.bias to bias
        state["decoder.bias"] = state["bias"]
    module.double().eval().load_state_dict(state, strict=True)
    return module, state


# --- the published forward, transcribed ------------------------------------------------


def ln(x: torch.Tensor, state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.layer_norm(x, (D,), state[f"{name}.weight"], state[f"{name}.bias"], EPS)


def linear(x: torch.Tensor, state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"])


def published_index_demux(
    p: torch.Tensor, h: torch.Tensor, state, dense="dense", norm="layer_norm"
):
    """LN(gelu(dense([p; h]))) for one instance vector p (d,) against positions h (…, d)."""
    both = torch.cat([p.expand_as(h), h], dim=-1)
    return ln(F.gelu(linear(both, state, dense)), state, norm)


def published_token_demux(hidden: torch.Tensor, state) -> torch.Tensor:
    """Every instance at every position, rows g·N+i: (B'·N, L', d)."""
    rows = []
    for g in range(hidden.shape[0]):
        for i in range(N):
            rows.append(published_index_demux(hidden[g, i], hidden[g], state))
    return torch.stack(rows)


def published_sequence_demux(hidden: torch.Tensor, state) -> torch.Tensor:
    """Every instance at the shared CLS position t = N, rows g·N+i: (B'·N, d)."""
    rows = []
    for g in range(hidden.shape[0]):
        for i in range(N):
            rows.append(published_index_demux(hidden[g, i], hidden[g, N], state))
    return torch.stack(rows)


def published_mlp_demux(features: torch.Tensor, state) -> torch.Tensor:
    """u_i = layer_norm_i(gelu(dense_i(features))), rows g·N+i: (B'·N, …, d)."""
    rows = []
    for g in range(features.shape[0]):
        for i in range(N):
            x = F.gelu(linear(features[g], state, f"demux_module.dense_{i}"))
            rows.append(ln(x, state, f"demux_module.layer_norm_{i}"))
    return torch.stack(rows)


def published_mlp_projection(u: torch.Tensor, state) -> torch.Tensor:
    x = F.gelu(linear(u, state, "dense_before_out_proj"))
    return linear(ln(x, state, "layernorm_presoftmax"), state, "out_proj")


# --- heads -------------------------------------------------------------------------------


def test_index_token_head_matches_published():
    shapes = index_demux_shapes() | decoder_shapes(LABELS)
    head = mnn.IndexDemuxTokenClassificationHead(N, D, LABELS, EPS)
    assert set(head.state_dict()) == set(shapes)
    head, state = loaded(head, shapes)
    hidden = randn(GROUPS, PREFIXED, D, seed=99)
    logits, u = head(hidden)
    expected_u = published_token_demux(hidden, state)
    torch.testing.assert_close(u, expected_u)
    torch.testing.assert_close(logits, F.linear(expected_u, state["decoder.weight"], state["bias"]))
    torch.testing.assert_close(head.logits(hidden), logits)
    torch.testing.assert_close(head.logits(hidden, batch_size=4), logits[:4])


def test_index_sequence_head_matches_published():
    shapes = (
        index_demux_shapes()
        | linear_shapes("dense_before_out_proj", D, D)
        | linear_shapes("out_proj", D, LABELS)
    )
    head = mnn.IndexDemuxSequenceClassificationHead(N, D, LABELS, EPS)
    assert set(head.state_dict()) == set(shapes)
    head, state = loaded(head, shapes)
    hidden = randn(GROUPS, PREFIXED, D, seed=99)
    logits, u = head(hidden)
    expected_u = published_sequence_demux(hidden, state)
    torch.testing.assert_close(u, expected_u)
    expected = linear(F.gelu(linear(expected_u, state, "dense_before_out_proj")), state, "out_proj")
    torch.testing.assert_close(logits, expected)


def test_index_retrieval_head_matches_published():
    shapes = index_demux_shapes() | decoder_shapes(VOCAB)
    head = mnn.IndexDemuxRetrievalHead(N, D, VOCAB, EPS)
    assert set(head.state_dict()) == set(shapes)
    head, state = loaded(head, shapes)
    hidden = randn(GROUPS, PREFIXED, D, seed=99)
    index = torch.randint(0, N, (GROUPS, PREFIXED), generator=torch.Generator().manual_seed(5))
    logits = head(hidden, index)
    expected = torch.empty(GROUPS, PREFIXED, VOCAB, dtype=F64)
    for g in range(GROUPS):
        for t in range(PREFIXED):
            u = published_index_demux(hidden[g, index[g, t]], hidden[g, t], state)
            expected[g, t] = F.linear(u, state["decoder.weight"], state["bias"])
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize(
    "head_class", [mnn.IndexDemuxTokenClassificationHead, mnn.IndexDemuxRetrievalHead]
)
def test_decoder_bias_is_tied(head_class):
    head = head_class(N, D, LABELS)
    assert head.bias is head.decoder.bias
    head, _ = loaded(head, index_demux_shapes() | decoder_shapes(LABELS))
    assert head.bias is head.decoder.bias


@pytest.mark.parametrize("token_level", [False, True], ids=["sequence", "token"])
def test_mlp_heads_match_published(token_level):
    head_class = (
        mnn.MLPDemuxTokenClassificationHead
        if token_level
        else mnn.MLPDemuxSequenceClassificationHead
    )
    shapes = (
        mlp_demux_shapes()
        | linear_shapes("dense_before_out_proj", D, D)
        | layer_norm_shapes("layernorm_presoftmax")
        | linear_shapes("out_proj", D, LABELS)
    )
    head = head_class(N, D, LABELS, EPS)
    assert set(head.state_dict()) == set(shapes)
    head, state = loaded(head, shapes)
    hidden = randn(GROUPS, L, D, seed=99)
    logits, u = head(hidden)
    features = hidden if token_level else hidden[:, 0]
    expected_u = published_mlp_demux(features, state)
    torch.testing.assert_close(u, expected_u)
    torch.testing.assert_close(logits, published_mlp_projection(expected_u, state))


def test_index_pos_demultiplexer_matches_published():
    shapes = {
        "demux_instance_embedding": (N, D),
        **linear_shapes("dense_1", 2 * D, D),
        **layer_norm_shapes("layer_norm_1"),
    }
    demux = mnn.IndexPosDemultiplexer(N, D, EPS)
    assert set(demux.state_dict()) == set(shapes)
    demux, state = loaded(demux, shapes)
    hidden = randn(GROUPS, L, D, seed=99)
    keys = state["demux_instance_embedding"]
    expected = torch.stack(
        [
            torch.stack(
                [
                    published_index_demux(keys[i], hidden[g], state, "dense_1", "layer_norm_1")
                    for i in range(N)
                ]
            )
            for g in range(GROUPS)
        ]
    )
    torch.testing.assert_close(demux(hidden), expected)


@pytest.mark.parametrize(
    ("head_class", "length"),
    [
        (mnn.IndexDemuxTokenClassificationHead, PREFIXED),
        (mnn.IndexDemuxSequenceClassificationHead, PREFIXED),
        (mnn.MLPDemuxTokenClassificationHead, L),
        (mnn.MLPDemuxSequenceClassificationHead, L),
    ],
)
def test_head_batch_size_drops_padded_rows(head_class, length):
    """Seven instances at N=3 fill three groups; batch_size=7 drops the two padded rows."""
    head = head_class(N, D, LABELS).double().eval()
    hidden = randn(3, length, D)
    logits, u = head(hidden)
    kept_logits, kept_u = head(hidden, batch_size=7)
    assert logits.shape[0] == u.shape[0] == 9
    assert kept_logits.shape[0] == kept_u.shape[0] == 7
    torch.testing.assert_close(kept_logits, logits[:7])
    torch.testing.assert_close(kept_u, u[:7])


# --- multiplexer ---------------------------------------------------------------------------

PUBLISHED_MUX_SHAPES = {
    "gaussian_hadamard": (N, D),
    "binary_hadamard": (N, D),
    "random_ortho": (N, D, D),
}


def published_mux(embeddings: torch.Tensor, instance_embedding: torch.Tensor) -> torch.Tensor:
    """(B, L, d) rows g·N+i → (B', L, d): mean of v_i ⊙ E_i, or N^(-1/2) Σ_i P[i] E_i."""
    grouped = embeddings.view(-1, N, *embeddings.shape[1:])
    if instance_embedding.dim() == 2:
        return (grouped * instance_embedding[None, :, None, :]).mean(dim=1)
    mixed = sum(grouped[:, i] @ instance_embedding[i].T for i in range(N))
    return mixed / math.sqrt(N)


@pytest.mark.parametrize("variant", list(PUBLISHED_MUX_SHAPES))
def test_multiplexer_loads_published_instance_embedding(variant):
    mux = mnn.Multiplexer(N, D, variant)
    assert {k: tuple(v.shape) for k, v in mux.state_dict().items()} == {
        "instance_embedding": PUBLISHED_MUX_SHAPES[variant]
    }
    mux, state = loaded(mux, {"instance_embedding": PUBLISHED_MUX_SHAPES[variant]})
    embeddings = randn(GROUPS * N, L, D, seed=99)
    torch.testing.assert_close(
        mux(embeddings), published_mux(embeddings, state["instance_embedding"])
    )


@pytest.mark.parametrize("hidden_size", [D, D + 1], ids=["d-multiple-of-N", "d-not-multiple"])
def test_lowrank_multiplexer_loads_dense_published_transform(hidden_size):
    mux = mnn.Multiplexer(N, hidden_size, "random_ortho_low_rank")
    assert {k: tuple(v.shape) for k, v in mux.state_dict().items()} == {
        "lowrank_u": (hidden_size, hidden_size),
        "lowrank_h": (hidden_size, hidden_size),
    }
    u, h = haar_orthogonal(2, hidden_size, generator=7, dtype=F64)
    dense = lowrank_dense(u, h, N)
    mux.double().load_state_dict({"instance_embedding": dense}, strict=True)
    assert set(mux.state_dict()) == {"lowrank_u", "lowrank_h"}
    embeddings = randn(GROUPS * N, L, hidden_size, seed=99)
    torch.testing.assert_close(mux(embeddings), muxkernels.ortho_mux(embeddings, dense))


@pytest.mark.parametrize("variant", mnn.MUXING_VARIANTS)
def test_frozen_transforms_by_default(variant):
    params = dict(mnn.Multiplexer(N, D, variant).named_parameters())
    assert params
    assert not any(p.requires_grad for p in params.values())


@pytest.mark.parametrize("variant", mnn.MUXING_VARIANTS)
def test_learned_transforms_get_gradients(variant):
    mux = mnn.Multiplexer(N, D, variant, learn_muxing=True, generator=0)
    mux(randn(GROUPS * N, L, D).float()).square().sum().backward()
    for name, param in mux.named_parameters():
        assert param.requires_grad, name
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", mnn.MUXING_VARIANTS)
def test_padded_multiplexer_keeps_full_groups(variant):
    padded = mnn.Multiplexer(N, D, variant, generator=0, pad=True)
    plain = mnn.Multiplexer(N, D, variant, generator=0)
    rows = randn(7, L, D).float()
    out = padded(rows)
    assert out.shape == (3, L, D)
    torch.testing.assert_close(out[:2], plain(rows[:6]))


def test_multiplexer_rejects_unknown_variant():
    with pytest.raises(ValueError, match=r"muxing_variant must be one of .* got 'orthogonal'"):
        mnn.Multiplexer(N, D, "orthogonal")


@pytest.mark.parametrize("variant", ["gaussian_hadamard", "random_ortho", "random_ortho_low_rank"])
def test_same_seed_same_transforms(variant):
    def transforms(generator) -> list[torch.Tensor]:
        return [
            p.detach() for p in mnn.Multiplexer(N, D, variant, generator=generator).parameters()
        ]

    seeded = transforms(3)
    for same in (transforms(3), transforms(torch.Generator().manual_seed(3))):
        for a, b in zip(seeded, same, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not any(torch.equal(a, b) for a, b in zip(seeded, transforms(4), strict=True))


def test_mlp_demultiplexer_stores_stacked_and_saves_published_names():
    demux = mnn.MLPDemultiplexer(N, D, EPS)
    assert {name for name, _ in demux.named_parameters()} == {
        "weight",
        "bias",
        "ln_weight",
        "ln_bias",
    }
    state = demux.state_dict()
    assert set(state) == {
        f"{kind}_{i}.{attr}"
        for i in range(N)
        for kind in ("dense", "layer_norm")
        for attr in ("weight", "bias")
    }
    torch.testing.assert_close(state["dense_1.weight"], demux.weight[1])
    fresh = mnn.MLPDemultiplexer(N, D, EPS)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.weight, demux.weight)
    del state["layer_norm_2.bias"]
    with pytest.raises(RuntimeError, match=r'Missing key.*"ln_bias"'):
        fresh.load_state_dict(state)
