"""Shared test setup: skip `gpu`-marked tests without CUDA; seeded random inputs; with
MUXKERNELS_TOLERANCE_REPORT=1, the largest error per tolerance purpose and dtype."""

from __future__ import annotations

import os

import helpers
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """The largest error / bound ratio of each (purpose, dtype) of muxkernels._tolerances in
    this run (> 1 failed; far below 1: the bound could be tighter)."""
    if os.environ.get("MUXKERNELS_TOLERANCE_REPORT") != "1" or not helpers.WORST:
        return
    terminalreporter.section("largest error / bound per tolerance purpose and dtype")
    for (purpose, dtype), ratio in sorted(helpers.WORST.items()):
        terminalreporter.write_line(f"{purpose:<10} {dtype:<9} {ratio:10.3g}")


@pytest.fixture
def keep_torch_threads():
    """Gives a test that sets torch's thread count (the demos do) the old count back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU generator with a fixed seed, fresh for each test."""
    return helpers.seeded(1234)


@pytest.fixture
def randn(generator):
    """randn(*shape, scale=1.0, dtype=float64): seeded normal samples (never exactly zero)."""

    def draw(*shape: int, scale: float = 1.0, dtype: torch.dtype = torch.float64):
        return helpers.randn(*shape, generator=generator, dtype=dtype, scale=scale)

    return draw
