"""DDP and FSDP2 with default settings: two CPU processes (gloo) train the published
objective for two steps; the gradients equal the single-process average, and nothing warns.

Default settings matter: DDP's find_unused_parameters=False fails when a trainable
parameter gets no gradient, and FSDP2 warns when the module returns a view.
"""

from __future__ import annotations

import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from muxkernels.models import MultiplexedModel, MuxConfig

CONFIGS = {
    "datamux-index-sequence": dict(task="sequence", num_labels=3),
    "datamux-index-token": dict(task="token", num_labels=3),
    "datamux-mlp-token": dict(task="token", num_labels=3, demuxing_variant="mlp"),
    "muxplms-index_pos-sequence": dict(
        task="sequence", num_labels=3, demuxing_variant="index_pos", heads="muxplms_bert",
        num_hidden_demux_layers=3, cls_at_first=True,
    ),
    "muxplms-index_pos-retrieval": dict(
        task="retrieval", demuxing_variant="index_pos", heads="muxplms_electra",
        num_hidden_demux_layers=3,
    ),
}  # fmt: skip
N, LENGTH, WORLD = 2, 5, 2


def build(name: str) -> MultiplexedModel:
    torch.manual_seed(0)
    config = MuxConfig(40, N, hidden_size=8, num_heads=2, intermediate_size=16, filler_id=39,
                       cls_id=36, pad_token_id=0, **CONFIGS[name])  # fmt: skip
    return MultiplexedModel(config, backend="reference")


def batch(name: str, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """Rank ``rank``'s ids and labels, and its generator for the retrieval draws."""
    generator = torch.Generator().manual_seed(100 + rank)
    ids = torch.randint(1, 30, (2 * N, LENGTH), generator=generator)
    task = CONFIGS[name]["task"]
    high = {"sequence": 3, "token": 3, "retrieval": 40}[task]
    shape = (2 * N,) if task == "sequence" else (2 * N, LENGTH)
    return ids, torch.randint(high, shape, generator=generator), generator


def reference_grads(name: str) -> dict[str, torch.Tensor]:
    """The average over the ranks' batches of the single-process gradients."""
    model = build(name)
    for rank in range(WORLD):
        ids, labels, generator = batch(name, rank)
        (model(ids, labels=labels, generator=generator).loss / WORLD).backward()
    return {k: p.grad for k, p in model.named_parameters() if p.requires_grad}


def worker(rank: int, port: int, wrapper: str, queue) -> None:
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for name in CONFIGS:
                model = build(name)
                if wrapper == "ddp":
                    wrapped = torch.nn.parallel.DistributedDataParallel(model)
                else:
                    from torch.distributed.fsdp import fully_shard

                    wrapped = fully_shard(model)
                expected = reference_grads(name)
                for _ in range(2):  # DDP reports an unused parameter on the second step
                    model.zero_grad()
                    ids, labels, generator = batch(name, rank)
                    wrapped(ids, labels=labels, generator=generator).loss.backward()
                for key, param in model.named_parameters():
                    if not param.requires_grad:
                        continue
                    grad = param.grad.full_tensor() if wrapper == "fsdp" else param.grad
                    torch.testing.assert_close(grad, expected[key], msg=f"{name}: {key}")
        # both ranks done before either tears its process group down: a rank that left
        # early once aborted the other under heavy load ("terminate called without an
        # active exception")
        dist.barrier()
        queue.put((rank, [str(w.message) for w in caught if "view" in str(w.message)]))
    except Exception as err:  # the parent reports it
        queue.put((rank, repr(err)))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp"])
def test_two_processes_train_with_default_settings(wrapper):
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(
        worker, args=(free_port(), wrapper, queue), nprocs=WORLD, start_method="spawn"
    )
    results = dict(queue.get() for _ in range(WORLD))
    assert results == {0: [], 1: []}
