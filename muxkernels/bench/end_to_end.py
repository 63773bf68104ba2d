"""End-to-end throughput against N, as in the DataMUX paper (issue 6).

One randomly initialised encoder serves every N, task and implementation of a run:

- N = 1, "baseline": the plain model, ids (B, L) → embeddings → encoder → a standard head
  (token: Linear(d, labels) on every position; sequence: RoBERTa's head on position 0,
  out_proj(tanh(dense(h_0)))). B is searched over the candidates; the best is the baseline.
- N > 1: B' groups (the best baseline B, so a pass encodes as many rows as the best N = 1
  pass) of N instances each, index-prefixed to L' = L + N + 1. "published": the published
  layers (``muxkernels.bench.published``) in eager PyTorch; "muxkernels": ``embed_mux`` +
  our demux heads, on the same weights.

instances/s = instances per pass / time per pass; speedup = instances/s over the best
N = 1 baseline's instances/s (same task).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as mnn
from ..models.encoder import Embeddings, TransformerEncoder
from ..models.multiplexed import MuxConfig
from ..ops import embed_mux
from ..prefix import add_index_prefix
from ..transforms import gaussian_vectors
from . import published, timing

Pipeline = Callable[[torch.Tensor], torch.Tensor]
Key = Hashable  # what names a pass among those timed side by side (an impl, a batch size)
INIT_STD = 0.02  # the published initializer_range


@dataclass(frozen=True)
class EncoderSize:
    """The paper's encoder: 12 layers, d = 768, 12 heads, L = 128, RoBERTa's vocabulary;
    ``labels`` token classes and ``sequence_labels`` sequence classes."""

    layers: int = 12
    d: int = 768
    heads: int = 12
    intermediate: int = 3072
    length: int = 128
    vocab: int = 50265
    labels: int = 9
    sequence_labels: int = 3


PAPER = EncoderSize()
SMALL = EncoderSize(layers=2, d=64, heads=4, intermediate=256, length=32, vocab=1000)


@dataclass
class ThroughputRow:
    """One timed pass: ``groups`` encoder rows carrying ``instances`` = groups · n inputs."""

    task: str
    n: int
    impl: str
    groups: int
    instances: int
    ms: float
    instances_per_s: float
    speedup: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Backbone:
    """The embedding module and post-LN encoder shared by every pipeline (eval mode)."""

    embeddings: Embeddings
    encoder: TransformerEncoder
    size: EncoderSize


def _init_published(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Matrices ~ N(0, 0.02²), LayerNorm weights 1, biases 0 (the published initialisation)."""
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, std=INIT_STD, generator=generator)
        elif name.endswith("weight"):
            nn.init.ones_(p)
        else:
            nn.init.zeros_(p)
    return module


