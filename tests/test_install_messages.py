"""Where the compiled extension is missing, the install, ``muxkernels info`` and the backends
say why and give the command that builds it for the torch at hand."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import muxkernels
from muxkernels import _backend, _extension, _install
from muxkernels.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
ABSENT = ModuleNotFoundError("No module named 'muxkernels._C'", name="muxkernels._C")
ISOLATED = "pip builds in an isolated environment without your torch"
BUILD = "MUXKERNELS_BUILD_CUDA=1 pip install --no-build-isolation"
CUDA_TORCH = "needs a CUDA build of torch"
WHEN = "2026-01-01 00:00 UTC"
NO_TORCH = ImportError("No module named 'torch'")


def _record(built: bool, reason: str, torch_version: str = "2.14.1") -> dict:
    return {"built": built, "reason": reason, "torch": torch_version, "time": WHEN}


@pytest.fixture
def cuda_torch(monkeypatch):
    """A torch built with CUDA and a CUDA toolkit found, whatever this machine has."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(_install, "find_cuda_home", lambda: "/usr/local/cuda")


@pytest.fixture
def cpu_torch(monkeypatch):
    """A torch built without CUDA."""
    monkeypatch.setattr(torch.version, "cuda", None)


@pytest.fixture
def absent(monkeypatch):
    """The extension is not installed; setup.py recorded that build isolation hid torch."""
    monkeypatch.setattr(_extension, "load", lambda: False)
    monkeypatch.setattr(_extension, "load_error", lambda: ABSENT)
    reason = _install.build_decision("auto", NO_TORCH, None, None, None)
    monkeypatch.setattr(_install, "read_record", lambda path=None: _record(*reason))


# setup.py's decision and its record


def test_build_isolation_is_named_as_the_reason():
    build, reason = _install.build_decision("auto", NO_TORCH, None, None, "/usr/local/cuda")
    assert not build
    assert "No module named 'torch'" in reason and ISOLATED in reason
    assert "--no-build-isolation" in reason


@pytest.mark.parametrize(
    ("mode", "torch_cuda", "cuda_home", "expected"),
    [
        ("skip", "13.0", "/usr/local/cuda", "MUXKERNELS_BUILD_CUDA=0 was set"),
        ("auto", None, "/usr/local/cuda", "torch 2.13.0+cpu was built without CUDA"),
        ("auto", "13.0", None, "nvcc (the CUDA toolkit) was not found"),
    ],
    ids=["disabled", "cpu-torch", "no-nvcc"],
)
def test_each_skip_has_its_reason(mode, torch_cuda, cuda_home, expected):
    version = "2.13.0+cpu" if torch_cuda is None else "2.14.1"
    build, reason = _install.build_decision(mode, None, version, torch_cuda, cuda_home)
    assert not build
    assert expected in reason


def test_a_build_records_what_it_builds_with():
    build, reason = _install.build_decision("auto", None, "2.14.1", "13.0", "/usr/local/cuda")
    assert build and reason == "CUDA 13.0 from /usr/local/cuda for torch 2.14.1"


def test_record_round_trip(tmp_path):
    path = tmp_path / "_build_info.json"
    _install.write_record(False, "why not", "2.14.1", "13.0", path)
    record = _install.read_record(path)
    assert record["built"] is False and record["reason"] == "why not"
    assert record["torch"] == "2.14.1" and record["torch_cuda"] == "13.0"


@pytest.mark.parametrize("content", [None, "not json", "[1, 2]", "{}"])
def test_missing_or_unreadable_record_is_none(tmp_path, content):
    path = tmp_path / "_build_info.json"
    if content is not None:
        path.write_text(content)
    assert _install.read_record(path) is None


