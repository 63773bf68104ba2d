"""The cpu backend's compiled image convolution multiplexer (csrc/cpu/conv_mux.cpp).

The operators ``conv_mux_fwd_cpu`` and ``conv_mux_bwd_cpu`` against the per-instance
convolutions in float64 (x = Σ_i conv2d(E_i, rop_i), the notebook's form) on NaN-poisoned
memory at odd sizes; gradcheck; opcheck; argument checks; reductions that do not depend on
the thread count; a fullgraph compile; and which form ``ImageMultiplexer`` runs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    KERNEL,
    assert_close,
    assert_thread_count_independent,
    cpu_op,
    randn,
    require_cpu_kernels,
)

from muxkernels import _backend
from muxkernels._cpu import kernels
from muxkernels.nn import ImageMultiplexer

require_cpu_kernels()


def _oracle(images: torch.Tensor, rop: torch.Tensor) -> torch.Tensor:
    """Σ_i conv2d(E_i, rop_i), zero padding K // 2, one instance at a time in float64."""
    images, rop = images.double(), rop.double()
    pad = rop.shape[-1] // 2
    return sum(F.conv2d(images[:, i], rop[i], padding=pad) for i in range(images.shape[1]))


SIZES = [  # (B', N, C, C_out, H, W, K): odd sizes, N = 1, 1×1 images, K = 5, several chunks
    (3, 2, 1, 1, 20, 20, 3),
    (2, 3, 2, 3, 7, 5, 3),
    (1, 1, 1, 2, 1, 1, 3),
    (4, 5, 2, 1, 9, 11, 5),
    (70, 2, 1, 1, 20, 20, 3),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", SIZES)
def test_conv_mux_matches_the_per_instance_convolutions(size, dtype):
    groups, n, c, out, h, w, k = size
    images = randn(groups, n, c, h, w, generator=1, dtype=dtype)
    rop = randn(n, out, c, k, k, generator=2, dtype=dtype)
    poison = torch.full((groups * out * h * w,), float("nan"), dtype=dtype)
    del poison  # the output most likely reuses the NaN block
    want = _oracle(images, rop)
    assert_close(cpu_op("conv_mux_fwd")(images, rop), want, KERNEL)

    leaves = [t.detach().double().requires_grad_() for t in (images, rop)]
    grad = randn(*want.shape, generator=3, dtype=dtype)
    wants = torch.autograd.grad(_oracle(*leaves), leaves, grad.double())
    got = cpu_op("conv_mux_bwd")(grad, images, rop, True)
    for name, g, ref in zip(("d_images", "d_rop"), got, wants, strict=True):
        # a gradient sums many products: bound it by the magnitude of its terms
        assert_close(g, ref, KERNEL, magnitude=ref.abs().max().expand_as(ref), what=name)


def test_conv_mux_bwd_skips_the_kernel_gradient_not_asked_for():
    images, rop = randn(2, 3, 1, 6, 6, generator=1), randn(3, 1, 1, 3, 3, generator=2)
    d_images, d_rop = cpu_op("conv_mux_bwd")(torch.ones(2, 1, 6, 6, dtype=torch.float64), images,
                                         rop, False)  # fmt: skip
    assert d_rop.shape == (0,) and d_images.shape == images.shape


def test_conv_mux_gradcheck():
    images = randn(2, 3, 2, 5, 4, generator=1).requires_grad_()
    rop = randn(3, 2, 2, 3, 3, generator=2).requires_grad_()
    assert torch.autograd.gradcheck(kernels.conv_mux, (images, rop))


def test_conv_mux_reductions_do_not_depend_on_the_thread_count():
    images = randn(90, 3, 1, 20, 20, generator=1, dtype=torch.float32)
    rop = randn(3, 1, 1, 3, 3, generator=2, dtype=torch.float32)
    grad = randn(90, 1, 20, 20, generator=3, dtype=torch.float32)
    assert_thread_count_independent(lambda: cpu_op("conv_mux_bwd")(grad, images, rop, True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    images = randn(2, 3, 1, 5, 4, generator=1, dtype=dtype)
    rop = randn(3, 2, 1, 3, 3, generator=2, dtype=dtype)
    torch.library.opcheck(cpu_op("conv_mux_fwd"), (images, rop))
    grad = torch.ones(2, 2, 5, 4, dtype=dtype)
    for rop_grad in (True, False):
        torch.library.opcheck(cpu_op("conv_mux_bwd"), (grad, images, rop, rop_grad))


def test_conv_mux_compiles_fullgraph():
    images = randn(2, 3, 1, 5, 4, generator=1, dtype=torch.float32)
    rop = randn(3, 2, 1, 3, 3, generator=2, dtype=torch.float32).requires_grad_()
    torch._dynamo.reset()
    compiled = torch.compile(kernels.conv_mux, fullgraph=True, backend="aot_eager")
    got, want = compiled(images, rop), kernels.conv_mux(images, rop)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    grads = [torch.autograd.grad(x.sum(), rop)[0] for x in (got, want)]
    torch.testing.assert_close(*grads, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("images", "rop", "message"),
    [
        ((2, 3, 1, 5, 5), (3, 1, 1, 3, 3, "half"), "rop must have the data's dtype"),
        ((2, 3, 1, 5, 5, "half"), (3, 1, 1, 3, 3), "images must be float32 or float64"),
        ((2, 3, 1, 5, 5), (2, 1, 1, 3, 3), "rop must have shape (N, C_out, C, K, K) = (3, C_out"),
        ((2, 3, 1, 5, 5), (3, 1, 1, 2, 2), "with K odd"),
        ((2, 3, 5, 5), (3, 1, 1, 3, 3), "images must have rank 5"),
    ],
)
def test_conv_mux_checks_its_arguments(images, rop, message):
    def make(shape):
        dtype = torch.half if shape[-1] == "half" else torch.float32
        dims = [s for s in shape if s != "half"]
        return torch.ones(*dims, dtype=dtype)

    pattern = "".join("\\" + ch if ch in "[]()" else ch for ch in message)
    with pytest.raises(RuntimeError, match=pattern):
        cpu_op("conv_mux_fwd")(make(images), make(rop))


def test_conv_mux_bwd_checks_grad_out():
    images, rop = torch.ones(2, 3, 1, 5, 5), torch.ones(3, 1, 1, 3, 3)
    with pytest.raises(RuntimeError, match=r"grad_out must be a contiguous Float CPU tensor"):
        cpu_op("conv_mux_bwd")(torch.ones(2, 1, 5, 4), images, rop, True)


@pytest.mark.parametrize(
    ("backend", "env", "uses_kernel"),
    [("auto", None, True), ("cpu", None, True), ("reference", None, False),
     ("auto", "reference", False), ("triton", None, False)],
)  # fmt: skip
def test_image_multiplexer_runs_the_kernel_on_the_cpu_backend(
    monkeypatch, backend, env, uses_kernel
):
    if env is not None:
        monkeypatch.setenv(_backend.ENV_VAR, env)
    calls = []
    conv_mux = kernels.conv_mux
    monkeypatch.setattr(kernels, "conv_mux", lambda *a: calls.append(1) or conv_mux(*a))
    mux = ImageMultiplexer(3, (1, 6, 6), "Gaussian", generator=0, backend=backend)
    images = randn(2, 3, 1, 6, 6, generator=1, dtype=torch.float32)
    got = mux(images)
    assert bool(calls) == uses_kernel
    assert_close(got, _oracle(images, mux.rop.detach()), KERNEL)
