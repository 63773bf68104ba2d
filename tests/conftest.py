"""Shared test setup: skip `gpu`-marked tests without CUDA; seeded random inputs."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU generator with a fixed seed, fresh for each test."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def randn(generator):
    """randn(*shape, scale=1.0, dtype=float64): seeded normal samples (never exactly zero)."""

    def draw(*shape: int, scale: float = 1.0, dtype: torch.dtype = torch.float64):
        return (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(dtype)

    return draw
