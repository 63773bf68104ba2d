"""ImageMultiplexer: every mode against the float64 loop over instances (tests/image_loops.py),
the one-convolution form, the ops each family runs on, gradients, names and errors."""

from __future__ import annotations

import image_loops
import pytest
import torch
import torch.nn.functional as F
from helpers import BACKEND, REFERENCE, assert_close

import muxkernels
from muxkernels import image_transforms
from muxkernels.nn import IMAGE_MUX_MODES, ImageMultiplexer
from muxkernels.nn import image_multiplexer as im
from muxkernels.ops.hadamard_mux import KERNEL_BACKENDS as HADAMARD_BACKENDS
from muxkernels.ops.ortho_mux import KERNEL_BACKENDS as ORTHO_BACKENDS

# (N, C, H, W): N=1, odd sizes, several channels; remap needs H, W divisible by 4
SHAPES = [(1, 1, 5, 7), (3, 2, 5, 6), (4, 1, 8, 8)]
REMAP_SHAPES = [(1, 1, 4, 8), (3, 2, 8, 4), (16, 1, 8, 8)]


def oracle(mux: ImageMultiplexer, grouped: torch.Tensor) -> torch.Tensor:
    """The loop over instances for ``mux``'s mode and parameters."""
    if mux.mode in im.CONV_MODES:
        return image_loops.convolution(grouped, mux.rop)
    if mux.mode in im.TWO_LAYER_MODES:
        return image_loops.two_layer(grouped, mux.rop, mux.rop2)
    if mux.mode in ("SO(N)", "learnable-W"):
        return image_loops.matrix(grouped, mux.rop)
    if mux.mode == "rotation":
        return image_loops.rotation(grouped)
    if mux.mode == "remap":
        return image_loops.remap(grouped)
    return image_loops.hadamard(grouped, mux.instance_embedding)


def cases():
    for mode in IMAGE_MUX_MODES:
        for shape in REMAP_SHAPES if mode == "remap" else SHAPES:
            yield pytest.param(mode, shape, id=f"{mode}-{'x'.join(map(str, shape))}")


@pytest.mark.parametrize(("mode", "shape"), list(cases()))
def test_every_mode_matches_the_loop_over_instances(mode, shape, randn):
    n, c, h, w = shape
    mux = ImageMultiplexer(n, (c, h, w), mode, generator=7).double()
    grouped = randn(2, n, c, h, w)
    expected = oracle(mux, grouped)
    # the oracle rotates exactly; the layer's rotation matrices are float32 like every
    # transform it builds (the others are read back from the layer by the oracle)
    dtype = torch.float32 if mode == "rotation" else torch.float64
    assert_close(mux(grouped), expected, REFERENCE, dtype=dtype)
    flat = grouped.reshape(2 * n, c, h, w)  # row g·N+i is instance i of group g
    assert_close(mux(flat), expected, REFERENCE, dtype=dtype)


@pytest.mark.parametrize("mode", [*im.CONV_MODES, *im.TWO_LAYER_MODES])
def test_channel_counts_of_the_convolution_modes(mode, randn):
    mux = ImageMultiplexer(3, (2, 5, 5), mode, out_channels=6, generator=1).double()
    grouped = randn(2, 3, 2, 5, 5)
    assert mux.out_channels == 6
    assert_close(mux(grouped), oracle(mux, grouped), REFERENCE)


