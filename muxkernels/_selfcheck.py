"""``muxkernels check``: run every op on every usable backend here and compare to float64.

Answers a user's first question after ``pip install``: does each backend work on this
machine, and how far is it from the float64 reference? One row per (op, backend, dtype).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import _backend, ops, transforms
from ._tolerances import BACKEND


@dataclass
class CheckRow:
    """One (op, backend, dtype) result; ``error`` is empty when the row passed."""

    op: str
    backend: str
    dtype: str
    max_rel_error: float | None
    error: str = ""
    skipped: str = ""


Case = Callable[[str, Callable[[torch.Tensor], torch.Tensor]], torch.Tensor]


def _cases(device: torch.device, seed: int = 0) -> dict[str, Case]:
    """Each op bound to random inputs of a small odd shape (N=3, d=97, L=5, B'=2)."""
    g = torch.Generator().manual_seed(seed)
    n, d, length, groups = 3, 97, 5, 2

    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device)

    emb = rnd(groups * n, length, d)
    vec = transforms.gaussian_vectors(n, d, generator=g, dtype=torch.float64).to(device)
    mats = transforms.ortho_matrices(n, d, generator=g, dtype=torch.float64).to(device)
    u, h = transforms.lowrank_factors(n, d, generator=g, dtype=torch.float64)
    hid = rnd(groups, length + n + 1, d)
    w2, b, lw, lb = rnd(d, 2 * d, scale=d**-0.5), rnd(d), rnd(d), rnd(d)
    keys = rnd(n, d)
    pw, pb = rnd(9, d, scale=d**-0.5), rnd(9)
    index = torch.randint(0, n, (groups, length + n + 1), generator=g).to(device)
    wm, bm, lwm, lbm = rnd(n, d, d, scale=d**-0.5), rnd(n, d), rnd(n, d), rnd(n, d)

    tok = torch.randint(0, 50, (groups * n, length), generator=g, device=device)
    word, posn, typ = rnd(50, d), rnd(length, d), rnd(2, d)
    return {
        "embed_mux": lambda be, c: ops.embed_mux(
            tok, c(word), c(posn), c(typ), c(lw), c(lb), c(vec), backend=be
        ),
        "hadamard_mux": lambda be, c: ops.hadamard_mux(c(emb), c(vec), backend=be),
        "ortho_mux": lambda be, c: ops.ortho_mux(c(emb), c(mats), backend=be),
        "lowrank_ortho_mux": lambda be, c: ops.lowrank_ortho_mux(
            c(emb), c(u.to(device)), c(h.to(device)), num_instances=n, backend=be
        ),
        "index_demux": lambda be, c: ops.index_demux(
            c(hid), c(w2), c(b), c(lw), c(lb), num_instances=n, backend=be
        ),
        "index_demux sequence": lambda be, c: ops.index_demux(
            c(hid), c(w2), c(b), c(lw), c(lb), num_instances=n, gather="sequence", backend=be
        ),
        "index_demux selected": lambda be, c: ops.index_demux(
            c(hid),
            c(w2),
            c(b),
            c(lw),
            c(lb),
            num_instances=n,
            gather="selected",
            index=index,
            backend=be,
        ),
        "index_demux_logits": lambda be, c: ops.index_demux_logits(
            c(hid), c(w2), c(b), c(lw), c(lb), c(pw), c(pb), num_instances=n, backend=be
        ),
        "index_pos_demux": lambda be, c: ops.index_pos_demux(
            c(hid), c(keys), c(w2), c(b), c(lw), c(lb), backend=be
        ),
        "mlp_demux": lambda be, c: ops.mlp_demux(c(hid), c(wm), c(bm), c(lwm), c(lbm), backend=be),
    }


# Ops whose Triton kernels use tl.dot, which the Triton interpreter gets wrong in bfloat16.
_DOT_OPS = ("ortho_mux", "lowrank_ortho_mux", "index_demux_logits")
_NO_BF16_DOTS = "skipped: the Triton interpreter has no bfloat16 tl.dot (runs on a GPU)"


def run_checks(device: torch.device, dtypes: tuple[torch.dtype, ...]) -> list[CheckRow]:
    """Every op × usable backend × dtype on ``device``, against the float64 reference on the
    same (rounded) inputs, within the BACKEND bound of ``muxkernels._tolerances``."""
    rows = []
    cases = _cases(device)
    backends = [b for b in _backend.BACKENDS[1:] if _backend.usable(b, device)[0]]
    for dtype in dtypes:
        name = str(dtype).removeprefix("torch.")

        def cast(t: torch.Tensor, dtype: torch.dtype = dtype) -> torch.Tensor:
            return t.to(dtype)

        def rounded(t: torch.Tensor, dtype: torch.dtype = dtype) -> torch.Tensor:
            return t.to(dtype).double()

        for op, call in cases.items():
            expected = call("reference", rounded)
            for backend in backends:
                if (
                    backend == "triton"
                    and device.type == "cpu"
                    and op in _DOT_OPS
                    and (dtype == torch.bfloat16)
                ):
                    rows.append(CheckRow(op, backend, name, None, skipped=_NO_BF16_DOTS))
                    continue
                try:
                    got = call(backend, cast).double()
                except NotImplementedError:
                    continue
                except Exception as exc:  # report, don't crash: this is a diagnostic
                    rows.append(CheckRow(op, backend, name, None, f"{type(exc).__name__}: {exc}"))
                    continue
                diff = (got - expected).abs()
                err = float(diff.max() / expected.abs().max().clamp_min(1e-30))
                close = bool((diff <= BACKEND[dtype].limit(expected, dtype)).all())
                rows.append(CheckRow(op, backend, name, err, "" if close else "TOO FAR"))
    return rows


def format_rows(rows: list[CheckRow]) -> str:
    """A plain-text table of the check rows."""
    lines = [f"{'op':<22} {'backend':<10} {'dtype':<9} {'max rel error':>14}"]
    for r in rows:
        if r.max_rel_error is not None:
            err = f"{r.max_rel_error:14.2e}"
        else:
            err = f"{'-' if r.skipped else 'FAILED':>14}"
        lines.append(f"{r.op:<22} {r.backend:<10} {r.dtype:<9} {err} {r.error}{r.skipped}".rstrip())
    return "\n".join(lines)
