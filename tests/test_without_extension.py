"""The package imports and works when the compiled extensions are absent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class BlockCompiledExtension(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in ("muxkernels._C", "muxkernels._C_cpu"):
                raise ImportError(f"{name} blocked for this test")
            return None

    sys.meta_path.insert(0, BlockCompiledExtension())

    import torch
    import muxkernels
    from muxkernels import _extension
    from muxkernels._cpu import _compiled

    assert _extension.load() is False
    hidden, weight = torch.randn(2, 6, 8), torch.randn(8, 16)
    bias, ln_w, ln_b = torch.randn(8), torch.randn(8), torch.randn(8)
    u = muxkernels.index_demux(hidden, weight, bias, ln_w, ln_b, num_instances=2)  # cpu, ATen
    assert u.shape == (2, 2, 6, 8) and _compiled.available() is False
    emb, vec = torch.randn(6, 4, 8), torch.randn(3, 8)
    x = muxkernels.hadamard_mux(emb, vec)  # auto -> reference
    assert x.shape == (2, 4, 8)
    try:
        muxkernels.hadamard_mux(emb, vec, backend="cuda")
    except RuntimeError as err:
        assert "not built" in str(err), err
    else:
        raise AssertionError("backend='cuda' without the extension must fail")
    print("ok")
    """
)


def _run(env_update: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MUXKERNELS_REQUIRE_EXTENSION"}
    env |= env_update
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_package_works_without_compiled_extension():
    result = _run({})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_required_extension_fails_loudly_when_absent():
    result = _run({"MUXKERNELS_REQUIRE_EXTENSION": "1"})
    assert result.returncode != 0
    assert "MUXKERNELS_REQUIRE_EXTENSION=1" in result.stderr
