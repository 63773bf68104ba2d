"""Every bad command line ends in one line on stderr and no traceback: argparse's usage
error (exit 2) for a bad argument, ``muxkernels <command>: error: …`` (exit 1) for a
failure while running; outputs that are skipped are said on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from muxkernels.__main__ import main
from muxkernels.bench import cli, report, timing

TINY = ["--device", "cpu", "--groups", "1", "--length", "3", "--d", "8"]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and the last stderr line of ``muxkernels <argv>``, with no traceback."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err.strip().splitlines()[-1] if err.strip() else ""


@pytest.fixture
def fake_timer(monkeypatch):
    monkeypatch.setattr(timing, "time_call", lambda fn, device, *, graph=True, min_run_s=0: (
        fn(), timing.Timing(1.0, "cpu"))[1])  # fmt: skip
    monkeypatch.setattr(timing, "copy_gbs", lambda nbytes, device: 1.0)
    monkeypatch.setattr(timing, "matmul_tflops", lambda m, k, n, dtype, device: 1.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--n", "0"], "argument --n: '0' is not an integer >= 1"),
        (["bench", "--n", "-3"], "argument --n: '-3' is not an integer >= 1"),
        (["bench", "--e2e-n", "0"], "argument --e2e-n: '0' is not an integer >= 1"),
        (["bench", "--groups", "0"], "argument --groups: '0' is not an integer >= 1"),
        (["bench", "--length", "x"], "argument --length: 'x' is not an integer >= 1"),
        (["bench", "--d", "-1"], "argument --d: '-1' is not an integer >= 1"),
        (["bench", "--batch-sizes", "0"], "argument --batch-sizes: '0' is not an integer"),
        (["bench", "--threads", "0"], "argument --threads: '0' is not an integer >= 1"),
        (["bench", "--budget-s", "-1"], "argument --budget-s: '-1' is not a number >= 0"),
        (["bench", "--budget-s", "nan"], "argument --budget-s: 'nan' is not a number >= 0"),
        (["bench", "--device", "tpu"], "argument --device: 'tpu' is not a device"),
        (["bench", "--device", "cuda"], "argument --device: 'cuda' cannot run here"),
        (["bench", "--no-ops", "--no-e2e"], "--no-ops with --no-e2e measures nothing"),
        (["bench", "--report", "missing.json"], "argument --report: 'missing.json' is not a file"),
        (["bench", "--resume", "missing.json"], "argument --resume: 'missing.json' is not a file"),
        (["bench", "--readme", "missing.md", "--no-ops"], "--readme 'missing.md' is not a file"),
        (["demo", "--instances", "0"], "argument --instances: '0' is not an integer >= 1"),
        (["demo", "--steps", "0"], "argument --steps: '0' is not an integer >= 1"),
        (["demo", "--threads", "0"], "argument --threads: '0' is not an integer >= 1"),
        (["demo", "--seed", "-1"], "argument --seed: '-1' is not an integer >= 0"),
        (["demo", "--device", "tpu"], "argument --device: 'tpu' is not a device"),
        (["check", "--device", "gpu"], "argument --device: 'gpu' is not a device"),
        (["check", "--dtypes", "int8"], "argument --dtypes: invalid choice: 'int8'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_are_one_usage_line(argv, message, capsys, monkeypatch):
    if argv[-1] == "cuda":
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code, line = _run(argv, capsys)
    assert code == 2 and message in line, line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not a muxkernels bench results file (not JSON"),
        ("{}", "is not a muxkernels bench results file"),
    ],
)
@pytest.mark.parametrize("option", ["--report", "--resume"])
def test_unreadable_results_files_are_one_error_line(tmp_path, capsys, option, content, message):
    path = tmp_path / "results.json"
    path.write_text(content)
    code, line = _run(["bench", *TINY, "--no-e2e", option, str(path)], capsys)
    assert code == 1 and line.startswith("muxkernels bench: error: ") and message in line


def _no_e2e_run(tmp_path: Path, capsys) -> Path:
    out = tmp_path / "out"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{report.README_START}\nold\n{report.README_END}\n")
    argv = [*TINY, "--no-e2e", "--ops", "hadamard_mux", "--n", "2", "--modes", "fwd",
            "--out", str(out), "--readme", str(readme)]  # fmt: skip
    assert cli.main(argv) == 0
    text = readme.read_text()
    assert "| hadamard_mux |" in text and "End to end" not in text and "old" not in text
    capsys.readouterr()
    return out / "results.json"


def test_a_run_without_end_to_end_renders_its_readme_and_report(tmp_path, capsys, fake_timer):
    saved = _no_e2e_run(tmp_path, capsys)
    readme = tmp_path / "again.md"
    readme.write_text(f"{report.README_START}\n{report.README_END}\n")
    assert main(["bench", "--report", str(saved), "--readme", str(readme)]) == 0
    assert "| hadamard_mux |" in readme.read_text()


def test_a_readme_without_the_markers_is_one_error_line(tmp_path, capsys, fake_timer):
    saved = _no_e2e_run(tmp_path, capsys)
    readme = tmp_path / "plain.md"
    readme.write_text("# no markers\n")
    code, line = _run(["bench", "--report", str(saved), "--readme", str(readme)], capsys)
    assert code == 1 and "has no <!-- bench-results:start -->" in line


def test_a_skipped_plot_is_said(tmp_path, capsys, fake_timer, monkeypatch):
    monkeypatch.setattr(report, "plot", lambda results, path: False)
    argv = [*TINY, "--no-e2e", "--ops", "hadamard_mux", "--n", "2", "--modes", "fwd",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    assert "skipped bench.png: matplotlib is not installed" in capsys.readouterr().err
    assert json.loads((tmp_path / "results.json").read_text())["ops"]


@pytest.mark.parametrize("command", ["bench", "demo", "check", "info"])
def test_help_has_no_rest_markup_and_gives_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text
    if command == "demo":
        assert "(default 1 2 4 8; digits: 1 2 4 8 16)" in text and "(default: cpu)" in text
