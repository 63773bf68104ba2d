"""scripts/gpu_check.sh's orchestration, on the CPU, with stand-in steps that take seconds:
the order of the steps, the time each gets, a step that fails, a step that hangs, the
number of files left for the GPU machine to return, and the bench's summary."""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from muxkernels.bench import microbench, report

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


class Check:
    """One run of the script: its exit code, console, summary lines, steps run, seconds."""

    def __init__(self, tmp_path: Path, steps: tuple[str, ...], settings: dict[str, object]):
        self.out, self.order = tmp_path / "out", tmp_path / "order"
        commands = {
            "ENV_CMD": "echo environment",
            "BUILD_CMD": f"echo build >> {self.order}",
            "TESTS_CMD": f"echo tests >> {self.order}",
            "BENCH_CMD": f'echo "bench $BENCH_BUDGET_S" >> {self.order}',
        }
        env = {**os.environ, "OUT": str(self.out)}
        env |= {f"GPU_CHECK_{k}": str(v) for k, v in {**commands, **settings}.items()}
        start = time.monotonic()
        done = subprocess.run(["bash", str(SCRIPT), *steps], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        self.seconds = time.monotonic() - start
        self.rc, self.console, self.stderr = done.returncode, done.stdout, done.stderr
        summary = self.out / "summary.txt"
        self.summary = summary.read_text().splitlines() if summary.exists() else []
        self.steps = self.order.read_text().split("\n")[:-1] if self.order.exists() else []
        self.files = sorted(
            str(p.relative_to(self.out)) for p in self.out.rglob("*") if p.is_file()
        )

    def line(self, step: str) -> str:
        return next(line for line in self.summary if line.startswith(f"{step}: "))


def check(tmp_path: Path, *steps: str, **settings: object) -> Check:
    """Runs the script with stand-in steps; ``settings`` set GPU_CHECK_<KEY> (TOTAL_S=…)."""
    return Check(tmp_path, steps, settings)


def test_builds_then_tests_then_benches_with_the_time_left(tmp_path):
    run = check(tmp_path, TOTAL_S=100, TESTS_S=10, BENCH_TAIL_S=5)
    assert run.rc == 0, run.console + run.stderr
    assert run.steps[:2] == ["build", "tests"] and run.steps[2].startswith("bench ")
    assert 90 <= int(run.steps[2].split()[1]) <= 95  # its limit (what is left) less the tail
    assert [line.split(":")[0] for line in run.summary] == [
        "environment",
        "build",
        "tests",
        "bench",
    ]
    assert re.fullmatch(r"build: ok in 0s \(limit (89|90)s\)", run.line("build"))
    assert run.files == ["gpu_check.log", "summary.txt"]
    log = (run.out / "gpu_check.log").read_text()
    assert log.index("=== environment") < log.index("environment\n") < log.index("=== build")


def test_a_hanging_build_leaves_the_tests_their_time(tmp_path):
    tests = f"sleep 2; echo tests >> {tmp_path}/order"
    run = check(tmp_path, TOTAL_S=9, TESTS_S=4, BENCH_MIN_S=1, BENCH_TAIL_S=1,
                BUILD_CMD="sleep 60", TESTS_CMD=tests)  # fmt: skip
    assert run.rc == 1
    assert re.fullmatch(r"build: TIMEOUT after (4|5)s \(limit (4|5)s\)", run.line("build"))
    assert re.fullmatch(r"tests: ok in (2|3)s \(limit 4s\)", run.line("tests"))
    assert run.steps[0] == "tests" and run.steps[1].startswith("bench ")
    assert run.seconds < 9 + 5


def test_a_failing_step_fails_the_check_and_the_next_steps_still_run(tmp_path):
    run = check(tmp_path, TESTS_CMD="echo 3 failed, 190 passed; exit 3")
    assert run.rc == 1
    assert run.line("tests").startswith("tests: FAILED (exit 3) in ")
    assert "3 failed, 190 passed" in run.console  # the failed step's output, on the console
    assert run.steps[0] == "build" and run.steps[1].startswith("bench ")
    assert run.line("bench").startswith("bench: ok")


def test_a_hanging_bench_is_stopped_with_its_children_inside_the_total(tmp_path):
    late = f"bash -c 'sleep 5; echo late >> {tmp_path}/order'; true"  # outlives its limit
    run = check(tmp_path, TOTAL_S=4, BENCH_MIN_S=1, BENCH_CMD=late)
    assert run.rc == 1 and run.line("bench").startswith("bench: TIMEOUT after ")
    assert run.seconds < 4 + 5
    time.sleep(max(0.0, 7 - run.seconds))
    assert "late" not in run.order.read_text()  # the bench's own child was killed too


def test_a_bench_with_too_little_time_left_is_not_run(tmp_path):
    run = check(tmp_path, TOTAL_S=100, TESTS_S=10, BENCH_MIN_S=200)
    assert run.rc == 1 and "bench: not run (" in run.line("bench")
    assert run.steps == ["build", "tests"]


def test_more_files_than_the_gpu_machine_returns_fail_the_check(tmp_path):
    nine = 'mkdir -p "$BENCH_DIR/a/b"; for i in 1 2 3 4 5 6 7 8; do : > "$BENCH_DIR/$i"; done'
    run = check(tmp_path, BENCH_CMD=nine + '; : > "$BENCH_DIR/a/b/deep"')
    assert run.rc == 1 and len(run.files) == 11
    assert run.line("output").startswith("output: 11 files (1 more than two folders down) in ")


def test_named_steps_run_alone_in_order_and_unknown_ones_are_refused(tmp_path):
    run = check(tmp_path, "bench", "tests")
    assert run.rc == 0 and run.steps[0] == "tests" and run.steps[1].startswith("bench ")
    assert [line.split(":")[0] for line in run.summary] == ["environment", "tests", "bench"]
    refused = check(tmp_path, "tests", "benhc")
    assert refused.rc == 2 and refused.summary == [] and refused.console == ""
    assert refused.stderr == "gpu_check.sh: unknown step 'benhc'; choose from: build tests bench\n"


@pytest.mark.parametrize("fails", [False, True])
def test_the_summary_ends_with_the_bench_tables_and_its_failures(tmp_path, fails):
    """A stand-in bench leaves the four files the real one writes; the summary gets its
    short tables, and a failure it recorded fails the check."""
    rows = []
    for impl, ms in (("eager", 2.0), ("triton", 1.0)):
        rows.append(microbench.Row("hadamard_mux", 2, "s", "fwd", impl, ms, "graph", 1.0, 0.5,
                                   math.nan, math.nan, 2.0 / ms, math.nan, math.nan))  # fmt: skip
    if fails:
        error = "OutOfResources: out of resource: shared memory"
        rows[1] = microbench.Row("hadamard_mux", 2, "s", "fwd", "triton", math.nan, "failed",
                                 *[math.nan] * 7, error=error)  # fmt: skip
    meta = {"meta": {"unmeasured": ["mlp_demux N=40"], "errors": []}, "end_to_end": []}
    saved = tmp_path / "saved.json"
    saved.write_text(report.to_json({**meta, "ops": [r.as_dict() for r in rows]}))
    four = (f'mkdir -p "$BENCH_DIR"; cp {saved} "$BENCH_DIR/results.json"; cd "$BENCH_DIR"; '
            ": > ops.csv; : > end_to_end.csv; : > bench.png")  # fmt: skip
    run = check(tmp_path, BENCH_CMD=four, SUMMARY_S=300)  # a slow import of torch here
    assert len(run.files) == 6 and "output" not in " ".join(run.summary)
    text = "\n".join(run.summary)
    assert "| hadamard_mux |" in text and "Not measured (time budget): mlp_demux N=40" in text
    if fails:
        assert run.rc == 1 and "1 bench failure(s)\n- OutOfResources: out of resource" in text
    else:
        assert run.rc == 0 and "0 bench failure(s)" in text
