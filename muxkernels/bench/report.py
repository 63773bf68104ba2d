"""Bench results as files and text: JSON, CSV, screen tables, a PNG plot, the README section.

A results document is a plain dict, the same in memory and in ``results.json``:
``{"meta": {...}, "ops": [Row.as_dict()...], "end_to_end": [ThroughputRow.as_dict()...]}``.
Everything here works from that dict, so ``muxkernels bench --report results.json``
rebuilds the tables, the plot and the README section of a run made elsewhere (a GPU
machine without matplotlib, say) without measuring anything.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .microbench import BASELINES

Results = dict[str, Any]
KERNEL_IMPLS = ("triton", "cuda")
GEMM_OPS = (  # judged against torch.matmul
    "ortho_mux", "lowrank_ortho_mux", "mlp_demux", "image_mux_so_n", "image_mux_learnable_w",
)  # fmt: skip
README_START, README_END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"
OPS_COLUMNS = {  # field: header of the screen table
    "op": "op", "n": "N", "mode": "mode", "impl": "impl", "ms": "ms", "timing": "timing",
    "gbs": "GB/s", "of_copy": "of copy", "tflops": "TFLOP/s", "of_matmul": "of matmul",
    "vs_eager": "vs eager", "vs_compiled": "vs compiled", "vs_published": "vs published",
}  # fmt: skip
E2E_COLUMNS = {
    "task": "task", "n": "N", "impl": "impl", "groups": "B'", "instances": "instances",
    "ms": "ms", "instances_per_s": "instances/s", "speedup": "speedup over N=1",
}  # fmt: skip


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def text_table(rows: Sequence[dict[str, Any]], columns: dict[str, str]) -> str:
    """A fixed-width table of ``rows`` (dicts) with ``columns`` {field: header}; NaN as "-"."""
    cells = [list(columns.values())] + [[_cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True))
                     for line in cells)  # fmt: skip


def to_json(results: Results) -> str:
    """Strict JSON: NaN (not measured, not defined) is written as null."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(results), indent=1) + "\n"


def read_json(path: Path) -> Results:
    """A results document written by ``write_json`` (null read back as NaN in the rows)."""
    try:
        results = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not a muxkernels bench results file (not JSON: {err})"
        ) from None
    if not isinstance(results, dict) or not {"meta", "ops", "end_to_end"} <= results.keys():
        raise ValueError(f"{path} is not a muxkernels bench results file")
    for key in ("ops", "end_to_end"):
        results[key] = [{k: math.nan if v is None else v for k, v in r.items()}
                        for r in results[key]]  # fmt: skip
    return results


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """One CSV line per row, all fields; NaN is an empty cell."""
    if not rows:
        return ""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v != v else v for k, v in row.items()})  # NaN != NaN
    return text.getvalue()