def test_published_layouts_and_defaults():
    """The notebook's shapes for a 20×20 grayscale image, N = 4."""
    shapes = {
        mode: {
            k: tuple(v.shape)
            for k, v in ImageMultiplexer(4, (1, 20, 20), mode).state_dict().items()
        }
        for mode in im.PUBLISHED_MODES
    }
    for mode in ("Gaussian", "graded", "identity", "learnable"):
        assert shapes[mode] == {"rop": (4, 1, 1, 3, 3)}
    assert shapes["nonlinear"] == {"rop": (4, 16, 1, 3, 3), "rop2": (4, 1, 16, 3, 3)}
    assert shapes["nonlinear-expand"] == {"rop": (4, 16, 1, 3, 3), "rop2": (4, 8, 16, 3, 3)}
    assert shapes["SO(N)"] == shapes["learnable-W"] == {"rop": (4, 400, 400)}
    assert shapes["rotation"] == shapes["remap"] == {}
    assert list(ImageMultiplexer(4, (1, 20, 20), "nonlinear").state_dict()) == ["rop", "rop2"]
    for mode in im.PUBLISHED_MODES:
        mux = ImageMultiplexer(4, (1, 20, 20), mode)
        learned = {p.requires_grad for p in mux.parameters()}
        assert learned <= {mode in im.LEARNED_MODES}


def test_fixed_transforms_are_the_published_ones():
    graded = ImageMultiplexer(3, (1, 4, 4), "graded").rop
    assert torch.equal(graded, torch.arange(1.0, 4.0).view(3, 1, 1, 1, 1).expand(3, 1, 1, 3, 3))
    assert torch.equal(ImageMultiplexer(3, (1, 4, 4), "identity").rop, torch.ones(3, 1, 1, 3, 3))
    rotations = ImageMultiplexer(3, (1, 6, 6), "SO(N)", generator=0).rop.double()
    eye = torch.eye(36, dtype=torch.float64).expand(3, 36, 36)
    torch.testing.assert_close(rotations @ rotations.transpose(1, 2), eye, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotations), torch.ones(3, dtype=torch.float64))
    a = ImageMultiplexer(2, (1, 4, 4), "Gaussian", generator=5).rop
    assert torch.equal(a, ImageMultiplexer(2, (1, 4, 4), "Gaussian", generator=5).rop)


def test_quarter_turns_permute_pixels_exactly(randn):
    """N = 4 rotates by 0, 90, 180 and 270 degrees: exact permutations (torch.rot90), times
    1, −1, −3, −5."""
    grouped = randn(2, 4, 1, 5, 5)
    mux = ImageMultiplexer(4, (1, 5, 5), "rotation").double()
    expected = sum((1 - 2 * i) * torch.rot90(grouped[:, i], i, dims=(-2, -1)) for i in range(4))
    assert_close(mux(grouped), expected, REFERENCE, dtype=torch.float32)  # float32 matrices


@pytest.mark.parametrize(("h", "w", "degrees"), [(8, 8, 45.0), (7, 10, 120.0), (20, 20, 22.5)])
def test_rotation_matrix_is_scipy_bilinear_rotate(h, w, degrees, randn):
    ndimage = pytest.importorskip("scipy.ndimage")
    image = randn(h, w)
    expected = ndimage.rotate(image.numpy(), degrees, reshape=False, order=1)
    turned = image_transforms.rotation_matrix(h, w, degrees) @ image.flatten()
    assert_close(turned.reshape(h, w), torch.from_numpy(expected), REFERENCE)


