"""``muxkernels demo --task digits`` in its tiny --quick form, and its errors."""

from __future__ import annotations

import io
import re
import sys

import pytest
import torch

from muxkernels import vision_demo
from muxkernels.__main__ import main
from muxkernels.nn.image_multiplexer import PUBLISHED_MODES

pytest.importorskip("sklearn", reason="the digits demo reads scikit-learn's data set")


pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # the demos set it


def test_the_split_holds_out_a_fifth_with_a_fixed_seed():
    split = vision_demo.load_digits_split(0)
    assert split.test_images.shape == (360, 1, 8, 8) and split.train_images.shape[0] == 1437
    assert float(split.train_images.min()) >= 0.0 and float(split.train_images.max()) <= 1.0
    again = vision_demo.load_digits_split(0)
    assert torch.equal(split.test_labels, again.test_labels)
    assert not torch.equal(split.test_labels, vision_demo.load_digits_split(1).test_labels)


def test_quick_demo_prints_every_n_and_every_published_mode():
    out, progress = io.StringIO(), io.StringIO()
    by_n, by_mode = vision_demo.run_digits_demo([1, 4], quick=True, out=out, progress=progress)
    assert [r.num_instances for r in by_n] == [1, 4]
    assert [r.mode for r in by_mode] == list(PUBLISHED_MODES)
    assert {r.num_instances for r in by_mode} == {vision_demo.MODES_AT}
    for r in (*by_n, *by_mode):
        assert 0.0 <= r.accuracy <= 1.0 and r.images_per_second > 0
    text = out.getvalue()
    assert re.search(r"^\s+1\s+Gaussian\s+4\s+1\s.*\s1\.00x$", text, flags=re.MULTILINE)
    assert re.search(r"^\s+4\s+nonlinear-expand\s+8\s", text, flags=re.MULTILINE)
    assert "N=4" in progress.getvalue() and "remap" in progress.getvalue()


def test_the_modes_are_compared_only_with_n_4():
    out = io.StringIO()
    by_n, by_mode = vision_demo.run_digits_demo([3], quick=True, out=out, progress=io.StringIO())
    assert [r.num_instances for r in by_n] == [3] and by_mode == []
    assert "every published mode" not in out.getvalue()


def test_epochs_of_each_n():
    """Listed Ns take their own (harder Ns up to 8 train longer); others the largest listed
    N below them."""
    epochs = [vision_demo.epochs_for(n, vision_demo.FULL) for n in (1, 2, 4, 8)]
    assert epochs == sorted(epochs)
    assert vision_demo.epochs_for(3, vision_demo.FULL) == epochs[1]
    assert vision_demo.epochs_for(32, vision_demo.FULL) == vision_demo.FULL.epochs[16]


def test_cli_digits_quick_writes_the_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "digits.png"
    argv = ["demo", "--task", "digits", "--quick", "--instances", "2", "--plot", str(png)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "digits on cpu" in captured.out and f"wrote {png}" in captured.out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_scikit_learn_the_command_says_how_to_get_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now fails
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["demo", "--task", "digits", "--quick"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"muxkernels demo: error: {vision_demo.INSTALL_HINT}"]
    assert "pip install scikit-learn" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "digits", "--steps", "5"], "--steps applies to --task retrieval"),
        (["--plot", "x.png"], "--plot applies to --task digits"),
    ],
)
def test_cli_mistakes_are_one_line(argv, message, capsys):
    assert main(["demo", "--quick", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_run_refuses_bad_instances():
    with pytest.raises(ValueError, match="instances must be positive ints"):
        vision_demo.run_digits_demo([2, 0], quick=True, out=io.StringIO())