def _ready(module: nn.Module, seed: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    return _init_published(module, generator).to(device=device, dtype=dtype).eval()


def build_backbone(
    size: EncoderSize, max_instances: int, *, device: torch.device, dtype: torch.dtype, seed: int
) -> Backbone:
    """Embeddings with room for L + N + 1 positions, and a post-LN (RoBERTa) encoder."""
    positions = size.length + max_instances + 1
    embeddings = _ready(Embeddings(size.vocab, size.d, positions), seed, device, dtype)
    encoder = TransformerEncoder(
        size.d, size.layers, size.heads, size.intermediate, norm_first=False
    )
    return Backbone(embeddings, _ready(encoder, seed + 1, device, dtype), size)


def random_ids(
    rows: int, size: EncoderSize, n: int, *, seed: int, device: torch.device
) -> torch.Tensor:
    """(rows, L) content ids in [0, V − N − 2), below the index, CLS and filler ids."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, size.vocab - n - 2, (rows, size.length), generator=generator)
    return ids.to(device)


def _baseline(backbone: Backbone, task: str, seed: int) -> dict[str, Pipeline]:
    emb, encoder, size = backbone.embeddings, backbone.encoder, backbone.size
    device, dtype = emb.word_embeddings.weight.device, emb.word_embeddings.weight.dtype
    if task == "token":
        head = _ready(nn.Linear(size.d, size.labels), seed, device, dtype)
        return {"baseline": lambda ids: head(encoder(emb(input_ids=ids)))}
    head = nn.Sequential(
        nn.Linear(size.d, size.d), nn.Tanh(), nn.Linear(size.d, size.sequence_labels)
    )
    head = _ready(head, seed, device, dtype)
    return {"baseline": lambda ids: head(encoder(emb(input_ids=ids))[:, 0])}


def build_pipelines(backbone: Backbone, task: str, n: int, *, seed: int) -> dict[str, Pipeline]:
    """ids (B, L) → logits, (B, C) for "sequence" and (B, L, C) for "token".

    N = 1: {"baseline"}. N > 1 (B a multiple of N): {"published", "muxkernels"}, sharing the
    backbone, the hadamard vectors and the head's weights, so they give the same logits.
    """
    if n == 1:
        return _baseline(backbone, task, seed)
    emb, encoder, size = backbone.embeddings, backbone.encoder, backbone.size
    table = emb.word_embeddings.weight
    special = MuxConfig(size.vocab, n, filler_id=size.vocab - 1, cls_id=size.vocab - n - 2)
    vectors = gaussian_vectors(n, size.d, generator=seed, dtype=table.dtype, device=table.device)
    head_type = {
        "token": mnn.IndexDemuxTokenClassificationHead,
        "sequence": mnn.IndexDemuxSequenceClassificationHead,
    }[task]
    labels = size.labels if task == "token" else size.sequence_labels
    head = _ready(head_type(n, size.d, labels), seed, table.device, table.dtype)
    positions = emb.position_offset + torch.arange(size.length + n + 1, device=table.device)
    front = (table, emb.position_embeddings.weight, emb.token_type_embeddings.weight,
             emb.LayerNorm.weight, emb.LayerNorm.bias)  # fmt: skip
    demux = (head.dense.weight, head.dense.bias, head.layer_norm.weight, head.layer_norm.bias)
    eps = head.layer_norm.eps

    def prefix(ids: torch.Tensor) -> torch.Tensor:
        return add_index_prefix(ids, n, special.index_ids, special.filler_id, special.cls_id)

    def ours(ids: torch.Tensor) -> torch.Tensor:
        x = embed_mux(prefix(ids), *front, vectors, position_ids=positions,
                      mixed_position_ids=positions, eps=emb.LayerNorm.eps)  # fmt: skip
        hidden = encoder(x)
        if task == "token":
            return head.logits(hidden)[:, n + 1 :]
        return head(hidden)[0]

    def theirs(ids: torch.Tensor) -> torch.Tensor:
        hidden = encoder(published.front_end(emb, prefix(ids), vectors, n))
        if task == "token":
            u = published.index_demux_token(hidden, *demux, n, eps)
            return head.decoder(u).flatten(0, 1)[:, n + 1 :]
        u = published.index_demux_sequence(hidden, *demux, n, eps).flatten(0, 1)
        return head.out_proj(F.gelu(head.dense_before_out_proj(u)))

    return {"published": theirs, "muxkernels": ours}


def _time_pass(pipeline: Pipeline, ids: torch.Tensor, device: torch.device) -> float:
    """Median ms of one inference pass (Python calls included), NaN when out of memory.

    The GPU's cached blocks are released after each pass, so one configuration's memory
    does not crowd the next.
    """
    try:
        with torch.inference_mode():
            return timing.median_ms(
                lambda: pipeline(ids), device, graph=False, min_run_s=timing.CPU_PASS_MIN_RUN_S
            )
    except torch.cuda.OutOfMemoryError:
        return math.nan
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _baseline_times(
    backbone: Backbone, task: str, batch_sizes: Sequence[int], device: torch.device, seed: int
) -> dict[int, float]:
    """Median ms of the N = 1 baseline pass at each batch size B (NaN when out of memory)."""
    baseline = build_pipelines(backbone, task, 1, seed=seed)["baseline"]
    return time_passes(
        {b: (baseline, random_ids(b, backbone.size, 1, seed=seed, device=device))
         for b in batch_sizes},
        device,
    )  # fmt: skip


def time_passes(passes: dict[Key, tuple[Pipeline, torch.Tensor]], device: torch.device) -> dict:
    """Median ms of each ``(pipeline, ids)`` pass (NaN when one ran out of memory), the
    passes timed in turn, ``timing.rounds(device)`` times (interleaved: the load of a
    shared CPU affects them alike), each keeping the median of its rounds."""
    ms: dict[Key, list[float]] = {key: [] for key in passes}
    for _ in range(timing.rounds(device)):
        for key, (pipeline, ids) in passes.items():
            ms[key].append(_time_pass(pipeline, ids, device))
    return {
        key: math.nan if any(map(math.isnan, times)) else statistics.median(times)
        for key, times in ms.items()
    }


def _row(task: str, n: int, impl: str, groups: int, ms: float, best: float) -> ThroughputRow:
    instances_per_s = groups * n * 1e3 / ms
    speedup = instances_per_s / best
    return ThroughputRow(task, n, impl, groups, groups * n, ms, instances_per_s, speedup)


def _describe(r: ThroughputRow) -> str:
    where = f"{r.task} N={r.n} {r.impl} groups={r.groups}"
    if math.isnan(r.ms):
        return f"{where}: out of memory"
    return f"{where}: {r.ms:.3f} ms, {r.instances_per_s:.0f} inst/s, speedup {r.speedup:.2f}"


def run_end_to_end(
    ns: Iterable[int] = (1, 2, 5, 10, 20, 40),
    tasks: Iterable[str] = ("sequence", "token"),
    size: EncoderSize = PAPER,
    *,
    device: torch.device,
    dtype: torch.dtype,
    batch_sizes: Sequence[int] = (32, 64, 128, 256, 512),
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[ThroughputRow]:
    """Time every task: the N = 1 baseline at each batch size, then each N > 1 and impl.

    The N = 1 search always runs (it sets the groups and the speedups). A pass that runs
    out of GPU memory gives a row with NaN times; a task whose baseline never ran raises.
    """
    ns = [n for n in ns if n > 1]
    backbone = build_backbone(size, max(ns, default=1), device=device, dtype=dtype, seed=seed)
    rows: list[ThroughputRow] = []
    for task in tasks:
        times = _baseline_times(backbone, task, batch_sizes, device, seed)
        rates = {b: b * 1e3 / ms for b, ms in times.items() if not math.isnan(ms)}
        if not rates:
            raise RuntimeError(f"{task}: the N=1 baseline ran out of memory at every batch size")
        groups = max(rates, key=rates.__getitem__)
        best = rates[groups]
        for b, ms in times.items():
            rows.append(_row(task, 1, "baseline", b, ms, best))
            log(_describe(rows[-1]))
        for n in ns:
            pipelines = build_pipelines(backbone, task, n, seed=seed)
            ids = random_ids(groups * n, size, n, seed=seed, device=device)
            passes = {impl: (pipeline, ids) for impl, pipeline in pipelines.items()}
            for impl, ms in time_passes(passes, device).items():
                rows.append(_row(task, n, impl, groups, ms, best))
                log(_describe(rows[-1]))
    return rows
