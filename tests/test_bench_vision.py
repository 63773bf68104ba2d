"""The image multiplexers in ``muxkernels bench``: every implementation of each workload
computes the same mixture, the CNN end-to-end pipelines compute the same model, and the
report shows both."""

from __future__ import annotations

import pytest
import torch
from helpers import BACKEND, REFERENCE, assert_close

from muxkernels.bench import microbench, published_vision, report, vision
from muxkernels.bench.workloads import OPS, Sizes, build

SMALL = Sizes(groups=2, length=4, d=16, dtype=torch.float32, images=(3, 2, 8, 8))


@pytest.mark.parametrize("op", list(vision.IMAGE_OPS))
def test_every_implementation_of_an_image_workload_agrees(op):
    assert op in OPS
    w = build(op, 3, SMALL, torch.device("cpu"))
    assert "published" in w.impls and "eager" in w.impls
    expected = w.impls["eager"](w.inputs)
    assert expected.shape[0] == 3 and expected.shape[-2:] == (8, 8)
    for impl, fn in w.impls.items():
        if impl == "compiled":
            continue  # torch.compile of eager: slow to build here, exercised by the bench tests
        assert_close(fn(w.inputs), expected, BACKEND, what=impl)


def test_an_image_workload_is_measured_in_every_mode():
    rows = microbench.measure(
        "image_mux_learnable", 2, ("fwd", "fwd+bwd"), ("eager", "published"), SMALL,
        torch.device("cpu"), log=lambda line: None,
    )  # fmt: skip
    assert {(r.mode, r.impl) for r in rows} == {
        (m, i) for m in ("fwd", "fwd+bwd") for i in ("eager", "published")
    }
    assert all(r.ms > 0 and not r.error for r in rows)


def test_the_notebook_forward_and_ours_are_the_same_model():
    model = vision._cnn(3, torch.device("cpu"), torch.float64, seed=0)
    images = torch.randn(2, 3, *vision.CNN_IMAGE, dtype=torch.float64)
    with torch.no_grad():
        theirs = torch.stack(published_vision.mux_lenet(model, images), dim=1).flatten(0, 1)
        assert_close(torch.tanh(model(images)), theirs, REFERENCE)


def test_cnn_end_to_end_rows():
    rows = vision.run_cnn_end_to_end(
        [1, 2], device=torch.device("cpu"), dtype=torch.float32, batch_sizes=(2, 4),
        log=lambda line: None,
    )  # fmt: skip
    assert [(r.task, r.n, r.impl) for r in rows] == [
        ("cnn", 1, "baseline"), ("cnn", 1, "baseline"), ("cnn", 2, "published"),
        ("cnn", 2, "muxkernels"),
    ]  # fmt: skip
    best = max(rows[:2], key=lambda r: r.instances_per_s)
    assert best.speedup == pytest.approx(1.0)
    assert rows[2].groups == best.groups and rows[2].instances == 2 * best.groups


def test_the_report_shows_image_ops_and_the_cnn_rows():
    results = {
        "meta": {"gpu": False, "sizes": {"groups": 2, "length": 4, "d": 16, "images": [3, 1, 8, 8]},
                 "end_to_end_size": {"layers": 2, "d": 64, "length": 32}, "dtype": "float32",
                 "device": "CPU", "date": "today", "torch": "2", "muxkernels": "0",
                 "command": "muxkernels bench", "unmeasured": [], "errors": []},
        "ops": [
            {"op": "image_mux_gaussian", "n": 2, "mode": "fwd", "impl": impl, "ms": ms,
             "vs_published": 2.0 if impl == "eager" else 1.0, "error": ""}
            for impl, ms in (("eager", 0.5), ("published", 1.0))
        ],
        "end_to_end": [
            {"task": "cnn", "n": n, "impl": impl, "groups": 4, "instances": 4 * n, "ms": 1.0,
             "instances_per_s": 4000.0 * n, "speedup": float(n)}
            for n, impl in ((1, "baseline"), (2, "published"), (2, "muxkernels"))
        ],
    }  # fmt: skip
    section = report.readme_section(results, None, "out")
    assert "image_mux: B'=3 groups of 1×8×8 images" in section
    assert "| image_mux_gaussian | 0.5 ms |" in section
    assert "The cnn rows" in section and "-layer" not in section
    assert "| cnn | 2 | 4 | 8,000 | 2.00x | 8,000 | 2.00x | 1.00x |" in section
