"""The benchmarked workloads: each op at one shape, its implementations and its cost model.

Implementations: ``eager`` (the reference, plain PyTorch), ``compiled`` (torch.compile of
the reference), ``published`` (the published layers' form of the op, in the data's dtype:
``muxkernels.bench.published``) and the kernel backends each op has. Costs are the floors
the ops are judged by (docs/design.md): bytes that must
move (inputs read once, outputs written once) and the FLOPs of the GEMMs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import ops, transforms
from ..ops.demux_gather import KERNEL_BACKENDS as DEMUX_BACKENDS
from ..ops.embed_mux import KERNEL_BACKENDS as EMBED_BACKENDS
from ..ops.hadamard_mux import KERNEL_BACKENDS as HADAMARD_BACKENDS
from ..ops.mlp_demux import KERNEL_BACKENDS as MLP_BACKENDS
from ..ops.ortho_mux import KERNEL_BACKENDS as ORTHO_BACKENDS
from ..reference import lowrank_dense
from . import published
from .vision import IMAGE_OPS, image_backends, image_workload

Impl = Callable[[dict[str, torch.Tensor]], torch.Tensor]
MODES = ("fwd", "bwd", "fwd+bwd")
OPS = (  # in the order a time-limited run measures them: the headline ops first
    "hadamard_mux",
    "index_demux",
    "index_demux_logits",
    "embed_mux",
    "ortho_mux",
    "lowrank_ortho_mux",
    "index_demux_sequence",
    "index_demux_selected",
    "index_pos_demux",
    "mlp_demux",
    *IMAGE_OPS,
)
VOCAB, CLASSES = 50265, 9  # RoBERTa's vocabulary; token classes for the fused projection


@dataclass
class Workload:
    """One op at one shape. ``bytes``/``flops`` map a mode to its floor (0: not counted)."""

    op: str
    n: int
    shape: str
    inputs: dict[str, torch.Tensor]
    trainable: tuple[str, ...]
    impls: dict[str, Impl]
    bytes: dict[str, int] = field(default_factory=dict)
    flops: dict[str, float] = field(default_factory=dict)
    gemm: tuple[int, int, int] | None = None  # (m, k, n) of the main GEMM


@dataclass
class Sizes:
    """Benchmark sizes: B' (encoder rows, so B'·N instances), L, d and the dtype; for the
    image multiplexers, (B', C, H, W) of the mixed images."""

    groups: int = 64
    length: int = 128
    d: int = 768
    dtype: torch.dtype = torch.bfloat16
    images: tuple[int, int, int, int] = (256, 1, 28, 28)


def _kernel_impls(
    call: Callable[[dict[str, torch.Tensor], str], torch.Tensor], backends: tuple[str, ...]
) -> dict:
    """``eager`` (the reference backend) and each kernel backend the op has."""
    return {
        "eager": lambda x: call(x, "reference"),
        **{b: (lambda x, b=b: call(x, b)) for b in backends},
    }


def _randn(*shape: int, device, dtype, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, device=device, dtype=torch.float32) * scale).to(dtype)