def test_convolution_modes_run_one_convolution(monkeypatch, randn):
    """N convolutions and a sum (the notebook) equal ONE convolution over the N·C stacked
    channels, and that is what runs off the cpu backend: one conv2d call per layer (the cpu
    backend's compiled kernel: tests/test_cpu_conv_mux.py)."""
    calls = []
    conv2d = F.conv2d

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return conv2d(*args, **kwargs)

    monkeypatch.setattr(im.F, "conv2d", counting)
    grouped = randn(3, 5, 2, 6, 6)
    for mode, layers in (("Gaussian", 1), ("learnable", 1), ("nonlinear-expand", 2)):
        mux = ImageMultiplexer(5, (2, 6, 6), mode, out_channels=4, generator=2, backend="reference")
        mux = mux.double()
        separate = oracle(mux, grouped)  # five convolutions per layer, then a sum
        calls.clear()
        assert_close(mux(grouped), separate, REFERENCE)
        assert len(calls) == layers and calls[0] == (3, 10, 6, 6)  # N·C = 10 channels


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_matrix_and_vector_modes_run_on_the_ops(monkeypatch, randn, backend):
    """The matrix modes run ortho_mux (rescaled by √N), except on the cpu backend (auto's
    choice for CPU tensors), whose GEMM takes the plain sum's scale of 1 itself; the vector
    modes run hadamard_mux."""
    seen = []
    spied = {im: ("ortho_mux", "hadamard_mux"), im._cpu: ("ortho_mux",)}
    for module, names in spied.items():
        for name in names:
            op = getattr(module, name)
            where = f"{module.__name__.rsplit('.', 1)[-1]}.{name}"

            def spy(*a, op=op, where=where, **k):
                seen.append((where, k.get("scale")))
                return op(*a, **k)

            monkeypatch.setattr(module, name, spy)
    grouped = randn(2, 3, 1, 4, 4)
    for mode in (*im.MATRIX_MODES, *im.VECTOR_MODES):
        ImageMultiplexer(3, (1, 4, 4), mode, generator=0, backend=backend).double()(grouped)
    matrix = ("image_multiplexer.ortho_mux", None)
    if backend == "auto":
        matrix = ("_cpu.ortho_mux", 1.0)
    assert seen == [matrix] * 3 + [("image_multiplexer.hadamard_mux", None)] * 2


