"""Transform initialisers (docs/design.md §1) and the index prefix / batch padding (section 2)."""

from __future__ import annotations

import loops
import pytest
import torch
from helpers import REFERENCE, assert_close

import muxkernels as mk
from muxkernels import reference as ref
from muxkernels import transforms

# --- gaussian vectors ----------------------------------------------------------------------


@pytest.mark.parametrize("norm", [1.0, 20.0])
@pytest.mark.parametrize(("n", "d"), [(1, 5), (3, 7), (4, 16)])
def test_gaussian_vectors_have_the_given_norm(n, d, norm):
    v = transforms.gaussian_vectors(n, d, norm, generator=0, dtype=torch.float64)
    assert v.shape == (n, d)
    torch.testing.assert_close(v.norm(dim=1), torch.full((n,), norm, dtype=torch.float64))


def test_gaussian_vectors_default_norm_is_one():
    v = transforms.gaussian_vectors(3, 8, generator=0, dtype=torch.float64)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3, dtype=torch.float64))


def test_gaussian_vectors_deterministic_for_an_int_seed():
    first = transforms.gaussian_vectors(3, 8, generator=7)
    assert torch.equal(first, transforms.gaussian_vectors(3, 8, generator=7))
    assert not torch.equal(first, transforms.gaussian_vectors(3, 8, generator=8))


