"""``muxkernels convert``: a published DataMUX / MUX-PLMs checkpoint to a muxkernels model
file, and back (``--to published``)."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

from .multiplexed import MultiplexedModel
from .published import read_checkpoint, skipped_keys
from .published_config import FAMILIES, HEAD_FAMILIES

USER_ERRORS = (ValueError, OSError, ImportError, pickle.UnpicklingError)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``convert`` subcommand's arguments."""
    convert = sub.add_parser(
        "convert",
        help="published DataMUX / MUX-PLMs checkpoint <-> muxkernels model file",
        description="Convert a published DataMUX / MUX-PLMs checkpoint into a muxkernels "
        "model file, or (--to published) a muxkernels model file into a published checkpoint "
        "directory that the published code loads with from_pretrained.",
    )
    convert.add_argument(
        "checkpoint",
        help="--to muxkernels: a published checkpoint directory (config.json + "
        "pytorch_model.bin or model.safetensors) or state file; --to published: a file "
        "written by MultiplexedModel.save or by this command",
    )
    convert.add_argument("--out", required=True, help="the file (or, --to published, directory)")
    convert.add_argument("--to", choices=["muxkernels", "published"], default="muxkernels")
    convert.add_argument("--config", help="the published config.json, if not in the checkpoint")
    convert.add_argument("--task", choices=["sequence", "token", "retrieval"],
                         help="default: from the config's architectures")  # fmt: skip
    convert.add_argument("--family", choices=list(FAMILIES), help="default: its model_type")
    convert.add_argument("--num-labels", type=int, help="labels of a new task head")
    convert.add_argument(
        "--new-task-heads",
        action="store_true",
        help="a pretraining checkpoint into a task model: fresh classifier, its "
        "pretraining-only heads dropped",
    )


def _to_muxkernels(args: argparse.Namespace) -> None:
    state, stored = read_checkpoint(args.checkpoint)
    model = MultiplexedModel.from_published(
        state,
        args.config or stored,
        task=args.task,
        family=args.family,
        new_task_heads=args.new_task_heads,
        overrides=None if args.num_labels is None else {"num_labels": args.num_labels},
    )
    c = model.config
    family = HEAD_FAMILIES[c.heads]
    labels = f" ({c.num_labels} labels)" if c.task != "retrieval" else ""
    print(
        f"published {family} model: N={c.num_instances}, {c.muxing_variant}, "
        f"{c.demuxing_variant} demux, task {c.task}{labels}, {c.num_layers} layers, "
        f"d={c.hidden_size}, vocabulary {c.vocab_size}"
    )
    skipped = skipped_keys(state, FAMILIES[family].prefix)
    if skipped:
        print(f"skipped, as the published loader does: {', '.join(skipped)}")
    model.save(args.out)
    print(f"wrote {args.out} (load it with muxkernels.models.MultiplexedModel.load)")


def _to_published(args: argparse.Namespace) -> None:
    try:
        model = MultiplexedModel.load(args.checkpoint)
    except (RuntimeError, pickle.UnpicklingError) as err:  # a file that is no checkpoint
        reason = str(err).strip().splitlines()[0]
        raise ValueError(f"cannot read {args.checkpoint}: {reason}") from err
    _, values = model.to_published(args.out)
    model_class = values["architectures"][0]
    print(f"wrote {Path(args.out) / 'config.json'} and pytorch_model.bin ({model_class})")


def run(args: argparse.Namespace) -> int:
    """Convert; a user mistake ends in one line on stderr and exit status 2."""
    try:
        if args.to == "published":
            _to_published(args)
        else:
            _to_muxkernels(args)
    except USER_ERRORS as err:
        print(f"muxkernels convert: error: {err}", file=sys.stderr)
        return 2
    return 0