def _run_setup(tmp_path: Path, env_update: dict[str, str], hide_torch: bool):
    """setup.py on a copy of the project (its record lands in the copy), with torch
    hidden as in pip's isolated build environment."""
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "muxkernels").mkdir()
    shutil.copy(ROOT / "muxkernels" / "_install.py", tmp_path / "muxkernels" / "_install.py")
    hide = "sys.modules['torch'] = None; " if hide_torch else ""
    code = (
        f"import runpy, sys; {hide}sys.argv = ['setup.py', '--name']; "
        "runpy.run_path('setup.py', run_name='__main__')"
    )
    env = {k: v for k, v in os.environ.items() if k != "MUXKERNELS_BUILD_CUDA"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env | env_update,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, _install.read_record(tmp_path / "muxkernels" / "_build_info.json")


def test_setup_records_an_isolated_build(tmp_path):
    result, record = _run_setup(tmp_path, {}, hide_torch=True)
    assert result.returncode == 0, result.stderr
    assert record is not None and record["built"] is False
    assert ISOLATED in record["reason"]
    assert ISOLATED in result.stderr  # pip -v shows it too


def test_setup_records_a_disabled_build(tmp_path):
    result, record = _run_setup(tmp_path, {"MUXKERNELS_BUILD_CUDA": "0"}, hide_torch=False)
    assert result.returncode == 0, result.stderr
    assert record["built"] is False and "MUXKERNELS_BUILD_CUDA=0" in record["reason"]


def test_setup_forced_build_without_torch_fails_saying_why(tmp_path):
    result, _ = _run_setup(tmp_path, {"MUXKERNELS_BUILD_CUDA": "1"}, hide_torch=True)
    assert result.returncode != 0
    assert "MUXKERNELS_BUILD_CUDA=1 but torch could not be imported" in result.stderr


# why the extension is absent


def test_never_built_copy():
    assert "never built" in _install.why_absent(ABSENT, None)


def test_skipped_build_gives_its_reason():
    text = _install.why_absent(ABSENT, _record(False, "torch 2.13.0+cpu was built without CUDA"))
    assert "did not build" in text and "built without CUDA" in text


def test_failed_build_is_said():
    text = _install.why_absent(ABSENT, _record(True, "CUDA 13.0 from /usr/local/cuda"))
    assert "that build failed" in text and "pip -v" in text


def test_import_error_gives_its_text_and_the_torch_it_was_built_for():
    error = ImportError("_C.so: undefined symbol: _ZN3c104cuda9SetDeviceEi")
    text = _install.why_absent(error, _record(True, "CUDA 13.0", torch_version="2.0.0"))
    assert "does not load: ImportError: _C.so: undefined symbol: _ZN3c104cuda9SetDeviceEi" in text
    assert f"built against torch 2.0.0, this is torch {torch.__version__}" in text


# the command for the torch at hand


@pytest.mark.usefixtures("cuda_torch")
def test_command_with_cuda_torch_and_nvcc_builds_without_isolation():
    command = _install.build_command()
    assert BUILD in command
    assert CUDA_TORCH not in command and "toolkit" not in command


@pytest.mark.usefixtures("cuda_torch")
def test_command_without_nvcc_installs_the_toolkit_first(monkeypatch):
    monkeypatch.setattr(_install, "find_cuda_home", lambda: None)
    command = _install.build_command()
    assert command.index("install the CUDA toolkit 13.0") < command.index(BUILD)


@pytest.mark.usefixtures("cpu_torch")
@pytest.mark.parametrize("nvcc", [True, False], ids=["nvcc", "no-nvcc"])
def test_command_on_cpu_torch_installs_a_cuda_torch_first(monkeypatch, nvcc):
    monkeypatch.setattr(_install, "find_cuda_home", lambda: "/usr/local/cuda" if nvcc else None)
    command = _install.build_command()
    assert command.startswith(f"the cuda backend {CUDA_TORCH}")
    assert command.index("--index-url https://download.pytorch.org/whl/cu") < command.index(BUILD)
    assert ("install the CUDA toolkit" in command) is not nvcc


@pytest.mark.usefixtures("cuda_torch")
def test_command_installs_ninja_when_missing(monkeypatch):
    monkeypatch.setattr(_install.shutil, "which", lambda name: None)
    assert f"pip install ninja && {BUILD}" in _install.build_command()


def test_command_targets_this_source_tree():
    assert f"-e {ROOT}" in _install.build_command()


# where the user sees it


@pytest.mark.usefixtures("absent", "cuda_torch")
def test_info_says_why_and_how(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    absent_line = next(line for line in out.splitlines() if "muxkernels._C" in line)
    assert "absent" in absent_line and ISOLATED in absent_line
    assert f"to build it: {BUILD}" in out
    assert "backend cuda" in out and "needs muxkernels._C (see above)" in out


@pytest.mark.usefixtures("absent", "cpu_torch")
def test_info_on_cpu_torch_never_offers_a_build_that_cannot_work(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"to build it: the cuda backend {CUDA_TORCH}" in out


@pytest.mark.usefixtures("cuda_torch")
def test_info_says_what_was_built(capsys, monkeypatch):
    monkeypatch.setattr(_extension, "load", lambda: True)
    record = _record(True, "CUDA 13.0 from /usr/local/cuda for torch 2.14.1, nvcc -gencode=x")
    monkeypatch.setattr(_install, "read_record", lambda path=None: record)
    assert main(["info"]) == 0
    assert "loaded (built 2026-01-01 00:00 UTC with CUDA 13.0" in capsys.readouterr().out


@pytest.mark.usefixtures("absent", "cuda_torch")
@pytest.mark.parametrize("by_variable", [False, True], ids=["argument", "variable"])
def test_cuda_backend_that_cannot_run_says_why_and_how(monkeypatch, by_variable):
    backend = "cuda"
    if by_variable:
        monkeypatch.setenv(_backend.ENV_VAR, "cuda")
        backend = "auto"
    with pytest.raises(RuntimeError) as info:
        muxkernels.hadamard_mux(torch.randn(4, 3, 8), torch.randn(2, 8), backend=backend)
    message = str(info.value)
    assert ISOLATED in message and BUILD in message
    assert message.index(ISOLATED) < message.index(f"to build it: {BUILD}")


@pytest.mark.usefixtures("absent", "cpu_torch")
def test_cuda_backend_on_cpu_torch_says_it_needs_a_cuda_torch():
    with pytest.raises(RuntimeError, match=f"to build it: the cuda backend {CUDA_TORCH}"):
        muxkernels.hadamard_mux(torch.randn(4, 3, 8), torch.randn(2, 8), backend="cuda")


@pytest.mark.usefixtures("absent", "cuda_torch")
def test_auto_on_a_gpu_without_the_extension_warns_once(monkeypatch):
    monkeypatch.setattr(_backend, "_warned_extension_missing", False)
    cuda = torch.device("cuda")
    with pytest.warns(_backend.ExtensionMissingWarning, match=ISOLATED) as caught:
        _backend.resolve("hadamard_mux", "auto", cuda, ("cuda",))
    assert BUILD in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _backend.resolve("hadamard_mux", "auto", cuda, ("cuda",)) == "reference"


def test_auto_on_the_cpu_never_warns(monkeypatch):
    monkeypatch.setattr(_extension, "load", lambda: False)
    monkeypatch.setattr(_backend, "_warned_extension_missing", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _backend.resolve("hadamard_mux", "auto", torch.device("cpu"), ("cuda", "cpu"))


def test_the_record_is_package_data():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"_build_info.json"' in pyproject
    assert json.dumps(_install.RECORD_PATH.name) in pyproject
