"""The published objective's pieces (muxkernels.models.losses) on small hand-checked cases."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from muxkernels.models.losses import (
    IGNORE_INDEX,
    draw_retrieval,
    retrieval_labels,
    task_loss,
    weighted_loss,
)


def test_draws_keep_the_special_positions_at_instance_0_and_follow_the_percentage():
    index, dropped = draw_retrieval(3, 50, 4, 2, 1.0, generator=torch.Generator().manual_seed(0))
    assert index.shape == dropped.shape == (3, 50)
    assert (index[:, :2] == 0).all() and index.min() >= 0 and index.max() == 3
    assert not dropped.any()
    _, dropped = draw_retrieval(3, 50, 4, 2, 0.0, generator=torch.Generator().manual_seed(0))
    assert dropped.all()
    _, dropped = draw_retrieval(40, 50, 4, 0, 0.3, generator=torch.Generator().manual_seed(0))
    assert abs(dropped.double().mean().item() - 0.7) < 0.03


def test_retrieval_labels_pick_instance_j_and_ignore_special_pad_and_dropped_positions():
    ids = torch.tensor(
        [[5, 6, 7, 1], [8, 9, 1, 1], [10, 11, 12, 13], [14, 15, 16, 17]]
    )  # B'=2, N=2
    index = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 1]])
    dropped = torch.tensor([[False, False, False, False], [False, False, True, False]])
    labels = retrieval_labels(ids, index, dropped, special_positions=1, pad_token_id=1)
    assert labels.tolist() == [[IGNORE_INDEX, 9, IGNORE_INDEX, IGNORE_INDEX],
                               [IGNORE_INDEX, 11, IGNORE_INDEX, 17]]  # fmt: skip


def test_task_loss_ignores_minus_100_and_masked_positions_and_regresses_one_label():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    labels = torch.tensor([[1, IGNORE_INDEX, 3], [0, 2, 2]])
    kept = [(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)]
    expected = torch.stack([F.cross_entropy(logits[i, t], labels[i, t]) for i, t in kept]).mean()
    torch.testing.assert_close(task_loss(logits, labels), expected)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    kept = [(0, 0), (0, 2), (1, 0), (1, 1)]
    expected = torch.stack([F.cross_entropy(logits[i, t], labels[i, t]) for i, t in kept]).mean()
    torch.testing.assert_close(task_loss(logits, labels, mask), expected)
    scores, targets = logits[:, 0, :1], torch.tensor([0.5, -1.0], dtype=torch.float64)
    torch.testing.assert_close(task_loss(scores, targets), F.mse_loss(scores[:, 0], targets))


def test_weighted_loss():
    total = weighted_loss(torch.tensor(2.0, dtype=torch.float64), torch.tensor(3.0), 0.9, 0.1)
    torch.testing.assert_close(total, torch.tensor(0.9 * 2 + 0.1 * 3, dtype=torch.float64))
