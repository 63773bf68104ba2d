"""The compiled extension ``muxkernels._C`` on CPU: schemas, CPU implementations (ATen ops)
against the reference, argument checks, fake implementations, opcheck, and
``muxkernels._extension``'s loading logic. The CUDA kernels are tested in
tests/gpu/test_cuda_kernels.py and tests/gpu/test_cuda_hadamard_mux.py.

Tests that need ``_C`` are skipped when it is not built, unless
``MUXKERNELS_REQUIRE_EXTENSION=1``: then importing this file fails.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import KERNEL, assert_close, float64, float64_grads, magnitude, randn
from torch._subclasses.fake_tensor import FakeTensorMode

from muxkernels import _extension, _opdefs, reference

pytestmark = pytest.mark.extension

# Raises ImportError here (a collection error) when MUXKERNELS_REQUIRE_EXTENSION=1.
HAVE_EXTENSION = _extension.load()
needs_extension = pytest.mark.skipif(
    not HAVE_EXTENSION, reason=f"muxkernels._C is not built ({_extension.load_error()!r})"
)

OPERATORS = (
    "hadamard_mux_fwd",
    "hadamard_mux_bwd",
    "embed_mux_fwd",
    "demux_gather_fwd",
    "demux_gather_bwd",
)

# (B', N, L, d): odd sizes, N = 1, L = 1, d not a multiple of any vector width.
SHAPES = [(2, 1, 1, 5), (2, 3, 1, 97), (2, 3, 4, 5), (1, 1, 3, 97), (2, 3, 2, 16)]


def hadamard_mux_fwd():
    return torch.ops.muxkernels.hadamard_mux_fwd_cuda


def assert_matches(out: torch.Tensor, e: torch.Tensor, v: torch.Tensor) -> None:
    """x = (1/N) Σ_i v_i ⊙ E_i within the kernel bound of the magnitudes summed."""
    assert out.shape == (e.shape[0], e.shape[2], e.shape[3])
    assert out.dtype == e.dtype
    want = reference.hadamard_mux(*float64(e, v))
    assert_close(out, want, KERNEL, magnitude=magnitude(reference.hadamard_mux, e, v))


def random_inputs(shape, dtype, v_dtype, generator):
    e = randn(*shape, generator=generator, dtype=dtype)
    return e, randn(shape[1], shape[3], generator=generator, dtype=v_dtype)


# ---------------------------------------------------------------------------
# Loading logic (no extension needed)
# ---------------------------------------------------------------------------


def test_load_is_cached_and_boolean():
    assert _extension.load() is HAVE_EXTENSION
    assert _extension.load() is HAVE_EXTENSION
    assert isinstance(_extension.cuda_kernels_available(), bool)
    if not torch.cuda.is_available():
        assert _extension.cuda_kernels_available() is False


def test_missing_extension_returns_false_or_raises_when_required(monkeypatch):
    def fail(name: str):
        raise ImportError(f"No module named {name!r} (simulated)")

    monkeypatch.setattr(_extension, "_loaded", None)
    monkeypatch.setattr(_extension, "_error", None)
    monkeypatch.setattr(importlib, "import_module", fail)
    monkeypatch.delenv(_extension.REQUIRE_ENV_VAR, raising=False)
    assert _extension.load() is False
    assert _extension.cuda_kernels_available() is False
    assert isinstance(_extension.load_error(), ImportError)

    monkeypatch.setenv(_extension.REQUIRE_ENV_VAR, "1")
    with pytest.raises(ImportError, match="simulated") as info:
        _extension.load()
    assert isinstance(info.value.__cause__, ImportError)


# ---------------------------------------------------------------------------
# Registration: the extension implements OPERATORS (CPU and CUDA) and defines nothing;
# load() defines each with its schema from muxkernels._opdefs, in either order
# ---------------------------------------------------------------------------


@needs_extension
def test_extension_implements_these_operators_with_the_schemas_of_opdefs():
    implemented = {name for name in _opdefs.SCHEMAS if _opdefs.has_implementation(name, "cuda")}
    assert implemented == set(OPERATORS)
    for name in OPERATORS:
        qualified = _opdefs.qualified_name(name, "cuda")
        for key in ("CPU", "CUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key), (name, key)
        schema = getattr(torch.ops.muxkernels, f"{name}_cuda").default._schema
        assert str(schema) == qualified + _opdefs.SCHEMAS[name]


@needs_extension
def test_no_implementation_lacks_its_operator():
    """An implementation registered under a name without a schema in _opdefs is unreachable."""
    dangling = [i for i in torch._C._dispatch_find_dangling_impls() if "muxkernels::" in i]
    assert dangling == []


def _run_python(script: str) -> str:
    """Runs ``script`` in a fresh interpreter (a process registers an operator only once) and
    returns its output; the extension is not required there."""
    env = {k: v for k, v in os.environ.items() if k != _extension.REQUIRE_ENV_VAR}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_extension
def test_operators_defined_before_the_extension_is_imported():
    out = _run_python(
        f"""
        import torch
        from muxkernels import _opdefs
        library = torch.library.Library("muxkernels", "FRAGMENT")
        for name in {OPERATORS!r}:
            library.define(f"{{name}}_cuda{{_opdefs.SCHEMAS[name]}}")
        import muxkernels._C
        from muxkernels import _extension
        assert _extension.load(), _extension.load_error()
        e, v = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
        torch.library.opcheck(torch.ops.muxkernels.hadamard_mux_fwd_cuda, (e, v))
        print("ok")
        """
    )
    assert out.strip() == "ok"


@needs_extension
def test_implementation_not_matching_its_schema_is_a_load_error():
    out = _run_python(
        """
        from muxkernels import _extension, _opdefs
        _opdefs.SCHEMAS["hadamard_mux_fwd"] = "(Tensor embeddings, int vectors) -> Tensor"
        assert not _extension.load()
        print(_extension.load_error())
        """
    )
    assert "muxkernels._C does not implement the operator schemas of muxkernels._opdefs" in out
    assert "hadamard_mux_fwd_cuda" in out


@needs_extension
def test_extension_takes_the_gather_layout_from_opdefs():
    """The compiled demux_gather reads GATHER_OUTPUT_DIMS when it is imported: a swapped
    layout shows in the shape its grad_u check asks for."""
    out = _run_python(
        """
        import torch
        from muxkernels import _extension, _opdefs
        _opdefs.GATHER_OUTPUT_DIMS["sequence"] = ("instances", "groups", "width")
        assert _extension.load(), _extension.load_error()
        a, c, w = torch.randn(2, 3, 5), torch.randn(2, 4, 5), torch.randn(5)
        try:
            torch.ops.muxkernels.demux_gather_bwd_cuda(
                torch.randn(2, 3, 5), a, c, w, w, 1e-5, "sequence", None, 1
            )
        except RuntimeError as err:
            print(err)
        """
    )
    assert "grad_u must have the gather's output shape [3, 2, 5], got [2, 3, 5]" in out


@needs_extension
def test_unusable_gather_layout_is_a_load_error():
    out = _run_python(
        """
        from muxkernels import _extension, _opdefs
        _opdefs.GATHER_OUTPUT_DIMS["token"] = ("groups", "heads", "width")
        assert not _extension.load()
        print(_extension.load_error())
        """
    )
    assert 'GATHER_OUTPUT_DIMS["token"] names an unknown size "heads"' in out


# ---------------------------------------------------------------------------
# hadamard_mux_fwd_cuda: CPU implementation
# ---------------------------------------------------------------------------


@needs_extension
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("vectors_fp32", [False, True], ids=["v_same", "v_fp32"])
def test_cpu_matches_formula(shape, dtype, vectors_fp32, generator):
    v_dtype = torch.float32 if vectors_fp32 else dtype
    e, v = random_inputs(shape, dtype, v_dtype, generator)
    assert_matches(hadamard_mux_fwd()(e, v), e, v)


@needs_extension
def test_cpu_output_is_fresh(generator):
    e, v = random_inputs((1, 1, 2, 3), torch.float32, torch.float32, generator)
    out = hadamard_mux_fwd()(e, v)
    assert out.untyped_storage().data_ptr() != e.untyped_storage().data_ptr()
    assert out.is_contiguous()


# ---------------------------------------------------------------------------
# Argument checks: a RuntimeError naming the argument
# ---------------------------------------------------------------------------


def _bad_arguments():
    f32, f16 = torch.float32, torch.float16
    e = torch.randn(2, 3, 4, 5)
    v = torch.randn(3, 5)
    e_strided = e.transpose(2, 3).contiguous().transpose(2, 3)  # same shape, not contiguous
    return [
        ("rank_e", torch.randn(6, 4, 5), v, r"embeddings must have rank 4"),
        ("rank_v", e, torch.randn(15), r"vectors must have rank 2"),
        ("n", e, torch.randn(2, 5), r"vectors\.size\(0\) must equal embeddings\.size\(1\)"),
        ("d", e, torch.randn(3, 6), r"vectors\.size\(1\) must equal embeddings\.size\(3\)"),
        ("dtype_e", e.to(torch.int32), v, r"embeddings must be float16, bfloat16"),
        ("dtype_v", e, v.to(f16), r"vectors must have the dtype of embeddings"),
        ("dtype_v_f64", e.to(f16), v.double(), r"vectors must have the dtype of embeddings"),
        ("contig_e", e_strided, v, r"embeddings must be contiguous"),
        ("contig_v", e, torch.randn(5, 3).t(), r"vectors must be contiguous"),
        ("empty", torch.randn(0, 3, 4, 5, dtype=f32), v, r"embeddings must be non-empty"),
    ]


@needs_extension
@pytest.mark.parametrize(
    ("embeddings", "vectors", "pattern"),
    [case[1:] for case in _bad_arguments()],
    ids=[case[0] for case in _bad_arguments()],
)
def test_argument_checks(embeddings, vectors, pattern):
    with pytest.raises(RuntimeError, match=pattern) as info:
        hadamard_mux_fwd()(embeddings, vectors)
    # The message names the operator and shows what it got.
    assert "muxkernels::hadamard_mux_fwd_cuda" in str(info.value)


@needs_extension
def test_argument_check_shows_shapes():
    with pytest.raises(RuntimeError, match=r"\[2, 5\].*\[2, 3, 4, 5\]"):
        hadamard_mux_fwd()(torch.randn(2, 3, 4, 5), torch.randn(2, 5))


# ---------------------------------------------------------------------------
# Registration: opcheck, fake tensors, torch.compile
# ---------------------------------------------------------------------------


@needs_extension
@pytest.mark.parametrize(
    ("dtype", "v_dtype"),
    [
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
        (torch.float64, torch.float32),
    ],
)
def test_opcheck_cpu(dtype, v_dtype, generator):
    e, v = random_inputs((2, 3, 4, 5), dtype, v_dtype, generator)
    torch.library.opcheck(hadamard_mux_fwd(), (e, v))


@needs_extension
def test_fake_tensor_mode():
    with FakeTensorMode():
        e = torch.empty(2, 3, 7, 97, dtype=torch.bfloat16)
        v = torch.empty(3, 97, dtype=torch.float32)
        out = hadamard_mux_fwd()(e, v)
        assert out.shape == (2, 7, 97)
        assert out.dtype == torch.bfloat16


@needs_extension
def test_compiles_fullgraph(generator):
    op = hadamard_mux_fwd()

    def f(e: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return op(e, v) * 2.0

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager", dynamic=True)
    for shape in [(2, 3, 4, 5), (3, 2, 5, 8)]:
        e, v = random_inputs(shape, torch.float32, torch.float32, generator)
        torch.testing.assert_close(compiled(e, v), f(e, v))


# ---------------------------------------------------------------------------
# hadamard_mux_bwd, embed_mux_fwd, demux_gather_{fwd,bwd}: CPU implementations against
# the reference (float64 autograd for the gradients), on the same rounded inputs
# ---------------------------------------------------------------------------

EPS = 1e-5
GATHERS = reference.GATHERS
PARAM_DTYPES = [pytest.param(False, id="params_same"), pytest.param(True, id="params_fp32")]


def op(name: str):
    return getattr(torch.ops.muxkernels, f"{name}_cuda")


# (B', N, L, d): N = 1, L = 1, d odd and not a multiple of any vector width.
HADAMARD_SHAPES = [(2, 1, 1, 5), (2, 3, 1, 97), (1, 3, 4, 5), (2, 3, 2, 16)]


def hadamard_bwd_inputs(shape, dtype, params_fp32, generator):
    groups, n, length, d = shape
    e = randn(*shape, generator=generator, dtype=dtype)
    v = randn(n, d, generator=generator, dtype=torch.float32 if params_fp32 else dtype)
    dx = randn(groups, length, d, generator=generator, dtype=dtype)
    return dx, e, v


@needs_extension
@pytest.mark.parametrize("shape", HADAMARD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("params_fp32", PARAM_DTYPES)
@pytest.mark.parametrize("vectors_grad", [True, False], ids=["dv", "no_dv"])
def test_hadamard_mux_bwd_cpu(shape, dtype, params_fp32, vectors_grad, generator):
    dx, e, v = hadamard_bwd_inputs(shape, dtype, params_fp32, generator)
    d_e, d_v = op("hadamard_mux_bwd")(dx, e, v, vectors_grad)
    want_e, want_v = float64_grads(reference.hadamard_mux, [e, v], dx)
    assert d_e.dtype == e.dtype and d_v.dtype == v.dtype
    assert_close(d_e, want_e)
    if vectors_grad:
        assert_close(d_v, want_v)
    else:
        assert d_v.shape == (0,)


# (B', N, L, d) and the table sizes (words, positions, types).
EMBED_SHAPES = [(2, 1, 1, 5), (2, 3, 4, 97), (1, 3, 1, 16), (1, 1, 3, 7)]
VOCAB = (11, 9, 2)


def embed_inputs(shape, dtype, params_fp32, generator) -> tuple:
    """The operator's arguments but eps: ids, tables, LayerNorm, vectors, position/type ids."""
    groups, n, length, d = shape
    param_dtype = torch.float32 if params_fp32 else dtype

    def ids(high: int, *size: int) -> torch.Tensor:
        return torch.randint(0, high, size, generator=generator)

    return (
        ids(VOCAB[0], groups, n, length),
        *(randn(size, d, generator=generator, dtype=dtype) for size in VOCAB),
        1.0 + 0.1 * randn(d, generator=generator, dtype=param_dtype),
        0.1 * randn(d, generator=generator, dtype=param_dtype),
        randn(n, d, generator=generator, dtype=param_dtype),
        ids(VOCAB[1], groups, n, length),
        ids(VOCAB[2], groups, n, length),
        ids(VOCAB[1], groups, length),
        ids(VOCAB[2], groups, length),
    )


