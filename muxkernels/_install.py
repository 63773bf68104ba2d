"""What the install built, why ``muxkernels._C`` is missing, and the command that builds it.

setup.py decides whether to compile the CUDA extension (``build_decision``) and records
the decision and its reason in the package (``_build_info.json``, ``write_record``): pip's
build isolation hid torch (a plain ``pip install .``), torch has no CUDA, nvcc is not
found, or ``MUXKERNELS_BUILD_CUDA=0``. At run time ``explain`` combines that record with
the extension's import error and the torch found now into one message: why the extension
is absent and the command that builds it for this torch (on a torch without CUDA, that
the ``cuda`` backend needs a CUDA build of torch first). ``muxkernels info``, a ``cuda``
backend asked for that cannot run, and ``auto`` on a GPU without the extension say it.

Only the standard library is imported at module level: setup.py loads this file by path,
where torch may not be importable (pip's isolated build environment).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

RECORD_PATH = Path(__file__).with_name("_build_info.json")
BUILD_ENV_VAR = "MUXKERNELS_BUILD_CUDA"
CUDA_TORCH_HINT = (
    "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu130 "
    "(or the command https://pytorch.org/get-started/locally/ gives for your CUDA version)"
)


def find_cuda_home() -> str | None:
    """The CUDA toolkit root that has bin/nvcc: CUDA_HOME, CUDA_PATH, /usr/local/cuda, or
    the directory above the nvcc on PATH; None when there is none."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "bin" / "nvcc").is_file():
            return candidate
    return None


def build_decision(
    mode: str,
    torch_error: BaseException | None,
    torch_version: str | None,
    torch_cuda: str | None,
    cuda_home: str | None,
) -> tuple[bool, str]:
    """Whether setup.py builds the extension, and why not (or what it builds with).

    ``mode`` is "auto", "force" or "skip" (``MUXKERNELS_BUILD_CUDA`` unset, 1, 0);
    ``torch_error`` the error importing torch at build time (None when it imported).
    """
    if mode == "skip":
        return False, f"{BUILD_ENV_VAR}=0 was set at install"
    if torch_error is not None:
        return False, (
            f"torch could not be imported while building ({torch_error}): pip builds in an "
            "isolated environment without your torch (a plain `pip install .`) unless given "
            "--no-build-isolation"
        )
    if not torch_cuda:
        return False, f"torch {torch_version} was built without CUDA"
    if cuda_home is None:
        return False, (
            "nvcc (the CUDA toolkit) was not found: not under CUDA_HOME, CUDA_PATH or "
            "/usr/local/cuda, nor on PATH"
        )
    return True, f"CUDA {torch_cuda} from {cuda_home} for torch {torch_version}"


def write_record(
    built: bool,
    reason: str,
    torch_version: str | None,
    torch_cuda: str | None,
    path: Path = RECORD_PATH,
) -> None:
    """Records setup.py's decision in the package (read back by ``read_record``)."""
    record = {
        "built": built,
        "reason": reason,
        "torch": torch_version,
        "torch_cuda": torch_cuda,
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


def read_record(path: Path = RECORD_PATH) -> dict | None:
    """setup.py's record of the last install of this copy, or None (never installed through
    setup.py, e.g. run from a source tree, or an unreadable record)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "built" in record else None


def source_dir() -> Path | None:
    """The source tree this package is imported from (an editable install or a checkout),
    or None for an installed copy."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "setup.py").is_file() else None


def build_command() -> str:
    """What to run to build ``muxkernels._C`` for the torch imported here.

    On a torch without CUDA the extension cannot be built, so the command starts by
    installing a CUDA torch (and says the ``cuda`` backend needs one); without nvcc, by
    installing the CUDA toolkit.
    """
    import torch

    install = f"{BUILD_ENV_VAR}=1 pip install --no-build-isolation {_install_target()}"
    if shutil.which("ninja") is None:
        install = f"pip install ninja && {install}"
    toolkit = find_cuda_home()
    if not torch.version.cuda:
        needs = "" if toolkit is not None else ", install the CUDA toolkit (nvcc)"
        return (
            f"the cuda backend needs a CUDA build of torch, and torch {torch.__version__} has "
            f"no CUDA: install one, e.g. {CUDA_TORCH_HINT}{needs}, then run {install}"
        )
    if toolkit is None:
        return (
            f"install the CUDA toolkit {torch.version.cuda} (nvcc) and set CUDA_HOME to its "
            f"root, then run {install}"
        )
    return install


def cpu_build_command() -> str:
    """What to run to build ``muxkernels._C_cpu``, the cpu backend's kernels (any torch)."""
    return f"pip install --no-build-isolation {_install_target()} (needs a C++ compiler)"


def _install_target() -> str:
    """What pip installs from: this source tree, editable, or the source directory."""
    source = source_dir()
    return f"-e {source}" if source is not None else "<the muxkernels source directory>"


def _absent(error: BaseException | None) -> bool:
    """Whether ``error`` says the extension module is not there at all (nothing to load)."""
    return error is None or (
        isinstance(error, ModuleNotFoundError) and error.name == "muxkernels._C"
    )


def why_absent(error: BaseException | None, record: dict | None) -> str:
    """Why the extension is not loaded: its import error, or the install's record."""
    import torch

    now = torch.__version__
    if not _absent(error):
        text = f"muxkernels._C is installed but does not load: {type(error).__name__}: {error}"
        built_with = (record or {}).get("torch") if (record or {}).get("built") else None
        if built_with and built_with != now:
            text += f" (it was built against torch {built_with}, this is torch {now})"
        return text
    if record is None:
        return (
            "muxkernels._C was never built for this copy of muxkernels (no record of a "
            "build by setup.py: installed without it, or run from a source tree)"
        )
    when = record.get("time", "an earlier install")
    if not record["built"]:
        return f"the install ({when}) did not build muxkernels._C: {record['reason']}"
    return (
        f"the install ({when}) compiled muxkernels._C with {record['reason']}, but it is not "
        "there: that build failed (run the install again with pip -v to see the compiler's "
        "error) or its file was removed"
    )


def explain(error: BaseException | None, record_path: Path = RECORD_PATH) -> str:
    """One message: why the extension is absent (``why_absent`` with the build record at
    ``record_path``), then what to run (``build_command``)."""
    return f"{why_absent(error, read_record(record_path))}; to build it: {build_command()}"


def describe_build(record_path: Path = RECORD_PATH) -> str:
    """What the install built, for ``muxkernels info`` when the extension loads."""
    record = read_record(record_path)
    if record is None or not record["built"]:
        return "no record of its build by setup.py"
    return f"built {record.get('time', 'by an earlier install')} with {record['reason']}"
