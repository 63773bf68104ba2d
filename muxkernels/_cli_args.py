"""argparse types and helpers shared by the ``muxkernels`` subcommands.

A bad value becomes argparse's one-line usage error (exit 2, no traceback); a failure
while running becomes one line on stderr and exit 1 (``run_or_report``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and each option's default in its help (unless the help
    already says it, or there is none to say)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = action.default in (None, False, argparse.SUPPRESS) or "default" in text
        return text if quiet else f"{text} (default: %(default)s)"


def plain(text: str | None) -> str:
    """A docstring for a help screen: reST's double backquotes removed."""
    return (text or "").replace("``", "")


def _bounded(kind: type, low: float, strict: bool, what: str) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value != value or value < low or (strict and value == low):  # NaN, range
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _bounded(int, 1, False, "an integer >= 1")
nonnegative_int = _bounded(int, 0, False, "an integer >= 0")
nonnegative_float = _bounded(float, 0.0, False, "a number >= 0")


def device(text: str) -> str:
    """cpu, or cuda / cuda:K when this torch sees CUDA devices (K below their count)."""
    name = text.strip().lower()
    try:
        parsed = torch.device(name)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu or cuda") from None
    if parsed.type == "cpu":
        return name
    if parsed.type != "cuda":
        raise argparse.ArgumentTypeError(f"{text!r} is not supported: use cpu or cuda")
    if not torch.cuda.is_available():
        why = "was built without CUDA" if not torch.version.cuda else "sees no GPU"
        raise argparse.ArgumentTypeError(
            f"{text!r} cannot run here: torch {torch.__version__} {why}; use cpu"
        )
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text!r}: only {torch.cuda.device_count()} CUDA device(s) here"
        )
    return name


def existing_file(text: str) -> Path:
    """A path to a file that exists."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    return path


def run_or_report(prog: str, run: Callable[[], int]) -> int:
    """``run()``, with a failure it raises (a file that cannot be read or written, a value
    the run refuses) printed as one line ``prog: error: …`` and exit status 1."""
    try:
        return run()
    except (OSError, ValueError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