def write_files(results: Results, out: Path, *, with_plot: bool = True) -> list[Path]:
    """results.json, ops.csv, end_to_end.csv and (with matplotlib) bench.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        out / "results.json": to_json(results),
        out / "ops.csv": to_csv(results["ops"]),
        out / "end_to_end.csv": to_csv(results["end_to_end"]),
    }
    for path, text in texts.items():  # whole files only: a run killed mid-write keeps the last
        part = path.with_name(path.name + ".part")
        part.write_text(text)
        part.replace(path)
    paths = list(texts)
    if with_plot and plot(results, out / "bench.png"):
        paths.append(out / "bench.png")
    return paths


def _fastest(rows: Iterable[dict[str, Any]], impls: Sequence[str]) -> dict[str, Any] | None:
    timed = [r for r in rows if r["impl"] in impls and not math.isnan(r["ms"])]
    return min(timed, key=lambda r: r["ms"]) if timed else None


def _by(rows: Iterable[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def _markdown(header: Sequence[str], lines: Iterable[Sequence[str]]) -> str:
    rows = [header, ["---"] * len(header), *lines]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def _x(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _op_table(
    rows: list[dict[str, Any]],
    cell: Callable[[str, list[dict[str, Any]]], str],
    label: Callable[[str], str] = str,
    corner: str = "op",
) -> str:
    """Markdown: a line per op, a column per N, ``cell(op, rows of that op and N)``."""
    ns = sorted({r["n"] for r in rows})
    groups = _by(rows, "op", "n")
    ops = list(dict.fromkeys(r["op"] for r in rows))
    lines = ([label(op), *(cell(op, groups.get((op, n), [])) for n in ns)] for op in ops)
    return _markdown([corner, *(f"N={n}" for n in ns)], lines)


def ops_summary(results: Results, mode: str) -> str:
    """Markdown: one line per op, one column per N. With kernel rows, each cell is the
    fastest kernel backend's time and its speedup over the eager reference / torch.compile
    of it / the published form; on a CPU run, the ``cpu`` backend's time (the default
    path there) and its speedup over the published form, or the eager time without it."""
    rows = [r for r in results["ops"] if r["mode"] == mode]
    kernels = any(r["impl"] in KERNEL_IMPLS for r in rows)
    cpu = not kernels and any(r["impl"] == "cpu" for r in rows)

    def cell(op: str, group: list[dict[str, Any]]) -> str:
        preferred = KERNEL_IMPLS if kernels else ("cpu",) if cpu else ("eager",)
        # an op with no kernel (the two-layer convolution image modes): ours is the eager form
        best = _fastest(group, preferred) or _fastest(group, ("eager",))
        if best is None:
            return "-"
        text = f"{best['ms']:.3g} ms"
        if kernels:
            ratios = [_x(best[f"vs_{b}"]) for b in BASELINES if not math.isnan(best[f"vs_{b}"])]
            text += f" {best['impl']} " + " / ".join(ratios)
        elif cpu and not math.isnan(best["vs_published"]):
            text += f" {_x(best['vs_published'])}" + (" (eager)" if best["impl"] == "eager" else "")
        return text

    return _op_table(rows, cell)


def ceiling_summary(results: Results) -> str:
    """Markdown: the fastest kernel's forward as a fraction of its ceiling, measured in the
    same run: torch.matmul's rate for the GEMM ops, a copy of the same bytes for the rest."""

    def cell(op: str, group: list[dict[str, Any]]) -> str:
        best = _fastest(group, KERNEL_IMPLS)
        value = math.nan if best is None else best[_ceiling(op)]
        return "-" if math.isnan(value) else f"{value:.0%}"

    def label(op: str) -> str:
        return f"{op} ({_ceiling(op).removeprefix('of_')})"

    rows = [r for r in results["ops"] if r["mode"] == "fwd"]
    return _op_table(rows, cell, label, corner="op (ceiling)")


def _ceiling(op: str) -> str:
    return "of_matmul" if op in GEMM_OPS else "of_copy"


def end_to_end_summary(results: Results) -> str:
    """Markdown: instances/s and speedup over the best N=1 baseline, published vs ours."""
    rows = results["end_to_end"]
    lines = []
    for (task,), group in _by(rows, "task").items():
        rates = [r for r in group if r["impl"] == "baseline" and not math.isnan(r["ms"])]
        base = max(rates, key=lambda r: r["instances_per_s"], default=None)
        if base is not None:
            lines.append([task, "1", str(base["groups"]), _rate(base), "1.00x", "", "", ""])
        for (n,), pair in _by([r for r in group if r["n"] > 1], "n").items():
            by_impl = {r["impl"]: r for r in pair}
            pub, ours = by_impl.get("published"), by_impl.get("muxkernels")
            ratio = _get(ours, "instances_per_s") / _get(pub, "instances_per_s")
            lines.append([task, str(n), str(pair[0]["groups"]), _rate(pub),
                          _x(_get(pub, "speedup")), _rate(ours), _x(_get(ours, "speedup")),
                          _x(ratio)])  # fmt: skip
    header = ["task", "N", "B'", "published inst/s", "speedup", "muxkernels inst/s",
              "speedup", "ours vs published"]  # fmt: skip
    return _markdown(header, lines)


