"""The end-to-end throughput benchmark: the published baselines equal the reference, both
multiplexed pipelines give the same logits, and run_end_to_end's rows and speedups (with
the timer faked, so nothing is timed)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import BACKEND, REFERENCE, assert_close

from muxkernels import ops, reference
from muxkernels.bench import end_to_end as e2e
from muxkernels.bench import published, report, timing
from muxkernels.models.encoder import Embeddings

CPU = torch.device("cpu")
TINY = e2e.EncoderSize(layers=1, d=16, heads=2, intermediate=32, length=5, vocab=100)


def _demux_params(randn, d: int) -> tuple[torch.Tensor, ...]:
    """weight (d, 2d), bias, ln_weight, ln_bias: random, never zero."""
    return randn(d, 2 * d, scale=0.3), randn(d), 1 + randn(d, scale=0.1), randn(d, scale=0.1)


@pytest.mark.parametrize("n", [1, 3])
def test_published_hadamard_mux_is_the_reference(n, randn):
    e, v = randn(2, n, 4, 10), randn(n, 10)
    assert_close(published.hadamard_mux(e, v), reference.hadamard_mux(e, v), REFERENCE)


@pytest.mark.parametrize("n", [1, 3])
def test_published_index_demux_is_the_reference(n, randn):
    d = 10
    hidden, params = randn(2, n + 3, d), _demux_params(randn, d)
    token = published.index_demux_token(hidden, *params, n, 1e-5)
    sequence = published.index_demux_sequence(hidden, *params, n, 1e-5)
    assert token.shape == (2, n, n + 3, d) and sequence.shape == (2, n, d)
    expected = reference.index_demux(hidden, *params, n, 1e-5, gather="token")
    assert_close(token, expected, REFERENCE)
    expected = reference.index_demux(hidden, *params, n, 1e-5, gather="sequence")
    assert_close(sequence, expected, REFERENCE)


@pytest.mark.parametrize("n", [1, 3])
def test_published_front_end_is_the_reference(n, randn, generator):
    d, length = 10, 4
    emb = Embeddings(30, d, max_position_embeddings=length).double().eval()
    with torch.no_grad():
        for p in emb.parameters():
            p.copy_(randn(*p.shape) + (1 if p is emb.LayerNorm.weight else 0))
    ids, v = torch.randint(0, 30, (2 * n, length), generator=generator), randn(n, d)
    ln = emb.LayerNorm
    tables = (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings)
    params = (*(t.weight for t in tables), ln.weight, ln.bias)
    expected = ops.embed_mux(ids, *params, v, eps=ln.eps, backend="reference")
    with torch.no_grad():
        assert_close(published.front_end(emb, ids, v, n), expected, REFERENCE)


@pytest.mark.parametrize("task", ["token", "sequence"])
def test_published_and_muxkernels_pipelines_agree(task):
    n = 3
    backbone = e2e.build_backbone(TINY, n, device=CPU, dtype=torch.float64, seed=0)
    pipelines = e2e.build_pipelines(backbone, task, n, seed=0)
    ids = e2e.random_ids(2 * n, TINY, n, seed=0, device=CPU)
    with torch.inference_mode():
        theirs, ours = pipelines["published"](ids), pipelines["muxkernels"](ids)
        baseline = e2e.build_pipelines(backbone, task, 1, seed=0)["baseline"](ids)
    shape = (2 * n, TINY.length, TINY.labels) if task == "token" else (2 * n, 3)
    assert ours.shape == shape and baseline.shape == shape and ours.dtype == torch.float64
    assert ours.abs().max() > 1e-3  # not vanishing: the comparison means something
    assert_close(ours, theirs, BACKEND)


BATCH_SIZES = (2, 5)
# fake times per output rows: B = 2 runs at 2000 inst/s, B = 5 at 1000 (so the best batch
# is not the largest); every other pass takes 2 ms
FAKE_MS = {2: 1.0, 5: 5.0}


def _fake_timer(fail_rows: int | None = None):
    """A median_ms stand-in: calls fn once and returns FAKE_MS by its output's rows (2 ms
    otherwise); raises out-of-memory when the output has ``fail_rows`` rows."""

    def fake(fn, device, *, graph=True, min_run_s=timing.CPU_MIN_RUN_S):
        assert not graph and device == CPU and torch.is_inference_mode_enabled()
        assert min_run_s == timing.CPU_PASS_MIN_RUN_S
        rows = fn().shape[0]
        if rows == fail_rows:
            raise torch.cuda.OutOfMemoryError("fake out of memory")
        return FAKE_MS.get(rows, 2.0)

    return fake


def _run(monkeypatch, fake, ns=(1, 2, 3), tasks=("sequence", "token"), log=None):
    monkeypatch.setattr(timing, "median_ms", fake)
    return e2e.run_end_to_end(
        ns, tasks, TINY, device=CPU, dtype=torch.float32, batch_sizes=BATCH_SIZES,
        log=(log if log is not None else lambda line: None),
    )  # fmt: skip


def test_run_gives_a_row_per_task_n_and_impl_with_the_right_speedups(monkeypatch):
    logged: list[str] = []
    rows = _run(monkeypatch, _fake_timer(), log=logged.append)
    keys = [(r.task, r.n, r.impl, r.groups) for r in rows]
    expected = [
        (task, n, impl, b)
        for task in ("sequence", "token")
        for n, impl, b in [(1, "baseline", 2), (1, "baseline", 5), (2, "published", 2),
                           (2, "muxkernels", 2), (3, "published", 2), (3, "muxkernels", 2)]
    ]  # fmt: skip
    assert keys == expected and len(logged) == len(rows)
    for r in rows:
        ms = FAKE_MS[r.groups] if r.n == 1 else 2.0
        assert r.instances == r.groups * r.n and r.ms == ms
        assert r.instances_per_s == pytest.approx(r.instances * 1e3 / ms)
        assert r.speedup == pytest.approx(r.instances_per_s / 2000)
    assert [r.speedup for r in rows[:2]] == [1.0, 0.5]
    assert [r.speedup for r in rows[2:6]] == pytest.approx([1.0, 1.0, 1.5, 1.5])
    table = report.text_table([r.as_dict() for r in rows], report.E2E_COLUMNS)
    assert table.count("\n") == len(rows) and "speedup" in table
    assert rows[0].as_dict()["impl"] == "baseline"


def test_out_of_memory_gives_a_nan_row(monkeypatch):
    logged: list[str] = []
    rows = _run(monkeypatch, _fake_timer(fail_rows=2 * 3), tasks=("token",), log=logged.append)
    failed = [r for r in rows if math.isnan(r.ms)]
    assert [(r.n, r.impl) for r in failed] == [(3, "published"), (3, "muxkernels")]
    assert all(math.isnan(r.instances_per_s) and math.isnan(r.speedup) for r in failed)
    assert sum("out of memory" in line for line in logged) == 2
    assert " - " in report.text_table([r.as_dict() for r in rows], report.E2E_COLUMNS)


def test_a_baseline_that_never_ran_is_an_error(monkeypatch):
    def out_of_memory(fn, device, *, graph=True, min_run_s=timing.CPU_MIN_RUN_S):
        raise torch.cuda.OutOfMemoryError("fake out of memory")

    with pytest.raises(RuntimeError, match="baseline ran out of memory"):
        _run(monkeypatch, out_of_memory, ns=(1,), tasks=("token",))
