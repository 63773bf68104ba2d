"""The public ops as test cases: one table of calls on small odd-sized inputs, the kernel
backends each op has, and whether a backend can run an op here.

"cpu" runs on CPU tensors, "triton" on CPU tensors under the interpreter
(TRITON_INTERPRET=1), "cuda" through the CPU implementations of the compiled operators of
muxkernels._C.
"""

from __future__ import annotations

import importlib

import torch
from helpers import randn, seeded

import muxkernels as mk
from muxkernels import _backend, transforms

CPU = torch.device("cpu")

N, D, L, GROUPS, K = 3, 7, 2, 2, 5


def inputs(
    dtype: torch.dtype, n: int = N, d: int = D, length: int = L, groups: int = GROUPS
) -> dict[str, torch.Tensor]:
    """Random inputs (never zero) of every case, seeded, in ``dtype``; ids are int64.

    N = n instances, hidden size d, L = ``length`` positions (L' = L + N + 1 with the
    index prefix), B' = ``groups``.
    """
    prefixed = length + n + 1
    return {
        "emb": randn(groups * n, length, d, dtype=dtype, generator=0),
        "vec": transforms.gaussian_vectors(n, d, generator=0, dtype=dtype),
        "mats": transforms.ortho_matrices(n, d, generator=1, dtype=dtype),
        "u": transforms.ortho_matrices(2, d, generator=2, dtype=dtype)[0],
        "h": transforms.ortho_matrices(2, d, generator=2, dtype=dtype)[1],
        "hid": randn(groups, prefixed, d, dtype=dtype, generator=3),
        "w2": randn(d, 2 * d, dtype=dtype, generator=4, scale=d**-0.5),
        "b": randn(d, dtype=dtype, generator=5),
        "lw": randn(d, dtype=dtype, generator=6),
        "lb": randn(d, dtype=dtype, generator=7),
        "keys": randn(n, d, dtype=dtype, generator=8),
        "wm": randn(n, d, d, dtype=dtype, generator=9, scale=d**-0.5),
        "bm": randn(n, d, dtype=dtype, generator=10),
        "lwm": randn(n, d, dtype=dtype, generator=11),
        "lbm": randn(n, d, dtype=dtype, generator=12),
        "pw": randn(K, d, dtype=dtype, generator=13, scale=d**-0.5),
        "pb": randn(K, dtype=dtype, generator=14),
        "tables": randn(11, d, dtype=dtype, generator=15),
        "tok": torch.randint(0, 11, (groups * n, length), generator=seeded(16)),
        "index": torch.randint(0, n, (groups, prefixed), generator=seeded(17)),
        "index_pos": torch.randint(0, n, (groups, prefixed), generator=seeded(18)),
    }


def _demux_kwargs(x, gather):
    return {"gather": gather, "index": x["index"] if gather == "selected" else None}


# case name → call(inputs, backend); "<op>-<gather>" for the demultiplexers.
CASES = {
    "hadamard_mux": lambda x, be: mk.hadamard_mux(x["emb"], x["vec"], backend=be),
    "ortho_mux": lambda x, be: mk.ortho_mux(x["emb"], x["mats"], backend=be),
    "lowrank_ortho_mux": lambda x, be: mk.lowrank_ortho_mux(
        x["emb"], x["u"], x["h"], num_instances=x["vec"].shape[0], backend=be
    ),
    "mlp_demux": lambda x, be: mk.mlp_demux(
        x["hid"], x["wm"], x["bm"], x["lwm"], x["lbm"], backend=be
    ),
    "embed_mux": lambda x, be: mk.embed_mux(
        x["tok"], x["tables"], x["tables"], x["tables"][:2], x["lw"], x["lb"], x["vec"], backend=be
    ),
}
for _gather in mk.reference.GATHERS:
    CASES[f"index_demux-{_gather}"] = lambda x, be, g=_gather: mk.index_demux(
        x["hid"],
        x["w2"],
        x["b"],
        x["lw"],
        x["lb"],
        num_instances=x["vec"].shape[0],
        backend=be,
        **_demux_kwargs(x, g),
    )
    CASES[f"index_demux_logits-{_gather}"] = lambda x, be, g=_gather: mk.index_demux_logits(
        x["hid"],
        x["w2"],
        x["b"],
        x["lw"],
        x["lb"],
        x["pw"],
        x["pb"],
        num_instances=x["vec"].shape[0],
        backend=be,
        **_demux_kwargs(x, g),
    )
    CASES[f"index_pos_demux-{_gather}"] = lambda x, be, g=_gather: mk.index_pos_demux(
        x["hid"],
        x["keys"],
        x["w2"],
        x["b"],
        x["lw"],
        x["lb"],
        backend=be,
        gather=g,
        index=x["index_pos"] if g == "selected" else None,
    )


# The op modules (the package re-exports functions of the same names).
demux_gather, embed_mux, hadamard_mux, mlp_demux, ortho_mux = (
    importlib.import_module(f"muxkernels.ops.{name}")
    for name in ("demux_gather", "embed_mux", "hadamard_mux", "mlp_demux", "ortho_mux")
)

KERNELS = {
    "hadamard_mux": hadamard_mux.KERNELS,
    "ortho_mux": ortho_mux.ORTHO_KERNELS,
    "lowrank_ortho_mux": ortho_mux.LOWRANK_KERNELS,
    "index_demux": demux_gather.KERNELS,
    "index_demux_logits": demux_gather.KERNELS,
    "index_pos_demux": demux_gather.KERNELS,
    "mlp_demux": mlp_demux.KERNELS,
    "embed_mux": embed_mux.KERNELS,
}
BACKENDS_OF = {
    "hadamard_mux": hadamard_mux.KERNEL_BACKENDS,
    "ortho_mux": ortho_mux.KERNEL_BACKENDS,
    "lowrank_ortho_mux": ortho_mux.KERNEL_BACKENDS,
    "index_demux": demux_gather.KERNEL_BACKENDS,
    "index_demux_logits": demux_gather.KERNEL_BACKENDS,
    "index_pos_demux": demux_gather.KERNEL_BACKENDS,
    "mlp_demux": mlp_demux.KERNEL_BACKENDS,
    "embed_mux": embed_mux.KERNEL_BACKENDS,
}


def op_of(case: str) -> str:
    """The public op of a case name: "index_demux-token" → "index_demux"."""
    return case.split("-")[0]


def runnable(op: str, backend: str, device: torch.device = CPU) -> bool:
    """Whether ``backend`` can run ``op`` on ``device`` tensors here."""
    return _backend.runs(backend, device, KERNELS[op])