def _get(row: dict[str, Any] | None, field: str) -> float:
    return math.nan if row is None else row[field]


def _rate(row: dict[str, Any] | None) -> str:
    value = _get(row, "instances_per_s")
    return "-" if math.isnan(value) else f"{value:,.0f}"


def describe(meta: dict[str, Any]) -> str:
    """One sentence: the machine, the versions, the date and the command of a run."""
    versions = ", ".join(f"{k} {meta[k]}" for k in ("torch", "triton", "cuda") if meta.get(k))
    commit = f" (commit {meta['commit']})" if meta.get("commit") else ""
    backends = ", ".join(meta.get("backends") or ["none"])
    allocator = f", {meta['allocator']}" if meta.get("allocator") else ""
    return (
        f"Measured on {meta['device']}{allocator} on {meta['date']} with {versions}, muxkernels "
        f"{meta['muxkernels']}{commit}, kernel backends usable: {backends}; by "
        f"`{meta['command']}`."
    )


_CNN_NOTE = (
    " The cnn rows: the DataMUX vision notebook's multiplexed LeNet (20×20 images, its "
    "Gaussian multiplexer, random weights), instances being images; N=1 is the LeNet "
    "without multiplexing at its best batch size, published the notebook's forward (a "
    "loop over instances), muxkernels `MultiplexedCNN`."
)


def readme_section(results: Results, plot_path: str | None, files_dir: str) -> str:
    """The README's results section (markdown), from one results document."""
    meta = results["meta"]
    s, e = meta["sizes"], meta["end_to_end_size"]
    parts = [describe(meta)]
    if not meta["gpu"]:
        parts.append(
            "**No GPU run has been recorded yet.** These numbers come from a CPU: small "
            'sizes and a small encoder, where "muxkernels" runs the `cpu` backend (what '
            "`auto` picks for CPU tensors), so they show the CPU path, not the kernels "
            "(kernel timings need a GPU). `bash scripts/gpu_check.sh` on a CUDA machine measures "
            "everything; the command at the end of this section turns its run into this "
            "section."
        )
    tasks = {r["task"] for r in results["end_to_end"]}
    if e and tasks:  # a run with --no-e2e has neither
        encoder = (
            f" a {e['layers']}-layer, {e['d']}-wide encoder (random weights), L={e['length']} "
            f"plus the N+1 index prefix, {meta['dtype']}. The N=1 baseline is the plain "
            "encoder without multiplexing at its best batch size (searched); every N>1 pass "
            "encodes that many rows B', so it serves B'·N instances."
        )
        parts.append(
            f"**End to end**, inference:{encoder if tasks - {'cnn'} else ''}"
            f"{_CNN_NOTE if 'cnn' in tasks else ''}\n\n" + end_to_end_summary(results)
        )
    mode_text = {"fwd": "forward", "fwd+bwd": "forward + backward"}
    image_note = ""
    if s.get("images") and any(r["op"].startswith("image_mux") for r in results["ops"]):
        groups, c, h, w = s["images"]
        image_note = f"; image_mux: B'={groups} groups of {c}×{h}×{w} images"
    impl_note = (
        "the fastest kernel backend's median and its speedup over the eager reference / "
        "torch.compile of the reference / the published layers' form"
        if any(r["impl"] in KERNEL_IMPLS for r in results["ops"])
        else "the `cpu` backend's median and its speedup over the published layers' form"
        if any(r["impl"] == "cpu" for r in results["ops"])
        else "the eager reference's median"
    )
    for mode in ("fwd", "fwd+bwd"):
        if any(r["mode"] == mode for r in results["ops"]):
            parts.append(
                f"**Ops, {mode_text[mode]}** (B'={s['groups']}, L={s['length']}, d={s['d']}, "
                f"{meta['dtype']}{image_note}): {impl_note}.\n\n" + ops_summary(results, mode)
            )
    if any(r["impl"] in KERNEL_IMPLS for r in results["ops"]):
        parts.append("**Fraction of the ceiling**, forward, fastest kernel:\n\n"
                     + ceiling_summary(results))  # fmt: skip
    if plot_path:
        parts.append(f"![muxkernels bench]({plot_path})")
    parts.append(
        f"Every row, with GB/s, TFLOP/s and all ratios: `{files_dir}/ops.csv`, "
        f"`{files_dir}/end_to_end.csv`, `{files_dir}/results.json`."
    )
    if meta.get("unmeasured"):
        parts.append("Not measured (time budget): " + ", ".join(meta["unmeasured"]) + ".")
    failures = failed(results)
    if failures:
        parts.append("Failed:\n\n" + "\n".join(f"- {line}" for line in failures))
    parts.append(
        "Reproduce: `bash scripts/install.sh && muxkernels bench --out results`, or from a "
        f"saved run, `muxkernels bench --report results/results.json --out {files_dir} "
        "--readme README.md`."
    )
    return "\n\n".join(parts)


