"""The benchmark harness, its command line and its reports, on the CPU at tiny sizes.

Timings are replaced by a fake that calls each function once, so these tests check what
is measured and reported, never how fast anything is.
"""

from __future__ import annotations

import json
import math
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REFERENCE, assert_close

from muxkernels.bench import (
    MODES,
    OPS,
    Sizes,
    cli,
    end_to_end,
    microbench,
    report,
    run,
    timing,
    workloads,
)

TINY = Sizes(groups=1, length=3, d=8, dtype=torch.float32)
TINY_ARGS = ["--device", "cpu", "--groups", "1", "--length", "3", "--d", "8"]
ROOT = Path(__file__).resolve().parent.parent


def _call_once(fn, device, *, graph=True, min_run_s=timing.CPU_MIN_RUN_S):
    fn()
    return timing.Timing(1.0, "cpu")


@pytest.fixture
def fake_timer(monkeypatch):
    monkeypatch.setattr(timing, "time_call", _call_once)
    monkeypatch.setattr(timing, "copy_gbs", lambda nbytes, device: 1.0)
    monkeypatch.setattr(timing, "matmul_tflops", lambda m, k, n, dtype, device: 1.0)


@pytest.mark.parametrize("op", OPS)
def test_every_op_and_mode_gives_a_row_per_implementation(op, fake_timer):
    logged: list[str] = []
    rows = run([op], [2], MODES, ["eager", "published"], TINY, torch.device("cpu"), logged.append)
    impls = {"eager", "published"}
    assert {(r.mode, r.impl) for r in rows} == {(m, i) for m in MODES for i in impls}
    assert all(r.ms == 1.0 and r.vs_eager == 1.0 and r.timing == "cpu" for r in rows)
    assert all(math.isnan(r.vs_compiled) for r in rows)
    assert all(r.vs_published == 1.0 for r in rows)
    assert all(r.gbs > 0 for r in rows)
    assert not logged


class CompilationError(Exception):
    """Like Triton's: not a RuntimeError."""


@pytest.mark.parametrize("error", [RuntimeError("no GPU here\nmore"),
                                   CompilationError("\nat 12:4: bad kernel\nsource")])  # fmt: skip
def test_an_implementation_that_fails_gives_a_row_with_its_error(error, fake_timer, monkeypatch):
    def failing(x):
        raise error

    def build(*args):
        w = workloads.build(*args)
        w.impls["triton"] = failing
        return w

    monkeypatch.setattr(microbench, "build", build)
    logged: list[str] = []
    rows = run(["mlp_demux"], [2], ["fwd"], ["eager", "triton", "compiled"], TINY,
               torch.device("cpu"), logged.append)  # fmt: skip
    assert [(r.impl, r.timing) for r in rows] == [
        ("eager", "cpu"), ("triton", "failed"), ("compiled", "cpu")]  # fmt: skip
    text = (
        f"{type(error).__name__}: {'no GPU here' if 'GPU' in str(error) else 'at 12:4: bad kernel'}"
    )
    assert rows[1].error == text and math.isnan(rows[1].ms) and math.isnan(rows[1].vs_eager)
    assert rows[0].error == "" and rows[2].vs_eager == 1.0
    assert logged == [f"failed: mlp_demux N=2 fwd triton: {text}"]
    results = {"meta": {}, "ops": [r.as_dict() for r in rows], "end_to_end": []}
    assert report.failed(results) == [f"{text} (mlp_demux N=2 fwd triton)"]


def test_workloads_offer_the_kernel_backends_each_op_has():
    impls = {op: set(workloads.build(op, 2, TINY, torch.device("cpu")).impls) for op in OPS}
    base = {"eager", "compiled", "published", "cpu"}
    assert impls["embed_mux"] == base | {"cuda"}
    assert impls["ortho_mux"] == impls["mlp_demux"] == base | {"triton"}
    assert impls["index_demux"] == impls["index_pos_demux"] == base | {"cuda", "triton"}
    assert impls["image_mux_gaussian"] == impls["image_mux_learnable"] == base  # compiled conv
    assert impls["image_mux_nonlinear_expand"] == base - {"cpu"}
    assert impls["image_mux_so_n"] == impls["ortho_mux"]
    assert impls["image_mux_hadamard"] == impls["hadamard_mux"]
    for op in OPS:  # the list the gate and the README read agrees with what is measured
        assert impls[op] - {"eager", "compiled", "published"} == set(workloads.kernel_backends(op))


