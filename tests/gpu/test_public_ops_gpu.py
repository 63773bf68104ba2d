"""On a CUDA device: the public ops agree with the reference run on the CPU, and the
cuda backend of hadamard_mux agrees with the reference forward and backward at the
benchmark shape (B'=64, L=128, d=768)."""

from __future__ import annotations

import pytest
import torch
from helpers import BACKEND, KERNEL, assert_close

import muxkernels
from muxkernels import _extension, transforms

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_is_device_independent(dtype):
    g = torch.Generator().manual_seed(0)
    n, d = 3, 97
    hid = torch.randn(2, 9, d, generator=g)
    w, b = torch.randn(d, 2 * d, generator=g) / d**0.5, torch.randn(d, generator=g)
    cpu = muxkernels.index_demux(hid.to(dtype), w, b, b, b, num_instances=n, backend="reference")
    gpu = muxkernels.index_demux(
        hid.to(dtype).cuda(),
        w.cuda(),
        b.cuda(),
        b.cuda(),
        b.cuda(),
        num_instances=n,
        backend="reference",
    )
    assert_close(gpu, cpu, BACKEND)


@pytest.mark.extension
@pytest.mark.parametrize("n", [10, 40])
def test_cuda_hadamard_mux_forward_backward_at_benchmark_shape(n):
    if not _extension.load():
        pytest.skip("muxkernels._C is not built")
    g = torch.Generator().manual_seed(n)
    emb = torch.randn(64 * n, 128, 768, generator=g).to("cuda", torch.bfloat16)
    vec = transforms.gaussian_vectors(n, 768, generator=g, device="cuda").requires_grad_()
    emb.requires_grad_()
    out = muxkernels.hadamard_mux(emb, vec, backend="cuda")
    grad = torch.randn_like(out)
    d_emb, d_vec = torch.autograd.grad(out, (emb, vec), grad)
    ref = muxkernels.hadamard_mux(emb, vec, backend="reference")
    r_emb, r_vec = torch.autograd.grad(ref, (emb, vec), grad)
    # One kernel against the reference's elementwise result in the same dtype: both within
    # the output's rounding of the exact value.
    assert_close(out, ref, KERNEL, what="x")
    assert_close(d_emb, r_emb, KERNEL, what="d_embeddings")
    assert_close(d_vec, r_vec, BACKEND, what="d_vectors")