def failed(results: Results) -> list[str]:
    """What failed in a run, one line per error: the workloads and end-to-end run that
    raised, then each distinct implementation error with the (op, N, mode, impl) it hit."""
    rows = [r for r in results["ops"] if r.get("error")]
    lines = list(results["meta"].get("errors", []))
    for (error,), group in _by(rows, "error").items():
        hit = ", ".join(f"{r['op']} N={r['n']} {r['mode']} {r['impl']}" for r in group)
        lines.append(f"{error} ({hit})")
    return lines


def update_readme(readme: Path, section: str) -> None:
    """Replace the text between the results markers of ``readme`` with ``section``."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{readme} has no {README_START} … {README_END} markers")
    replacement = f"{README_START}\n{section}\n{README_END}"
    readme.write_text(pattern.sub(lambda _: replacement, text))


def plot(results: Results, path: Path) -> bool:
    """bench.png: end-to-end speedup against N, and each op's speedup (or time) against N.
    Returns False, writing nothing, when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullLocator
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    colors = {"sequence": "tab:blue", "token": "tab:orange", "cnn": "tab:green"}
    for (task, impl), rows in _by(results["end_to_end"], "task", "impl").items():
        if impl == "baseline":
            continue
        rows = sorted(rows, key=lambda r: r["n"])
        left.plot([1] + [r["n"] for r in rows], [1.0] + [r["speedup"] for r in rows],
                  "-o" if impl == "muxkernels" else "--s", color=colors.get(task),
                  label=f"{task}, {impl}")  # fmt: skip
    left.set(xlabel="N (instances per pass)", ylabel="instances/s over the best N=1",
             title="End to end, inference")  # fmt: skip
    ops = [r for r in results["ops"] if r["mode"] == "fwd+bwd"] or results["ops"]
    kernels = any(r["impl"] in KERNEL_IMPLS for r in ops)
    for (op,), rows in _by(ops, "op").items():
        points = []
        for (n,), group in sorted(_by(rows, "n").items()):
            best = _fastest(group, KERNEL_IMPLS if kernels else ("eager",))
            if best is not None:
                points.append((n, best["vs_eager"] if kernels else best["ms"]))
        if points:
            right.plot(*zip(*points, strict=True), "-o", label=op)
    mode = ops[0]["mode"] if ops else ""
    right.set(yscale="log", xlabel="N",
              ylabel="fastest kernel's speedup over eager" if kernels else "eager reference, ms",
              title=f"Ops, {mode}")  # fmt: skip
    for ax in (left, right):
        ns = sorted({int(x) for line in ax.lines for x in line.get_xdata()})
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="x-small", ncol=2 if ax is right else 1)
    fig.suptitle(describe(results["meta"]).replace("`", ""), fontsize="small", wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
