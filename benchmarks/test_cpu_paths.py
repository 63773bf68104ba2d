"""pytest-benchmark timings of what runs on a CPU: every op's eager reference, cpu backend
and published layers' form in each mode at small sizes, and one inference pass of the
small multiplexed encoder, published layers against ours.

Not part of the default test run (pyproject's testpaths is tests/):

    python -m pytest benchmarks                          # time them
    python -m pytest benchmarks --benchmark-disable      # run each once, as a check

Kernel timings need a GPU: ``muxkernels bench`` there.
"""

from __future__ import annotations

import pytest
import torch

from muxkernels.bench import MODES, OPS, Sizes, end_to_end
from muxkernels.bench.microbench import timed_call
from muxkernels.bench.workloads import build

CPU = torch.device("cpu")
SMALL = Sizes(groups=2, length=16, d=64, dtype=torch.float32, images=(8, 1, 8, 8))
N = 5


@pytest.mark.parametrize("impl", ["eager", "cpu", "published"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
def test_op(benchmark, op, mode, impl):
    benchmark.group = f"{op} {mode}"
    workload = build(op, N, SMALL, CPU)
    if impl not in workload.impls:  # the convolution image modes have no cpu backend
        pytest.skip(f"{op} has no {impl} implementation")
    benchmark(timed_call(workload, impl, mode))


@pytest.fixture(scope="module")
def backbone():
    return end_to_end.build_backbone(end_to_end.SMALL, N, device=CPU, dtype=torch.float32, seed=0)


@pytest.mark.parametrize("impl", ["published", "muxkernels"])
@pytest.mark.parametrize("task", ["sequence", "token"])
def test_end_to_end_pass(benchmark, backbone, task, impl):
    benchmark.group = f"end to end {task}, N={N}"
    pipeline = end_to_end.build_pipelines(backbone, task, N, seed=0)[impl]
    ids = end_to_end.random_ids(4 * N, end_to_end.SMALL, N, seed=0, device=CPU)
    with torch.inference_mode():
        benchmark(pipeline, ids)
