"""``muxkernels demo``: the retrieval warm-up command, in its tiny --quick form."""

from __future__ import annotations

import io
import re

import pytest

from muxkernels.__main__ import main
from muxkernels.demo import Progress, default_steps, run_demo

pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # the demos set it


def test_quick_demo_prints_a_row_per_n_with_speedups():
    out, progress = io.StringIO(), io.StringIO()
    results = run_demo([1, 2], quick=True, steps=3, out=out, progress=progress)
    assert [(r.num_instances, r.steps) for r in results] == [(1, 3), (2, 3)]
    for r in results:
        assert 0.0 <= r.accuracy <= 1.0 and r.instances_per_second > 0
    text = out.getvalue()
    assert "vs N=1" in text and re.search(r"^\s+2\s+3\s.*x$", text, flags=re.MULTILINE)
    assert re.search(r"^\s+1\s+3\s.*\s1\.00x$", text, flags=re.MULTILINE)
    assert "N=2" in progress.getvalue() and "3/3" in progress.getvalue()


def test_cli_demo_quick(capsys):
    assert main(["demo", "--quick", "--instances", "2", "--steps", "2", "--seed", "1"]) == 0
    captured = capsys.readouterr()
    assert "retrieval warm-up on cpu" in captured.out
    assert re.search(r"^\s+2\s+2\s", captured.out, flags=re.MULTILINE)
    assert "2/2" in captured.err


def test_default_steps_grow_with_n():
    assert default_steps(1) < default_steps(2) < default_steps(4) < default_steps(8)
    assert default_steps(3) == default_steps(2) and default_steps(16) == default_steps(8)


def test_progress_bar_redraws_one_line_and_ends_it():
    stream = io.StringIO()
    bar = Progress("N=4", 2, stream, width=4)
    bar(0, 1.5)
    bar(1, 0.5)
    text = stream.getvalue()
    assert text.startswith("\rN=4 [") and text.endswith("\n")
    assert "[####] 2/2 loss 0.500" in text


def test_demo_refuses_zero_steps():
    with pytest.raises(ValueError, match="steps must be at least 1"):
        run_demo([1], steps=0, quick=True, out=io.StringIO(), progress=io.StringIO())
