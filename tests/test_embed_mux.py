"""The fused front end (docs/design.md §1): reference and functional op against the loop,
against the published "embedding module called twice" flow, gradcheck, and bad inputs."""

from __future__ import annotations

import loops
import pytest
import torch
from helpers import BACKEND, REFERENCE, assert_close

import muxkernels as mk
from muxkernels import reference as ref

EPS = 1e-5
V_WORD, V_POS, V_TYPE = 11, 9, 2


def tables(randn, d):
    return {
        "word_embeddings": randn(V_WORD, d),
        "position_embeddings": randn(V_POS, d),
        "token_type_embeddings": randn(V_TYPE, d),
        "ln_weight": randn(d),
        "ln_bias": randn(d),
    }


def ids(*shape, high, seed=0):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("groups,n,length,d", [(1, 1, 1, 5), (2, 3, 4, 5), (2, 3, 1, 7)])
def test_matches_loop(groups, n, length, d, randn):
    tab, vec = tables(randn, d), randn(n, d)
    tok = ids(groups * n, length, high=V_WORD)
    pos = ids(groups * n, length, high=V_POS, seed=1)
    typ = ids(groups * n, length, high=V_TYPE, seed=2)
    mpos, mtyp = ids(groups, length, high=V_POS, seed=3), ids(groups, length, high=V_TYPE, seed=4)
    got = mk.embed_mux(
        tok,
        *tab.values(),
        vec,
        position_ids=pos,
        token_type_ids=typ,
        mixed_position_ids=mpos,
        mixed_token_type_ids=mtyp,
        eps=EPS,
        backend="reference",
    )

    def group(t):
        return t.reshape(groups, n, length)

    want = loops.embed_mux(group(tok), *tab.values(), vec, group(pos), group(typ), mpos, mtyp, EPS)
    assert_close(got, want, REFERENCE)


def test_defaults_are_positions_0_to_L_and_type_0(randn):
    n, d, length = 2, 5, 3
    tab, vec = tables(randn, d), randn(n, d)
    tok = ids(2 * n, length, high=V_WORD)
    arange = torch.arange(length)
    explicit = mk.embed_mux(
        tok,
        *tab.values(),
        vec,
        position_ids=arange,
        token_type_ids=torch.zeros_like(tok),
        mixed_position_ids=arange,
        mixed_token_type_ids=torch.zeros(2, length, dtype=torch.long),
    )
    torch.testing.assert_close(mk.embed_mux(tok, *tab.values(), vec), explicit)


def test_equals_published_embedding_module_called_twice(randn):
    """The published flow: embeddings(ids) per instance, hadamard mean over instances, then
    embeddings(inputs_embeds=mixed), i.e. position/type add + the same LayerNorm again."""
    n, d, length, groups = 3, 7, 4, 2
    tab, vec = tables(randn, d), randn(n, d)
    word = torch.nn.Embedding.from_pretrained(tab["word_embeddings"])
    pos = torch.nn.Embedding.from_pretrained(tab["position_embeddings"])
    typ = torch.nn.Embedding.from_pretrained(tab["token_type_embeddings"])
    norm = torch.nn.LayerNorm(d, eps=EPS).double()
    norm.weight.data, norm.bias.data = tab["ln_weight"], tab["ln_bias"]
    positions = torch.arange(length)[None]

    def embeddings(input_ids=None, inputs_embeds=None):
        x = word(input_ids) if inputs_embeds is None else inputs_embeds
        return norm(x + pos(positions) + typ(torch.zeros_like(positions)))

    tok = ids(groups * n, length, high=V_WORD)
    e = embeddings(input_ids=tok).view(groups, n, length, d)
    published = embeddings(inputs_embeds=torch.mean(e * vec[None, :, None, :], dim=1))
    torch.testing.assert_close(mk.embed_mux(tok, *tab.values(), vec, eps=EPS), published)


def test_grouped_input_equals_batch(randn):
    n, d = 3, 5
    tab, vec = tables(randn, d), randn(n, d)
    tok = ids(2 * n, 4, high=V_WORD)
    torch.testing.assert_close(
        mk.embed_mux(tok.view(2, n, 4), *tab.values(), vec), mk.embed_mux(tok, *tab.values(), vec)
    )


def test_gradcheck(randn):
    n, d = 2, 5
    tab = {k: v.requires_grad_() for k, v in tables(randn, d).items()}
    vec = randn(n, d).requires_grad_()
    tok = ids(2 * n, 3, high=V_WORD)
    assert torch.autograd.gradcheck(
        lambda *args: mk.embed_mux(tok, *args, backend="reference"), (*tab.values(), vec)
    )


def test_reference_keeps_table_dtype(randn):
    n, d = 2, 8
    tab = {k: v.to(torch.bfloat16) for k, v in tables(randn, d).items()}
    vec = randn(n, d).float()
    out = mk.embed_mux(ids(2 * n, 3, high=V_WORD), *tab.values(), vec)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 3, d)
    exact = mk.embed_mux(
        ids(2 * n, 3, high=V_WORD), *(t.double() for t in tab.values()), vec.double()
    )
    assert_close(out, exact, REFERENCE)


