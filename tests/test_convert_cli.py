"""``muxkernels convert``: a published checkpoint directory to a model file and back, and one
clear line (no traceback) for each user mistake."""

from __future__ import annotations

import json
import re

import pytest
import torch
from published_reference import make_spec, published_logits, random_published_state

from muxkernels.__main__ import main
from muxkernels.models import MultiplexedModel


@pytest.fixture
def checkpoint(tmp_path):
    """A published MUX-PLMs BERT token-classification checkpoint directory, with a pooler."""
    spec = make_spec("bert", "token", muxing_variant="random_ortho_low_rank")
    state = random_published_state(spec)
    directory = tmp_path / "published"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(spec))
    pooler = {"bert.pooler.dense.weight": torch.zeros(12, 12, dtype=torch.float64)}
    torch.save(state | pooler, directory / "pytorch_model.bin")
    return spec, state, directory


def test_convert_both_ways(checkpoint, tmp_path, capsys):
    spec, state, directory = checkpoint
    out = tmp_path / "model.pt"
    assert main(["convert", str(directory), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "published bert model: N=3, random_ortho_low_rank, index_pos demux, task token" in printed
    )
    assert "skipped, as the published loader does: bert.pooler.dense.weight" in printed
    model = MultiplexedModel.load(out).eval()
    ids = torch.randint(110, 600, (6, 5), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(ids), published_logits(spec, state, ids))
    back = tmp_path / "back"
    assert main(["convert", str(out), "--to", "published", "--out", str(back)]) == 0
    assert "MuxedBertForTokenClassification" in capsys.readouterr().out
    written = torch.load(back / "pytorch_model.bin", weights_only=True)
    assert written.keys() == state.keys()
    for key, tensor in state.items():
        torch.testing.assert_close(written[key], tensor, msg=key)
    assert (
        json.loads((back / "config.json").read_text())["muxing_variant"] == "random_ortho_low_rank"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing-dir"], "no checkpoint at missing-dir"),
        (["{dir}", "--task", "sequence"], "task='sequence' but the config's architectures say"),
        (["{dir}/config.json"], "cannot read .*config.json as a PyTorch state dict"),
        (["{dir}/config.json", "--to", "published"], "cannot read .*config.json"),
    ],
    ids=["missing", "wrong-task", "not-a-state-dict", "not-a-model-file"],
)
def test_user_mistakes_give_one_line_and_status_2(checkpoint, tmp_path, capsys, arguments, message):
    directory = checkpoint[2]
    arguments = [a.format(dir=directory) for a in arguments]
    assert main(["convert", *arguments, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("muxkernels convert: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    assert re.search(message, err), err
