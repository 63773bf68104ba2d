"""The benchmark harness runs end to end on the CPU at tiny sizes (each call made once,
not timed)."""

from __future__ import annotations

import math

import pytest
import torch

from muxkernels.bench import MODES, OPS, Sizes, format_table, run

TINY = Sizes(mux_groups=1, demux_groups=1, length=3, d=8, dtype=torch.float32)


def _call_once(fn, device):
    fn()
    return 1.0


@pytest.mark.parametrize("op", OPS)
def test_every_op_and_mode_gives_a_row_per_implementation(op, monkeypatch):
    import muxkernels.bench as bench

    monkeypatch.setattr(bench, "median_ms", _call_once)
    logged: list[str] = []
    rows = run([op], [2], MODES, ["eager", "concat"], TINY, torch.device("cpu"), logged.append)
    impls = {"eager", "concat"} if op == "index_demux" else {"eager"}
    assert {(r.mode, r.impl) for r in rows} == {(m, i) for m in MODES for i in impls}
    assert all(r.ms > 0 and r.vs_eager > 0 for r in rows)
    assert all(math.isnan(r.vs_compiled) for r in rows)
    assert format_table(rows).count("\n") == len(rows)
    assert not logged


def test_bench_ops_script_runs_on_cpu():
    """benchmarks/bench_ops.py end to end (the reference paths, tiny sizes)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_ops.py"
    args = ["--device", "cpu", "--small", "--ops", "index_demux", "--n", "2", "--modes", "fwd"]
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "kernel timings need a GPU" in done.stdout
    assert "concat" in done.stdout and "eager" in done.stdout