def test_gaussian_vectors_deterministic_for_a_generator():
    first = transforms.gaussian_vectors(3, 8, generator=torch.Generator().manual_seed(7))
    again = transforms.gaussian_vectors(3, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    gen = torch.Generator().manual_seed(7)
    draws = [transforms.gaussian_vectors(3, 8, generator=gen) for _ in range(2)]
    assert not torch.equal(*draws), "a generator must advance between draws"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_gaussian_vectors_dtype_and_device(dtype):
    v = transforms.gaussian_vectors(3, 8, generator=1, dtype=dtype, device="cpu")
    assert v.dtype == dtype
    assert v.device == torch.device("cpu")
    full = transforms.gaussian_vectors(3, 8, generator=1, dtype=torch.float64)
    assert torch.equal(v, full.to(dtype)), "the draw is float64, then cast"


@pytest.mark.gpu
def test_gaussian_vectors_same_values_on_cuda():
    cpu = transforms.gaussian_vectors(3, 8, generator=1)
    cuda = transforms.gaussian_vectors(3, 8, generator=1, device="cuda")
    assert cuda.device.type == "cuda"
    assert torch.equal(cuda.cpu(), cpu)


# --- binary vectors ----------------------------------------------------------------------------

BINARY_SIZES = [(1, 5), (2, 4), (2, 7), (3, 7), (3, 9), (4, 10), (4, 16), (5, 12)]


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
@pytest.mark.parametrize(("n", "d"), BINARY_SIZES)
def test_binary_vectors_match_loop(n, d, epsilon):
    v = transforms.binary_vectors(n, d, epsilon, dtype=torch.float64)
    assert torch.equal(v, loops.binary_vectors(n, d, epsilon))


@pytest.mark.parametrize(("n", "d"), BINARY_SIZES)
def test_binary_vectors_without_overlap_partition_the_features(n, d):
    v = transforms.binary_vectors(n, d)
    assert torch.equal(v.sum(dim=0), torch.ones(d)), "each feature belongs to exactly one chunk"
    c = d // n
    for i in range(n - 1):
        assert v[i].sum() == c
    assert v[n - 1].sum() == d - (n - 1) * c, "the last chunk runs to d"


def test_binary_vectors_overlap_example():
    # d = 12, N = 3: c = 4, w = epsilon·c/2 = 1 at epsilon = 0.5.
    v = transforms.binary_vectors(3, 12, 0.5)
    expected = torch.zeros(3, 12)
    expected[0, 0:5] = 1
    expected[1, 3:9] = 1
    expected[2, 7:12] = 1
    assert torch.equal(v, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_binary_vectors_dtype(dtype):
    v = transforms.binary_vectors(3, 7, 0.3, dtype=dtype, device="cpu")
    assert v.dtype == dtype
    assert torch.equal(v.double(), loops.binary_vectors(3, 7, 0.3))


# --- orthogonal transforms ----------------------------------------------------------------------


def assert_orthogonal(q: torch.Tensor):
    """QᵀQ = QQᵀ = I within the bound of a computation in q's dtype."""
    eye = torch.eye(q.shape[-1], dtype=torch.float64).expand_as(q)
    assert_close(q.mT @ q, eye, REFERENCE)
    assert_close(q @ q.mT, eye, REFERENCE)


@pytest.mark.parametrize(("count", "size"), [(1, 1), (1, 5), (3, 7), (4, 32)])
def test_haar_orthogonal_is_orthogonal(count, size):
    q = transforms.haar_orthogonal(count, size, generator=3)
    assert q.shape == (count, size, size)
    assert q.dtype == torch.float32
    assert_orthogonal(q)


def test_haar_orthogonal_deterministic_and_distinct():
    q = transforms.haar_orthogonal(2, 6, generator=3)
    assert torch.equal(q, transforms.haar_orthogonal(2, 6, generator=3))
    assert not torch.allclose(q[0], q[1])


@pytest.mark.parametrize(("n", "d"), [(1, 5), (3, 7), (4, 16)])
def test_ortho_matrices_are_orthogonal(n, d):
    p = transforms.ortho_matrices(n, d, generator=torch.Generator().manual_seed(5))
    assert p.shape == (n, d, d)
    assert_orthogonal(p)
    p64 = transforms.ortho_matrices(n, d, generator=5, dtype=torch.float64)
    assert p64.dtype == torch.float64
    assert_orthogonal(p64)


@pytest.mark.parametrize(("n", "d"), [(1, 5), (3, 7), (4, 16)])
def test_lowrank_factors_are_orthogonal(n, d):
    u, h = transforms.lowrank_factors(n, d, generator=2)
    assert u.shape == h.shape == (d, d)
    assert_orthogonal(u)
    assert_orthogonal(h)
    assert not torch.allclose(u, h)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("n", "d"), [(1, 5), (3, 6), (3, 7), (4, 10)])
def test_lowrank_factors_from_dense_round_trip(n, d, dtype):
    u, h = transforms.lowrank_factors(n, d, generator=4, dtype=dtype)
    dense = ref.lowrank_dense(u, h, n)
    u2, h2 = transforms.lowrank_factors_from_dense(dense)
    assert u2.dtype == h2.dtype == dtype
    assert u2.shape == h2.shape == (d, d)
    assert_close(ref.lowrank_dense(u2, h2, n), dense, REFERENCE)


# --- index prefix and padding -------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_add_index_prefix_matches_loop(generator, n, dtype):
    ids = torch.randint(3, 100, (2 * n, 5), generator=generator, dtype=dtype)
    index_ids = [200 + i for i in range(n)]
    out = mk.add_index_prefix(ids, n, index_ids, filler_id=1, cls_id=2)
    assert out.dtype == dtype
    assert out.shape == (2 * n, 5 + n + 1)
    assert torch.equal(out, loops.add_index_prefix(ids, n, index_ids, 1, 2))


@pytest.mark.parametrize("n", [1, 3])
def test_add_index_prefix_extends_attention_mask(generator, n):
    ids = torch.randint(3, 100, (2 * n, 4), generator=generator)
    mask = torch.randint(0, 2, (2 * n, 4), generator=generator)
    index_ids = torch.tensor([500 + i for i in range(n)])
    out_ids, out_mask = mk.add_index_prefix(ids, n, index_ids, 7, 9, attention_mask=mask)
    want_ids, want_mask = loops.add_index_prefix(ids, n, index_ids.tolist(), 7, 9, mask)
    assert torch.equal(out_ids, want_ids)
    assert torch.equal(out_mask, want_mask)
    assert out_mask.dtype == mask.dtype


def test_add_index_prefix_roberta_ids():
    n, vocab = 3, 50265
    ids = torch.full((n, 2), 42)
    out = mk.add_index_prefix(
        ids, n, mk.roberta_index_ids(vocab, n), mk.ROBERTA_FILLER_ID, mk.ROBERTA_CLS_ID
    )
    assert out[1].tolist() == [50000, 50262, 50000, 49923, 42, 42]


def test_roberta_index_ids_values():
    assert mk.roberta_index_ids(50265, 4) == [50263, 50262, 50261, 50260]
    assert mk.roberta_index_ids(10, 1) == [8]
    assert (mk.ROBERTA_FILLER_ID, mk.ROBERTA_CLS_ID) == (50000, 49923)


@pytest.mark.parametrize(("rows", "n", "expected_rows"), [(5, 3, 6), (7, 4, 8), (1, 3, 3)])
def test_pad_batch_fills_with_copies_of_the_last_row(generator, rows, n, expected_rows):
    batch = torch.randn(rows, 2, 3, generator=generator)
    padded, original = mk.pad_batch(batch, n)
    assert original == rows
    assert padded.shape == (expected_rows, 2, 3)
    assert torch.equal(padded[:rows], batch)
    for r in range(rows, expected_rows):
        assert torch.equal(padded[r], batch[-1])


@pytest.mark.parametrize(("rows", "n"), [(6, 3), (4, 1), (4, 4)])
def test_pad_batch_is_a_no_op_on_a_multiple(generator, rows, n):
    batch = torch.randint(0, 9, (rows, 5), generator=generator)
    padded, original = mk.pad_batch(batch, n)
    assert original == rows
    assert torch.equal(padded, batch)