@pytest.mark.parametrize(
    "change,error,pattern",
    [
        (
            {"input_ids": torch.full((6, 3), V_WORD)},
            ValueError,
            r"input_ids holds values .* 11 rows",
        ),
        ({"input_ids": -torch.ones(6, 3, dtype=torch.long)}, ValueError, r"input_ids holds"),
        ({"input_ids": torch.zeros(6, 3)}, TypeError, r"input_ids must be an integer"),
        ({"input_ids": torch.zeros(7, 3, dtype=torch.long)}, ValueError, r"input_ids .* multiple"),
        ({"input_ids": torch.zeros(2, 2, 3, dtype=torch.long)}, ValueError, r"vectors has N=3"),
        ({"input_ids": torch.zeros(6, 0, dtype=torch.long)}, ValueError, r"input_ids is empty"),
        ({"position_ids": torch.full((3,), V_POS)}, ValueError, r"position_ids holds values"),
        ({"position_ids": torch.zeros(4, dtype=torch.long)}, ValueError, r"position_ids must"),
        (
            {"input_ids": torch.zeros(6, V_POS + 1, dtype=torch.long)},
            ValueError,
            r"position_ids defaults to 0…9 \(L=10\) but position_embeddings has 9 rows",
        ),
        (
            {"input_ids": torch.zeros(6, 10, dtype=torch.long), "position_ids": torch.arange(10)},
            ValueError,
            r"mixed_position_ids defaults to 0…9",
        ),
        ({"mixed_token_type_ids": torch.full((2, 3), V_TYPE)}, ValueError, r"mixed_token_type"),
        (
            {"token_type_embeddings": torch.zeros(2, 5, dtype=torch.float64)},
            ValueError,
            r"token_type_embeddings has .* share d",
        ),
        ({"ln_weight": torch.zeros(5, dtype=torch.float64)}, ValueError, r"ln_weight must"),
        ({"vectors": torch.zeros(3, 5, dtype=torch.float64)}, ValueError, r"vectors must have"),
        ({"eps": 0.0}, ValueError, r"eps must be"),
    ],
)
def test_bad_inputs(change, error, pattern, randn):
    args = {"input_ids": ids(6, 3, high=V_WORD), **tables(randn, 4), "vectors": randn(3, 4)}
    args |= change
    with pytest.raises(error, match=pattern):
        mk.embed_mux(**args)


def test_reference_module_exports_embed_mux():
    assert ref.embed_mux is mk.reference.multiplex.embed_mux


def test_kernel_backward_chain_rule_matches_reference_autograd(randn, monkeypatch):
    """EmbedMux's hand-written backward against autograd through the reference, float64.

    The forward operator is swapped for the reference so the test runs without a GPU.
    """
    from muxkernels import _opdefs
    from muxkernels.ops.embed_mux import EmbedMux

    monkeypatch.setattr(_opdefs, "kernel", lambda name, backend: ref.embed_mux)
    groups, n, length, d = 2, 3, 4, 7
    tab, vec = tables(randn, d), randn(n, d)
    tok = ids(groups, n, length, high=V_WORD)
    pos, typ = (
        ids(groups, n, length, high=V_POS, seed=1),
        ids(groups, n, length, high=V_TYPE, seed=2),
    )
    mpos, mtyp = ids(groups, length, high=V_POS, seed=3), ids(groups, length, high=V_TYPE, seed=4)
    leaves = [t.requires_grad_() for t in (*tab.values(), vec)]
    word, ptab, ttab, lw, lb, v = leaves
    grad_x = randn(groups, length, d)
    args = (tok, word, ptab, ttab, lw, lb, v, pos, typ, mpos, mtyp, EPS)
    want = torch.autograd.grad(ref.embed_mux(*args), leaves, grad_x)
    got = torch.autograd.grad(EmbedMux.apply(*args, "cuda"), leaves, grad_x)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, BACKEND)


@pytest.mark.parametrize("on_cpu", [True, False])
def test_ids_are_checked_in_one_host_read(randn, monkeypatch, on_cpu):
    """Off the CPU, all the id tensors given come to the host together (one device sync on
    CUDA: here CPU tensors that say they are elsewhere); on the CPU, where there is no sync
    to save, each is read where it is, without stacking."""
    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(t.shape) or tolist(t))
    if not on_cpu:
        monkeypatch.setattr(torch.Tensor, "is_cpu", property(lambda t: False))
    given = {
        "position_ids": ids(3, high=V_POS),
        "token_type_ids": ids(6, 3, high=V_TYPE),
        "mixed_position_ids": ids(3, high=V_POS),
        "mixed_token_type_ids": ids(2, 3, high=V_TYPE),
    }
    mk.embed_mux(ids(6, 3, high=V_WORD), **tables(randn, 4), vectors=randn(3, 4), **given)
    assert reads == ([] if on_cpu else [(5, 2)])


def test_ids_given_twice_are_checked_once(randn, monkeypatch):
    """One position tensor passed for both passes (as the models do) gets one aminmax."""
    seen = []
    aminmax = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda t: seen.append(t) or aminmax(t))
    positions = ids(3, high=V_POS)
    input_ids = ids(6, 3, high=V_WORD)
    mk.embed_mux(input_ids, **tables(randn, 4), vectors=randn(3, 4),
                 position_ids=positions, mixed_position_ids=positions)  # fmt: skip
    assert len(seen) == 2 and seen[1] is positions