@pytest.mark.parametrize("mode", IMAGE_MUX_MODES)
def test_gradients_of_every_mode(mode, randn):
    """gradcheck in float64 through the images and every trainable transform."""
    shape = (2, 1, 4, 4) if mode == "remap" else (2, 2, 3, 3)
    n, c, h, w = shape
    widths = {"out_channels": 2} if mode in im.CONV_MODES else {}
    if mode in im.TWO_LAYER_MODES:  # few weights: gradcheck perturbs each one
        widths = {"out_channels": 2, "hidden_channels": 3}
    mux = ImageMultiplexer(n, (c, h, w), mode, generator=3, **widths).double()
    params = [p for p in mux.parameters() if p.requires_grad]
    images = randn(2 * n, c, h, w).requires_grad_()

    names = [k for k, p in mux.named_parameters() if p.requires_grad]

    def run(x, *values):
        return torch.func.functional_call(mux, dict(zip(names, values, strict=True)), (x,))

    leaves = [p.detach().clone().requires_grad_() for p in params]
    assert torch.autograd.gradcheck(run, (images, *leaves), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("mode", im.LEARNED_MODES)
def test_learnable_modes_train(mode, randn):
    torch.manual_seed(0)
    mux = ImageMultiplexer(2, (1, 6, 6), mode, generator=0)
    images, target = (
        randn(8, 1, 6, 6, dtype=torch.float32),
        randn(4, mux.out_channels, 6, 6, dtype=torch.float32),
    )
    before = {k: v.clone() for k, v in mux.state_dict().items()}
    optimizer = torch.optim.Adam(mux.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.mse_loss(mux(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(not torch.equal(before[k], v) for k, v in mux.state_dict().items())


def test_kernel_backends_agree_with_the_reference(randn):
    """The matrix modes on each kernel backend of ortho_mux, the vector modes on
    hadamard_mux's, where they run here (triton under TRITON_INTERPRET=1)."""
    cpu = torch.device("cpu")
    grouped = randn(2, 3, 2, 4, 4, dtype=torch.float32)
    ran = 0
    for modes, backends in (
        (im.MATRIX_MODES, ORTHO_BACKENDS),
        (im.VECTOR_MODES, HADAMARD_BACKENDS),
    ):
        for backend in [b for b in backends if muxkernels._backend.usable(b, cpu)[0]]:
            for mode in modes:
                reference = ImageMultiplexer(3, (2, 4, 4), mode, generator=0, backend="reference")
                mux = ImageMultiplexer(3, (2, 4, 4), mode, generator=0, backend=backend)
                assert_close(mux(grouped), reference(grouped), BACKEND)
                ran += 1
    if not ran:
        pytest.skip("no kernel backend runs here (triton needs TRITON_INTERPRET=1)")


def test_pad_fills_the_last_group(randn):
    mux = ImageMultiplexer(4, (1, 4, 4), "Gaussian", generator=0, pad=True).double()
    images = randn(5, 1, 4, 4)
    padded = torch.cat([images, images[-1:].expand(3, 1, 4, 4)])
    torch.testing.assert_close(mux(images), mux(padded))
    with pytest.raises(ValueError, match="not a multiple of num_instances=4"):
        ImageMultiplexer(4, (1, 4, 4), "Gaussian")(images)


def test_half_precision_images_with_float32_transforms(randn):
    """bfloat16 images, float32 transforms: the convolutions run in the images' dtype (the
    kernels rounded to it), the ops in float32; against float64 on those same values."""
    for mode in ("Gaussian", "nonlinear", "SO(N)", "gaussian_hadamard", "remap"):
        mux = ImageMultiplexer(2, (1, 4, 4), mode, generator=0)
        images = randn(4, 1, 4, 4, dtype=torch.bfloat16)
        convolves = mode in im.CONV_MODES or mode in im.TWO_LAYER_MODES
        used = {
            k: (p.to(torch.bfloat16) if convolves else p).double()
            for k, p in mux.named_parameters()
        }
        expected = torch.func.functional_call(mux.double(), used, (images.double(),))
        got = mux.float()(images)
        assert got.dtype == torch.bfloat16
        assert_close(got, expected, REFERENCE)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "gauss"}, "mode must be one of"),
        ({"image_shape": (8, 8)}, r"image_shape must be \(C, H, W\)"),
        ({"image_shape": (1, 0, 8)}, "H must be a positive int"),
        ({"num_instances": 0}, "num_instances must be a positive int"),
        ({"mode": "SO(N)", "out_channels": 4}, "out_channels applies to the convolution modes"),
        ({"mode": "Gaussian", "hidden_channels": 4}, "hidden_channels applies to"),
        ({"mode": "Gaussian", "out_channels": 0}, "out_channels must be a positive int"),
        ({"mode": "remap", "num_instances": 17}, "at most 16 images"),
        ({"mode": "remap", "image_shape": (1, 6, 8)}, "divisible by 4"),
        ({"mode": "binary_hadamard", "num_instances": 80}, "hidden_size >= num_instances"),
    ],
)
def test_construction_errors(kwargs, message):
    args = {"num_instances": 2, "image_shape": (1, 8, 8), "mode": "Gaussian", **kwargs}
    with pytest.raises(ValueError, match=message):
        ImageMultiplexer(
            args.pop("num_instances"), args.pop("image_shape"), args.pop("mode"), **args
        )


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        ("not a tensor", TypeError, "images must be a torch.Tensor"),
        (torch.zeros(4, 1, 8, 8, dtype=torch.long), TypeError, "images must be float16"),
        (torch.zeros(4, 8, 8), ValueError, r"images must have shape \(B, C, H, W\)"),
        (torch.zeros(0, 1, 8, 8), ValueError, "images is empty"),
        (torch.zeros(4, 3, 8, 8), ValueError, "image size C is 1"),
        (torch.zeros(4, 1, 8, 9), ValueError, "image size W is 8"),
        (torch.zeros(3, 1, 8, 8), ValueError, "not a multiple of num_instances=2"),
        (torch.zeros(2, 3, 1, 8, 8), ValueError, "the number of instances N is 2"),
    ],
)
def test_input_errors(images, error, message):
    with pytest.raises(error, match=message):
        ImageMultiplexer(2, (1, 8, 8), "Gaussian")(images)
