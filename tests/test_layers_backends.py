"""The layers, heads and the multiplexed model on each kernel backend that can run here
give the reference backend's outputs and parameter gradients (float64)."""

from __future__ import annotations

import pytest
import torch
from helpers import BACKEND, assert_close, randn
from op_cases import runnable

from muxkernels import nn as mnn
from muxkernels.models import MultiplexedModel, MuxConfig
from muxkernels.nn.multiplexer import MUXING_VARIANTS

N, D, LABELS = 3, 8, 5
BACKENDS = ("cpu", "triton", "cuda")


def _pair(make, backend):
    """The module built twice with the same weights: on ``backend`` and on the reference."""
    torch.manual_seed(0)
    kernel = make(backend).double()
    reference = make("reference").double()
    reference.load_state_dict(kernel.state_dict())
    return kernel, reference


def _output(module, args) -> torch.Tensor:
    out = module(*args)
    return out[0] if isinstance(out, tuple) else out  # heads return (logits, u)


def _compare(kernel, reference, args) -> None:
    """Same output, and the same parameter gradients for one random output gradient (not
    of the sum: through a LayerNorm that gradient is zero for the inputs)."""
    results = []
    for module in (kernel, reference):
        out = _output(module, args)
        params = [p for p in module.parameters() if p.requires_grad]
        grad_out = randn(*out.shape, generator=3)
        grads = torch.autograd.grad(out, params, grad_out, allow_unused=True)
        results.append((out, grads))
    (out, grads), (want, want_grads) = results
    assert_close(out, want, BACKEND)
    for got, expected in zip(grads, want_grads, strict=True):
        assert (got is None) == (expected is None)
        if expected is not None:
            assert_close(got, expected, BACKEND)


LAYERS = {
    **{
        f"Multiplexer-{v}": (
            "hadamard_mux" if "hadamard" in v else "ortho_mux",
            lambda be, v=v: mnn.Multiplexer(N, D, v, learn_muxing=True, generator=0, backend=be),
            lambda g: (torch.randn(2 * N, 4, D, generator=g, dtype=torch.float64),),
        )
        for v in MUXING_VARIANTS
    },
    "IndexDemuxTokenClassificationHead": (
        "index_demux",
        lambda be: mnn.IndexDemuxTokenClassificationHead(N, D, LABELS, backend=be),
        lambda g: (torch.randn(2, N + 5, D, generator=g, dtype=torch.float64),),
    ),
    "IndexDemuxSequenceClassificationHead": (
        "index_demux",
        lambda be: mnn.IndexDemuxSequenceClassificationHead(N, D, LABELS, backend=be),
        lambda g: (torch.randn(2, N + 5, D, generator=g, dtype=torch.float64),),
    ),
    "IndexPosDemultiplexer": (
        "index_pos_demux",
        lambda be: mnn.IndexPosDemultiplexer(N, D, generator=torch.Generator(), backend=be),
        lambda g: (torch.randn(2, 5, D, generator=g, dtype=torch.float64),),
    ),
    "MLPDemuxTokenClassificationHead": (
        "mlp_demux",
        lambda be: mnn.MLPDemuxTokenClassificationHead(N, D, LABELS, backend=be),
        lambda g: (torch.randn(2, 5, D, generator=g, dtype=torch.float64),),
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_reference_backend(name, backend):
    op, make, args = LAYERS[name]
    if "low_rank" in name:
        op = "lowrank_ortho_mux"
    if not runnable(op, backend):
        pytest.skip(f"{backend} cannot run {op} here")
    kernel, reference = _pair(make, backend)
    _compare(kernel, reference, args(torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_multiplexed_model_matches_reference_backend(backend):
    if not (runnable("hadamard_mux", backend) and runnable("index_demux", backend)):
        pytest.skip(f"{backend} cannot run the model's ops here")
    config = MuxConfig(vocab_size=40, num_instances=N, hidden_size=D, num_heads=2,
                       intermediate_size=16, task="token", num_labels=LABELS,
                       filler_id=39, cls_id=40 - N - 2)  # fmt: skip
    kernel, reference = _pair(lambda be: MultiplexedModel(config, backend=be), backend)
    ids = torch.randint(0, 30, (2 * N, 6), generator=torch.Generator().manual_seed(2))
    _compare(kernel, reference, (ids,))