def _mux(op: str, n: int, s: Sizes, device: torch.device) -> Workload:
    g, length, d, dt = s.groups, s.length, s.d, s.dtype
    x = {"embeddings": _randn(g, n, length, d, device=device, dtype=dt)}
    es = x["embeddings"].element_size()
    traffic = (n + 1) * g * length * d * es
    w = Workload(op, n, f"B'={g} L={length} d={d}", x, ("embeddings",), {})
    if op == "hadamard_mux":
        x["vectors"] = transforms.gaussian_vectors(n, d, generator=0, device=device, dtype=dt)
        w.impls = _kernel_impls(
            lambda x, b: ops.hadamard_mux(x["embeddings"], x["vectors"], backend=b),
            HADAMARD_BACKENDS,
        )
        w.impls["published"] = lambda x: published.hadamard_mux(x["embeddings"], x["vectors"])
        w.bytes = dict.fromkeys(MODES, traffic)
        w.bytes["fwd+bwd"] = 2 * traffic
        return w
    if op == "ortho_mux":
        x["matrices"] = transforms.ortho_matrices(n, d, generator=0, device=device, dtype=dt)
        w.impls = _kernel_impls(
            lambda x, b: ops.ortho_mux(x["embeddings"], x["matrices"], backend=b),
            ORTHO_BACKENDS,
        )
        w.impls["published"] = lambda x: published.ortho_mux(x["embeddings"], x["matrices"])
        gemm_flops = 2.0 * g * length * n * d * d
        w.gemm = (g * length, n * d, d)
    else:
        u, h = transforms.lowrank_factors(n, d, generator=0, device=device, dtype=dt)
        x["u"], x["h"] = u, h
        w.impls = _kernel_impls(
            lambda x, b: ops.lowrank_ortho_mux(x["embeddings"], x["u"], x["h"], backend=b),
            ORTHO_BACKENDS,
        )
        # the published layer keeps the dense (N, d, d) matrices, built once
        dense = lowrank_dense(u, h, n)
        w.impls["published"] = lambda x: published.ortho_mux(x["embeddings"], dense)
        gemm_flops = 4.0 * g * length * d * (d // n) * n
        w.gemm = (g * length, d, d)
    w.flops = {"fwd": gemm_flops, "bwd": gemm_flops, "fwd+bwd": 2 * gemm_flops}
    w.bytes = {"fwd": traffic, "bwd": traffic, "fwd+bwd": 2 * traffic}
    return w


def _embed(n: int, s: Sizes, device: torch.device) -> Workload:
    g, length, d, dt = s.groups, s.length, s.d, s.dtype
    pad = published.ROBERTA_PADDING_IDX
    x = {
        "ids": torch.randint(pad + 1, VOCAB, (g * n, length), device=device),  # no <pad>
        "word": _randn(VOCAB, d, device=device, dtype=dt),
        "position": _randn(length + pad + 1, d, device=device, dtype=dt),
        "token_type": _randn(1, d, device=device, dtype=dt),
        "ln_weight": _randn(d, device=device, dtype=dt),
        "ln_bias": _randn(d, device=device, dtype=dt),
        "vectors": transforms.gaussian_vectors(n, d, generator=0, device=device, dtype=dt),
    }
    positions = torch.arange(pad + 1, pad + 1 + length, device=device)  # RoBERTa's

    def call(x, backend):
        return ops.embed_mux(
            x["ids"], x["word"], x["position"], x["token_type"], x["ln_weight"],
            x["ln_bias"], x["vectors"], position_ids=positions, mixed_position_ids=positions,
            backend=backend,
        )  # fmt: skip

    def publish(x):
        return published.embed_mux(
            x["ids"], x["word"], x["position"], x["token_type"], x["ln_weight"],
            x["ln_bias"], x["vectors"], 1e-5,
        )  # fmt: skip

    rows = (n + 1) * g * length * d * x["word"].element_size()  # N rows gathered, one written
    return Workload(
        "embed_mux", n, f"B'={g} L={length} d={d} V={VOCAB}", x,
        ("word", "position", "token_type", "ln_weight", "ln_bias"),
        {**_kernel_impls(call, EMBED_BACKENDS), "published": publish},
        bytes={"fwd": rows, "bwd": 2 * rows, "fwd+bwd": 3 * rows},
    )  # fmt: skip


def _demux_params(d: int, device, dt) -> dict[str, torch.Tensor]:
    return {
        "weight": _randn(d, 2 * d, device=device, dtype=dt, scale=d**-0.5),
        "bias": _randn(d, device=device, dtype=dt),
        "ln_weight": _randn(d, device=device, dtype=dt),
        "ln_bias": _randn(d, device=device, dtype=dt),
    }


def _index_demux(op: str, n: int, s: Sizes, device: torch.device) -> Workload:
    g, d, dt = s.groups, s.d, s.dtype
    length = s.length + n + 1  # L' = L + N + 1 with the index prefix
    gather = {"index_demux_sequence": "sequence", "index_demux_selected": "selected"}.get(
        op, "token"
    )
    x = {"hidden": _randn(g, length, d, device=device, dtype=dt), **_demux_params(d, device, dt)}
    es = x["hidden"].element_size()
    if gather == "selected":
        x["index"] = torch.randint(0, n, (g, length), device=device)
    params = ("weight", "bias", "ln_weight", "ln_bias")
    out_rows = {"token": n * g * length, "sequence": n * g, "selected": g * length}[gather]
    if op == "index_demux_logits":
        x["proj_weight"] = _randn(CLASSES, d, device=device, dtype=dt, scale=d**-0.5)
        x["proj_bias"] = _randn(CLASSES, device=device, dtype=dt)
        params += ("proj_weight", "proj_bias")

        def call(x, backend):
            return ops.index_demux_logits(
                x["hidden"], *(x[p] for p in params), num_instances=n, backend=backend
            )

        out_bytes = out_rows * CLASSES * es
    else:

        def call(x, backend):
            return ops.index_demux(
                x["hidden"], *(x[p] for p in params), num_instances=n, gather=gather,
                index=x.get("index"), backend=backend,
            )  # fmt: skip

        out_bytes = out_rows * d * es
    c_rows = g if gather == "sequence" else g * length
    gemm_flops = 2.0 * (g * n + c_rows) * d * d
    w = Workload(op, n, f"B'={g} L'={length} d={d}", x, ("hidden", *params),
                 _kernel_impls(call, DEMUX_BACKENDS))  # fmt: skip
    in_bytes = g * length * d * es
    w.bytes = {"fwd": out_bytes + in_bytes, "bwd": out_bytes + 2 * in_bytes}
    w.bytes["fwd+bwd"] = w.bytes["fwd"] + w.bytes["bwd"]
    w.flops = {"fwd": gemm_flops, "bwd": 2 * gemm_flops, "fwd+bwd": 3 * gemm_flops}
    w.gemm = (c_rows, d, d)
    w.impls["published"] = lambda x: _published_index_demux(op, x, n)
    return w


def _published_index_demux(op: str, x: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    demux = [x[p] for p in ("hidden", "weight", "bias", "ln_weight", "ln_bias")]
    if op == "index_demux_logits":
        return published.index_demux_logits(*demux, x["proj_weight"], x["proj_bias"], n, 1e-5)
    if op == "index_demux_selected":
        return published.index_demux_selected(*demux, n, 1e-5, x["index"])
    if op == "index_demux_sequence":
        return published.index_demux_sequence(*demux, n, 1e-5)
    return published.index_demux_token(*demux, n, 1e-5)


def _index_pos_demux(n: int, s: Sizes, device: torch.device) -> Workload:
    g, length, d, dt = s.groups, s.length, s.d, s.dtype
    x = {
        "hidden": _randn(g, length, d, device=device, dtype=dt),
        "keys": _randn(n, d, device=device, dtype=dt),
        **_demux_params(d, device, dt),
    }
    params = ("keys", "weight", "bias", "ln_weight", "ln_bias")

    def call(x, backend):
        return ops.index_pos_demux(x["hidden"], *(x[p] for p in params), backend=backend)

    def publish(x):
        return published.index_pos_demux(x["hidden"], *(x[p] for p in params), 1e-5)

    es = x["hidden"].element_size()
    out, inp = n * g * length * d * es, g * length * d * es
    gemm_flops = 2.0 * (n + g * length) * d * d
    return Workload(
        "index_pos_demux", n, f"B'={g} L={length} d={d}", x, ("hidden", *params),
        {**_kernel_impls(call, DEMUX_BACKENDS), "published": publish},
        bytes={"fwd": out + inp, "bwd": out + 2 * inp, "fwd+bwd": 2 * out + 3 * inp},
        flops={"fwd": gemm_flops, "bwd": 2 * gemm_flops, "fwd+bwd": 3 * gemm_flops},
        gemm=(g * length, d, d),
    )  # fmt: skip


def _mlp_demux(n: int, s: Sizes, device: torch.device) -> Workload:
    g, length, d, dt = s.groups, s.length, s.d, s.dtype
    x = {
        "hidden": _randn(g, length, d, device=device, dtype=dt),
        "weight": _randn(n, d, d, device=device, dtype=dt, scale=d**-0.5),
        "bias": _randn(n, d, device=device, dtype=dt),
        "ln_weight": _randn(n, d, device=device, dtype=dt),
        "ln_bias": _randn(n, d, device=device, dtype=dt),
    }
    params = ("weight", "bias", "ln_weight", "ln_bias")

    def call(x, backend):
        return ops.mlp_demux(x["hidden"], *(x[p] for p in params), backend=backend)

    def publish(x):
        return published.mlp_demux(x["hidden"], *(x[p] for p in params), 1e-5)

    es = x["hidden"].element_size()
    out = n * g * length * d * es
    gemm_flops = 2.0 * g * length * n * d * d
    return Workload(
        "mlp_demux", n, f"B'={g} L={length} d={d}", x, ("hidden", *params),
        {**_kernel_impls(call, MLP_BACKENDS), "published": publish},
        bytes={"fwd": out, "bwd": 2 * out, "fwd+bwd": 3 * out},
        flops={"fwd": gemm_flops, "bwd": 2 * gemm_flops, "fwd+bwd": 3 * gemm_flops},
        gemm=(g * length, d, n * d),
    )  # fmt: skip


def kernel_backends(op: str) -> tuple[str, ...]:
    """The kernel backends ``op`` has (its implementations besides the reference)."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; choose from {OPS}")
    if op == "hadamard_mux":
        return HADAMARD_BACKENDS
    if op in ("ortho_mux", "lowrank_ortho_mux"):
        return ORTHO_BACKENDS
    if op == "embed_mux":
        return EMBED_BACKENDS
    if op == "mlp_demux":
        return MLP_BACKENDS
    if op in IMAGE_OPS:
        return image_backends(op)
    return DEMUX_BACKENDS


def build(op: str, n: int, sizes: Sizes, device: torch.device, compiled: bool = True) -> Workload:
    """The workload of ``op`` at N = ``n``; adds the ``compiled`` reference implementation
    unless ``compiled`` is False.

    Resets torch.compile's caches first: dynamo keeps compiled code per code object, and
    every workload's reference call shares one, so from the ninth graph on (the recompile
    limit) a "compiled" row would quietly time eager code. Each workload compiles its own
    static-shape graphs instead (shapes marked dynamic across N were tried: the demux
    still recompiled at every N).
    """
    if op in ("hadamard_mux", "ortho_mux", "lowrank_ortho_mux"):
        w = _mux(op, n, sizes, device)
    elif op == "embed_mux":
        w = _embed(n, sizes, device)
    elif op.startswith("index_demux"):
        w = _index_demux(op, n, sizes, device)
    elif op == "index_pos_demux":
        w = _index_pos_demux(n, sizes, device)
    elif op == "mlp_demux":
        w = _mlp_demux(n, sizes, device)
    elif op in IMAGE_OPS:
        w = image_workload(op, n, sizes, device)
    else:
        raise ValueError(f"unknown op {op!r}; choose from {OPS}")
    if not compiled:
        return w
    eager = w.impls["eager"]
    torch._dynamo.reset()
    w.impls["compiled"] = torch.compile(eager, dynamic=False)
    return w
