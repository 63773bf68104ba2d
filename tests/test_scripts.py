"""The shell scripts parse, and no file carries an unresolved merge."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKERS = ("<<<<<<< ", ">>>>>>> ")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("*.sh")), ids=lambda p: p.name)
def test_script_parses(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_file_has_merge_conflict_markers():
    files = [
        path
        for pattern in ("*.py", "*.sh", "*.md", "*.toml", "*.cu", "*.cpp", "*.h", "*.cuh")
        for path in ROOT.rglob(pattern)
        if not any(part.startswith(".") or part == "build" for part in path.relative_to(ROOT).parts)
    ]
    conflicted = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if line.startswith(MARKERS)
    ]
    assert not conflicted, f"unresolved merge conflict markers at {', '.join(conflicted)}"


def test_ci_runs_the_readme_test_command():
    """.ci/run's last line is the README's test command, word for word."""
    readme = (ROOT / "README.md").read_text()
    command = next(
        line
        for line in readme.splitlines()
        if line.startswith("bash scripts/install.sh &&") and "pytest" in line
    )
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == command
