"""The README's Python example runs as written, and the command line answers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from muxkernels.__main__ import main

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_example_runs():
    blocks = _python_blocks(README.read_text())
    assert blocks, "README.md has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_cli_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "muxkernels" in out and "backend reference" in out


def test_cli_check_passes_on_cpu(capsys):
    assert main(["check", "--device", "cpu", "--dtypes", "float64", "float32"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"(^|\s)0 failed", out)
    for op in ("hadamard_mux", "ortho_mux", "index_demux", "mlp_demux"):
        assert op in out


def test_cli_rejects_unknown_command():
    with pytest.raises(SystemExit):
        main(["frobnicate"])