def embed_reference(args: tuple) -> torch.Tensor:
    """reference.embed_mux in float64 on the same (rounded) tables and parameters."""
    cast = [t.double() if t.is_floating_point() else t for t in args]
    return reference.embed_mux(*cast, EPS)


@needs_extension
@pytest.mark.parametrize("shape", EMBED_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("params_fp32", PARAM_DTYPES)
def test_embed_mux_fwd_cpu(shape, dtype, params_fp32, generator):
    args = embed_inputs(shape, dtype, params_fp32, generator)
    out = op("embed_mux_fwd")(*args, EPS)
    assert out.dtype == dtype
    assert_close(out, embed_reference(args))


# (B', N, L', d, Ga): a general case, a shared (Ga = 1) a with tiny d, all ones, N = 1,
# L' = 1.
DEMUX_CASES = [
    (2, 3, 6, 97, 2),
    (2, 3, 6, 5, 1),
    (1, 1, 1, 5, 1),
    (2, 1, 4, 16, 2),
    (2, 3, 1, 97, 1),
]


def demux_inputs(case, dtype, params_fp32, generator) -> tuple:
    """(a, c, ln_weight, ln_bias, index, sequence_position)."""
    groups, n, length, d, a_groups = case
    param_dtype = torch.float32 if params_fp32 else dtype
    a = randn(a_groups, n, d, generator=generator, dtype=param_dtype)
    c = randn(groups, length, d, generator=generator, dtype=dtype)
    ln_weight = 1.0 + 0.1 * randn(d, generator=generator, dtype=param_dtype)
    ln_bias = 0.1 * randn(d, generator=generator, dtype=param_dtype)
    index = torch.randint(0, n, (groups, length), generator=generator)
    return a, c, ln_weight, ln_bias, index, length - 1


def demux_reference(gather, index, position):
    """reference.demux_gather as a function of (a, c, ln_weight, ln_bias)."""

    def fn(a, c, ln_weight, ln_bias):
        return reference.demux_gather(a, c, ln_weight, ln_bias, EPS, gather, index, position)

    return fn


@needs_extension
@pytest.mark.parametrize("case", DEMUX_CASES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_demux_gather_fwd_cpu(case, gather, dtype, generator):
    a, c, ln_weight, ln_bias, index, position = demux_inputs(case, dtype, False, generator)
    out = op("demux_gather_fwd")(a, c, ln_weight, ln_bias, EPS, gather, index, position, c.dtype)
    want = demux_reference(gather, index, position)(
        a.double(), c.double(), ln_weight.double(), ln_bias.double()
    )
    assert out.dtype == dtype
    assert_close(out, want)


@needs_extension
@pytest.mark.parametrize("case", DEMUX_CASES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_demux_gather_bwd_cpu(case, gather, dtype, generator):
    a, c, ln_weight, ln_bias, index, position = demux_inputs(case, dtype, False, generator)
    params = [a, c, ln_weight, ln_bias]
    shape = op("demux_gather_fwd")(*params, EPS, gather, index, position, dtype).shape
    grad_u = randn(*shape, generator=generator, dtype=dtype)
    got = op("demux_gather_bwd")(grad_u, *params, EPS, gather, index, position)
    want = float64_grads(demux_reference(gather, index, position), params, grad_u)
    for name, g, w, t in zip(
        ("da", "dc", "d_ln_weight", "d_ln_bias"), got, want, params, strict=True
    ):
        assert g.dtype == t.dtype, name
        assert_close(g, w, what=name)


@needs_extension
@pytest.mark.parametrize("gather", GATHERS)
def test_demux_gather_fp32_params_with_half_data(gather, generator):
    """float16 data (u) with float32 a, c and LayerNorm parameters, as the ops pass them:
    the ATen path computes in fp32."""
    a, c, ln_weight, ln_bias, index, position = demux_inputs(
        (2, 3, 4, 16, 1), torch.float16, True, generator
    )
    c = c.float()
    out = op("demux_gather_fwd")(
        a, c, ln_weight, ln_bias, EPS, gather, index, position, torch.float16
    )
    want = demux_reference(gather, index, position)(
        a.double(), c.double(), ln_weight.double(), ln_bias.double()
    )
    assert out.dtype == torch.float16
    assert_close(out, want)


# ---------------------------------------------------------------------------
# opcheck (schema, fakes, autograd registration, AOT dispatch) of the new operators
# ---------------------------------------------------------------------------


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("vectors_grad", [True, False], ids=["dv", "no_dv"])
def test_opcheck_hadamard_mux_bwd(dtype, vectors_grad, generator):
    args = hadamard_bwd_inputs((2, 3, 4, 5), dtype, False, generator)
    torch.library.opcheck(op("hadamard_mux_bwd"), (*args, vectors_grad))


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_opcheck_embed_mux_fwd(dtype, generator):
    args = embed_inputs((2, 3, 4, 5), dtype, dtype == torch.float32, generator)
    torch.library.opcheck(op("embed_mux_fwd"), (*args, EPS))


@needs_extension
@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("name", ["demux_gather_fwd", "demux_gather_bwd"])
def test_opcheck_demux_gather(name, gather, generator):
    a, c, ln_weight, ln_bias, index, position = demux_inputs(
        (2, 3, 4, 5, 1), torch.float64, False, generator
    )
    args = (a, c, ln_weight, ln_bias, EPS, gather, index, position)
    if name == "demux_gather_bwd":
        shape = op("demux_gather_fwd")(*args, torch.float64).shape
        args = (randn(*shape, generator=generator), *args)
    else:
        args = (*args, torch.float64)
    torch.library.opcheck(op(name), args)


@needs_extension
def test_fake_tensor_mode_new_operators():
    bf16, f32 = torch.bfloat16, torch.float32
    with FakeTensorMode():
        e, v = torch.empty(2, 3, 7, 97, dtype=bf16), torch.empty(3, 97, dtype=f32)
        d_e, d_v = op("hadamard_mux_bwd")(torch.empty(2, 7, 97, dtype=bf16), e, v, False)
        assert (d_e.shape, d_e.dtype, d_v.shape, d_v.dtype) == (e.shape, bf16, (0,), f32)
        a, c = torch.empty(1, 3, 97, dtype=f32), torch.empty(2, 9, 97, dtype=bf16)
        w, index = torch.empty(97, dtype=f32), torch.empty(2, 9, dtype=torch.long)
        for gather, shape in [
            ("token", (2, 3, 9, 97)),
            ("sequence", (2, 3, 97)),
            ("selected", (2, 9, 97)),
        ]:
            u = op("demux_gather_fwd")(a, c, w, w, EPS, gather, index, 3, bf16)
            assert (u.shape, u.dtype) == (shape, bf16)
            grads = op("demux_gather_bwd")(u, a, c, w, w, EPS, gather, index, 3)
            assert [(t.shape, t.dtype) for t in grads] == [
                (a.shape, f32),
                (c.shape, bf16),
                (w.shape, f32),
                (w.shape, f32),
            ]


# ---------------------------------------------------------------------------
# Argument checks of the new operators: a RuntimeError naming the operator and argument
# ---------------------------------------------------------------------------


def _hadamard_bwd_case(change: dict) -> tuple:
    args = {
        "grad_out": torch.randn(2, 4, 5),
        "embeddings": torch.randn(2, 3, 4, 5),
        "vectors": torch.randn(3, 5),
        "vectors_grad": True,
    }
    args.update(change)
    return tuple(args.values())


def _embed_case(change: dict) -> tuple:
    names = (
        "input_ids",
        "word_embeddings",
        "position_embeddings",
        "token_type_embeddings",
        "ln_weight",
        "ln_bias",
        "vectors",
        "position_ids",
        "token_type_ids",
        "mixed_position_ids",
        "mixed_token_type_ids",
    )
    args = dict(
        zip(
            names,
            embed_inputs((2, 3, 4, 5), torch.float32, False, torch.Generator().manual_seed(0)),
            strict=True,
        )
    )
    args["eps"] = EPS
    args.update(change)
    return tuple(args.values())


def _demux_case(change: dict, grad: bool = False) -> tuple:
    a, c, ln_weight, ln_bias, index, _ = demux_inputs(
        (2, 3, 4, 5, 2), torch.float32, False, torch.Generator().manual_seed(0)
    )
    args = {
        "a": a,
        "c": c,
        "ln_weight": ln_weight,
        "ln_bias": ln_bias,
        "eps": EPS,
        "gather": "selected",
        "index": index,
        "sequence_position": 1,
    }
    if grad:
        args = {"grad_u": torch.randn(2, 4, 5), **args}
    else:
        args["out_dtype"] = torch.float32
    args.update(change)
    return tuple(args.values())


def _bad_new_arguments():
    f16, f64 = torch.float16, torch.float64
    noncontig = torch.randn(2, 5, 4).transpose(1, 2)
    return [
        (
            "hadamard_mux_bwd",
            "grad_out_shape",
            _hadamard_bwd_case({"grad_out": torch.randn(2, 5, 5)}),
            r"grad_out\.size\(1\) must equal embeddings\.size\(2\), L",
        ),
        (
            "hadamard_mux_bwd",
            "grad_out_dtype",
            _hadamard_bwd_case({"grad_out": torch.randn(2, 4, 5, dtype=f64)}),
            r"grad_out must have the dtype of embeddings",
        ),
        (
            "hadamard_mux_bwd",
            "grad_out_contig",
            _hadamard_bwd_case({"grad_out": noncontig}),
            r"grad_out must be contiguous",
        ),
        (
            "hadamard_mux_bwd",
            "vectors_dtype",
            _hadamard_bwd_case({"vectors": torch.randn(3, 5, dtype=f16)}),
            r"vectors must have the dtype of embeddings \(Float\) or float32",
        ),
        (
            "embed_mux_fwd",
            "ids_float",
            _embed_case({"input_ids": torch.zeros(2, 3, 4)}),
            r"input_ids must be an integer tensor",
        ),
        (
            "embed_mux_fwd",
            "ids_range",
            _embed_case({"input_ids": torch.full((2, 3, 4), VOCAB[0], dtype=torch.long)}),
            r"input_ids holds values in \[11, 11\] but must lie in \[0, 11\)",
        ),
        (
            "embed_mux_fwd",
            "mixed_ids_range",
            _embed_case({"mixed_token_type_ids": torch.full((2, 4), -1, dtype=torch.long)}),
            r"mixed_token_type_ids holds values in \[-1, -1\]",
        ),
        (
            "embed_mux_fwd",
            "position_ids_shape",
            _embed_case({"position_ids": torch.zeros(2, 3, 5, dtype=torch.long)}),
            r"position_ids must have the shape of input_ids",
        ),
        (
            "embed_mux_fwd",
            "mixed_ids_shape",
            _embed_case({"mixed_position_ids": torch.zeros(2, 3, 4, dtype=torch.long)}),
            r"mixed_position_ids must have shape \(B', L\)",
        ),
        (
            "embed_mux_fwd",
            "table_dtype",
            _embed_case({"token_type_embeddings": torch.randn(2, 5, dtype=f64)}),
            r"token_type_embeddings must have the dtype of word_embeddings",
        ),
        (
            "embed_mux_fwd",
            "ln_weight_size",
            _embed_case({"ln_weight": torch.ones(6)}),
            r"ln_weight\.size\(0\) must equal word_embeddings\.size\(1\), d",
        ),
        (
            "embed_mux_fwd",
            "vectors_n",
            _embed_case({"vectors": torch.randn(2, 5)}),
            r"vectors\.size\(0\) must equal input_ids\.size\(1\), N",
        ),
        ("embed_mux_fwd", "eps", _embed_case({"eps": 0.0}), r"eps must be a positive float"),
        (
            "demux_gather_fwd",
            "gather",
            _demux_case({"gather": "word"}),
            r'gather must be "token", "sequence" or "selected", got "word"',
        ),
        (
            "demux_gather_fwd",
            "no_index",
            _demux_case({"index": None}),
            r'gather "selected" needs index',
        ),
        (
            "demux_gather_fwd",
            "index_range",
            _demux_case({"index": torch.full((2, 4), 3, dtype=torch.long)}),
            r"index holds values in \[3, 3\] but must lie in \[0, 3\)",
        ),
        (
            "demux_gather_fwd",
            "index_float",
            _demux_case({"index": torch.zeros(2, 4)}),
            r"index must be an integer tensor",
        ),
        (
            "demux_gather_fwd",
            "index_shape",
            _demux_case({"index": torch.zeros(2, 5, dtype=torch.long)}),
            r"index must have shape \(B', L'\) = \(2, 4\)",
        ),
        (
            "demux_gather_fwd",
            "position",
            _demux_case({"gather": "sequence", "sequence_position": 4}),
            r"sequence_position must lie in \[0, c\.size\(1\)\) = \[0, 4\), got 4",
        ),
        (
            "demux_gather_fwd",
            "a_groups",
            _demux_case({"a": torch.randn(3, 3, 5)}),
            r"a\.size\(0\) must equal c\.size\(0\) \(B'\) or 1",
        ),
        (
            "demux_gather_fwd",
            "ln_bias_dtype",
            _demux_case({"ln_bias": torch.zeros(5, dtype=f16)}),
            r"ln_bias must have the data's dtype \(Float\) or float32",
        ),
        (
            "demux_gather_fwd",
            "c_dtype",
            _demux_case({"c": torch.zeros(2, 4, 5, dtype=torch.int32)}),
            r"c must be float16, bfloat16, float32 or float64",
        ),
        (
            "demux_gather_bwd",
            "grad_u_shape",
            _demux_case({"grad_u": torch.randn(2, 3, 4, 5)}, grad=True),
            r"grad_u must have the gather's output shape \[2, 4, 5\]",
        ),
        (
            "demux_gather_bwd",
            "c_dtype_vs_grad_u",
            _demux_case(
                {"grad_u": torch.randn(2, 4, 5, dtype=f16), "c": torch.randn(2, 4, 5, dtype=f64)},
                grad=True,
            ),
            r"c must have the data's dtype \(Half\) or float32, got Double",
        ),
    ]


@needs_extension
@pytest.mark.parametrize(
    ("name", "args", "pattern"),
    [(case[0], case[2], case[3]) for case in _bad_new_arguments()],
    ids=[f"{case[0]}-{case[1]}" for case in _bad_new_arguments()],
)
def test_argument_checks_new_operators(name, args, pattern):
    with pytest.raises(RuntimeError, match=pattern) as info:
        op(name)(*args)
    assert f"muxkernels::{name}_cuda: " in str(info.value)