@pytest.mark.parametrize("op", OPS)
def test_every_published_form_computes_the_reference(op):
    """The published layers' form of each op gives the eager reference's output (float64),
    so the speedups over it compare one computation."""
    sizes = Sizes(groups=2, length=5, d=12, dtype=torch.float64)
    w = workloads.build(op, 3, sizes, torch.device("cpu"))
    expected = w.impls["eager"](w.inputs)
    assert expected.abs().max() > 1e-3
    assert_close(w.impls["published"](w.inputs), expected, REFERENCE)


def test_every_workload_compiles_its_own_graphs(monkeypatch):
    """Past dynamo's recompile limit (8 graphs per code object) a shared cache would run
    the "compiled" rows eagerly; 6 workloads x 2 graphs must all be compiled."""
    from torch._dynamo.utils import counters

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend="eager", **kw))
    counters.clear()
    for n in range(2, 8):
        w = workloads.build("hadamard_mux", n, TINY, torch.device("cpu"))
        for mode in ("fwd", "fwd+bwd"):
            microbench.timed_call(w, "compiled", mode)()
    assert counters["stats"]["unique_graphs"] == 12


def test_cpu_runs_keep_freed_memory_and_say_so(tmp_path, fake_timer):
    """On glibc the CPU bench keeps freed memory in the process (a 13 MB gradient made on
    every call then reuses warm pages), and the results' sentence names the allocator."""
    kept = timing.keep_freed_memory()
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        assert kept == "glibc keeping freed memory (mallopt)"
    argv = [*TINY_ARGS, "--no-e2e", "--ops", "hadamard_mux", "--n", "2", "--modes", "fwd"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert meta["allocator"] == kept
    if kept:
        assert f", {kept} on " in report.describe(meta)


def test_time_call_on_the_cpu_takes_a_median():
    calls = []
    t = timing.time_call(lambda: calls.append(1), torch.device("cpu"))
    assert t.method == "cpu" and t.ms > 0 and len(calls) > 1


def test_cpu_implementations_are_timed_in_interleaved_rounds(monkeypatch):
    """On the CPU each implementation is timed ``CPU_ROUNDS`` times, in turn (eager,
    published, cpu, eager, ...), and keeps the median of its rounds."""
    order, ms = [], iter(range(1, 100))

    def fake(fn, device, *, graph=True, min_run_s=timing.CPU_MIN_RUN_S):
        order.append(fn())
        return timing.Timing(float(next(ms)), "cpu")

    monkeypatch.setattr(microbench, "timed_call", lambda w, impl, mode: lambda: impl)
    monkeypatch.setattr(timing, "time_call", fake)
    monkeypatch.setattr(timing, "copy_gbs", lambda nbytes, device: 1.0)
    impls = ["eager", "published", "cpu"]
    rows = microbench.measure("hadamard_mux", 2, ["fwd"], impls, TINY, torch.device("cpu"))
    assert order == impls * timing.CPU_ROUNDS
    # eager got 1, 4, 7, 10, 13 ms: its median is 7
    assert {r.impl: r.ms for r in rows} == {"eager": 7.0, "published": 8.0, "cpu": 9.0}


def test_cpu_end_to_end_passes_are_timed_in_interleaved_rounds(monkeypatch):
    """The end-to-end passes compared in one table are timed in turn too, ``CPU_ROUNDS``
    times, each keeping the median of its rounds; one pass out of memory gives NaN."""
    order, ms = [], iter(range(1, 100))

    def fake(pipeline, ids, device):
        order.append(pipeline)
        return math.nan if pipeline == "oom" else float(next(ms))

    monkeypatch.setattr(end_to_end, "_time_pass", fake)
    passes = {key: (key, None) for key in ("baseline", "ours", "oom")}
    times = end_to_end.time_passes(passes, torch.device("cpu"))
    assert order == list(passes) * timing.CPU_ROUNDS
    # baseline got 1, 3, 5, 7, 9 ms and ours 2, 4, 6, 8, 10 ms
    assert times["baseline"] == 5.0 and times["ours"] == 6.0 and math.isnan(times["oom"])


def test_cpu_run_uses_one_thread_unless_told_and_restores_the_count(monkeypatch, fake_timer):
    seen, measure = [], microbench.measure

    def counting(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return measure(*args, **kwargs)

    monkeypatch.setattr(microbench, "measure", counting)
    before = torch.get_num_threads()
    common = [*TINY_ARGS, "--no-e2e", "--ops", "hadamard_mux", "--n", "2", "--modes", "fwd"]
    assert cli.main(common) == 0
    assert cli.main([*common, "--threads", "2"]) == 0
    assert seen == [1, 2] and torch.get_num_threads() == before


def _kernel_results() -> report.Results:
    """A GPU-like results document: eager, compiled, published and triton rows."""
    ops = []
    for n in (2, 40):
        for impl, ms in (("eager", 4.0), ("compiled", 2.0), ("published", 8.0), ("triton", 1.0)):
            row = microbench.Row("index_demux", n, "s", "fwd", impl, ms, "graph", 100.0, 0.5,
                                 math.nan, math.nan, 4.0 / ms, 2.0 / ms, 8.0 / ms)  # fmt: skip
            ops.append(row.as_dict())
    e2e = [
        {"task": "token", "n": n, "impl": impl, "groups": b, "instances": b * n,
         "ms": b * n / rate * 1e3, "instances_per_s": rate, "speedup": rate / 1000.0}
        for n, impl, b, rate in ((1, "baseline", 32, 800.0), (1, "baseline", 64, 1000.0),
                                 (2, "published", 64, 1500.0), (2, "muxkernels", 64, 1800.0))
    ]  # fmt: skip
    meta = {"date": "2026-11-28 00:00 UTC", "device": "NVIDIA H200", "gpu": True,
            "torch": "2.11", "triton": "3.6", "cuda": "13.0", "muxkernels": "0.1.0",
            "commit": "abc1234", "command": "muxkernels bench", "dtype": "bfloat16",
            "sizes": {"groups": 64, "length": 128, "d": 768}, "unmeasured": [],
            "end_to_end_size": {"layers": 12, "d": 768, "length": 128}}  # fmt: skip
    return {"meta": meta, "ops": ops, "end_to_end": e2e}


def test_summaries_give_the_fastest_kernel_and_its_speedups():
    results = _kernel_results()
    table = report.ops_summary(results, "fwd")
    assert "| index_demux | 1 ms triton 4.00x / 2.00x / 8.00x | 1 ms triton" in table
    assert "| index_demux (copy) | 50% | 50% |" in report.ceiling_summary(results)
    e2e = report.end_to_end_summary(results)
    assert "| token | 1 | 64 | 1,000 | 1.00x |" in e2e
    assert "| token | 2 | 64 | 1,500 | 1.50x | 1,800 | 1.80x | 1.20x |" in e2e
    section = report.readme_section(results, "docs/bench/bench.png", "docs/bench")
    assert "NVIDIA H200" in section and "torch 2.11" in section and "2026-11-28" in section
    assert "No GPU run" not in section and "![muxkernels bench](docs/bench/bench.png)" in section


def test_json_is_strict_and_reads_back(tmp_path):
    results = _kernel_results()
    path = tmp_path / "results.json"
    path.write_text(report.to_json(results))
    json.loads(path.read_text(), parse_constant=pytest.fail)  # no NaN literals
    again = report.read_json(path)
    assert math.isnan(again["ops"][0]["tflops"]) and again["ops"][0]["ms"] == 4.0
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a muxkernels bench results file"):
        report.read_json(path)


def test_plot_is_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    assert report.plot(_kernel_results(), tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def _readme(tmp_path: Path) -> Path:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.README_START}\nold\n{report.README_END}\n\ntail\n")
    return readme


def test_cli_writes_files_and_the_readme_section(tmp_path, fake_timer, capsys):
    readme, out = _readme(tmp_path), tmp_path / "out"
    args = [*TINY_ARGS, "--ops", "index_demux", "hadamard_mux", "--n", "2", "3",
            "--e2e-n", "1", "2", "--e2e-size", "small", "--batch-sizes", "2",
            "--out", str(out), "--readme", str(readme), "--format", "json"]  # fmt: skip
    assert cli.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = report.read_json(out / "results.json")
    assert printed["meta"]["command"] == "muxkernels bench " + " ".join(args)
    assert {(r["op"], r["n"]) for r in saved["ops"]} == {
        (op, n) for op in ("index_demux", "hadamard_mux") for n in (2, 3)
    }
    assert {r["impl"] for r in saved["ops"]} == {"eager", "published", "cpu"}
    assert {(r["n"], r["impl"]) for r in saved["end_to_end"]} >= {(1, "baseline"),
                                                                  (2, "published")}  # fmt: skip
    assert (out / "ops.csv").read_text().startswith("op,n,shape,mode,impl,ms,timing,")
    written = {"results.json", "ops.csv", "end_to_end.csv", "bench.png"}  # gpu_check counts on 4
    assert {p.name for p in out.iterdir()} <= written
    text = readme.read_text()
    assert text.startswith("# x\n\n") and text.endswith(f"{report.README_END}\n\ntail\n")
    assert "old" not in text and "No GPU run has been recorded yet" in text
    assert "| index_demux |" in text and "(out/ops.csv" not in text and "`out/ops.csv`" in text


def test_cli_report_rerenders_without_measuring(tmp_path, capsys):
    saved = tmp_path / "run" / "results.json"
    saved.parent.mkdir()
    saved.write_text(report.to_json(_kernel_results()))
    readme = _readme(tmp_path)
    assert cli.main(["--report", str(saved), "--readme", str(readme), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("op,n,shape,mode,impl,")
    assert "NVIDIA H200" in readme.read_text() and "`run/ops.csv`" in readme.read_text()


def test_cli_budget_lists_what_it_did_not_measure(tmp_path, fake_timer, capsys):
    out = tmp_path / "out"
    args = [*TINY_ARGS, "--no-e2e", "--ops", "hadamard_mux", "--n", "2", "5",
            "--budget-s", "0", "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    saved = report.read_json(out / "results.json")
    assert saved["ops"] == [] and saved["meta"]["unmeasured"] == ["hadamard_mux N=2",
                                                                  "hadamard_mux N=5"]  # fmt: skip
    assert "not measured (--budget-s): hadamard_mux N=2" in capsys.readouterr().err


def test_cli_saves_every_op_n_at_once_and_goes_on_past_failures(tmp_path, fake_timer,
                                                                monkeypatch, capsys):  # fmt: skip
    """Each finished (op, N) is on disk before the next starts; a workload that raises
    and an end-to-end run that raises are recorded, and the run still ends with its files;
    the end-to-end run comes after the ops."""
    out, order, on_disk = tmp_path / "out", [], []
    measure = microbench.measure

    def recording(op, n, *args):
        saved = out / "results.json"
        on_disk.append(sorted({(r["op"], r["n"]) for r in report.read_json(saved)["ops"]})
                       if saved.exists() else [])  # fmt: skip
        order.append((op, n))
        if (op, n) == ("hadamard_mux", 3):
            raise CompilationError("out of resources: shared memory")
        return measure(op, n, *args)

    def e2e_fails(*args, **kwargs):
        order.append("end to end")
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(microbench, "measure", recording)
    monkeypatch.setattr(cli.end_to_end, "run_end_to_end", e2e_fails)
    args = [*TINY_ARGS, "--ops", "hadamard_mux", "mlp_demux", "--n", "2", "3", "--modes",
            "fwd", "--e2e-size", "small", "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    assert order == [("hadamard_mux", 2), ("hadamard_mux", 3), ("mlp_demux", 2),
                     ("mlp_demux", 3), "end to end"]  # fmt: skip
    assert on_disk == [[], [("hadamard_mux", 2)], [("hadamard_mux", 2)],
                       [("hadamard_mux", 2), ("mlp_demux", 2)]]  # fmt: skip
    saved = report.read_json(out / "results.json")
    assert saved["meta"]["errors"] == [
        "hadamard_mux N=3: CompilationError: out of resources: shared memory",
        "end to end: OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB",
    ]
    assert {(r["op"], r["n"]) for r in saved["ops"]} == {("hadamard_mux", 2), ("mlp_demux", 2),
                                                         ("mlp_demux", 3)}  # fmt: skip
    assert saved["end_to_end"] == [] and not list(out.glob("*.part"))
    assert "2 failure(s), recorded in the results" in capsys.readouterr().err


def test_cli_budget_leaves_the_end_to_end_run_its_time(tmp_path, fake_timer, monkeypatch):
    """Within E2E_RESERVE_S of the budget no op starts, but the end-to-end run does."""
    monkeypatch.setattr(cli, "E2E_RESERVE_S", 3600)
    out = tmp_path / "out"
    args = [*TINY_ARGS, "--ops", "hadamard_mux", "--n", "2", "--e2e-n", "1", "--e2e-tasks",
            "token", "--e2e-size", "small", "--batch-sizes", "2", "--budget-s", "60",
            "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    saved = report.read_json(out / "results.json")
    assert saved["ops"] == [] and saved["meta"]["unmeasured"] == ["hadamard_mux N=2"]
    assert [r["impl"] for r in saved["end_to_end"]] == ["baseline"]
    assert cli.main([*args[:-3], "0", "--out", str(out)]) == 0
    assert report.read_json(out / "results.json")["meta"]["unmeasured"] == [
        "hadamard_mux N=2", "end to end"]  # fmt: skip


def test_cli_resume_measures_only_what_a_run_lacks(tmp_path, fake_timer, capsys):
    out = tmp_path / "out"
    first = [*TINY_ARGS, "--no-e2e", "--ops", "hadamard_mux", "--n", "2", "--modes", "fwd",
             "--out", str(out)]  # fmt: skip
    assert cli.main(first) == 0
    saved = out / "results.json"
    more = [*TINY_ARGS, "--ops", "hadamard_mux", "mlp_demux", "--n", "2", "--modes", "fwd",
            "--e2e-n", "1", "--e2e-tasks", "token", "--e2e-size", "small", "--batch-sizes",
            "2", "--resume", str(saved), "--out", str(out)]  # fmt: skip
    assert cli.main(more) == 0
    merged = report.read_json(saved)
    pairs = list(dict.fromkeys((r["op"], r["n"]) for r in merged["ops"]))
    assert pairs == [("hadamard_mux", 2), ("mlp_demux", 2)]
    assert [r["impl"] for r in merged["end_to_end"]] == ["baseline"]
    assert merged["meta"]["end_to_end_size"]["d"] == 64
    assert merged["meta"]["command"].count("muxkernels bench") == 2
    assert cli.main([*TINY_ARGS[:-1], "16", "--no-e2e", "--resume", str(saved)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"saved run has sizes=.*'d': 8.*this one sizes=.*'d': 16", err), err


def test_console_script_and_module_forward_to_the_bench():
    for command in (["-m", "muxkernels", "bench", "--help"], ["-m", "muxkernels.bench", "-h"]):
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True,
                              timeout=120, cwd=ROOT)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "usage: muxkernels bench" in done.stdout and "--budget-s" in done.stdout


def test_cpu_run_end_to_end_says_kernels_need_a_gpu(tmp_path):
    """The real thing, timed, at the smallest sizes: ``python -m muxkernels bench``."""
    args = [*TINY_ARGS, "--ops", "index_demux", "--n", "2", "--modes", "fwd", "--e2e-n", "1",
            "2", "--e2e-tasks", "token", "--batch-sizes", "2", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "muxkernels", "bench", *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "kernel timings need a GPU" in done.stderr
    assert "published" in done.stdout and "muxkernels" in done.stdout
    assert (tmp_path / "results.json").exists()


def test_benchmarks_folder_runs(tmp_path):
    """benchmarks/ (pytest-benchmark, out of the default run) still runs: each once."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
         str(ROOT / "benchmarks")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout
