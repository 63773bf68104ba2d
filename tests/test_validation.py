"""Bad inputs to every public op raise the right exception with a message that says why.

Shape, value and device problems raise ValueError; dtype problems raise TypeError. Each
message names the offending argument and shows the shape (or dtype, or device) it saw.
The "meta" device stands in for a second device.
"""

from __future__ import annotations

import re

import pytest
import torch

import muxkernels
from muxkernels.nn import MUXING_VARIANTS, Multiplexer

N, D, L, GROUPS = 3, 4, 2, 2
BATCH = GROUPS * N
PREFIXED = N + 1 + L  # length of an index-prefixed sequence
BAD_COUNTS = (0, -1, True, 2.0)

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64


def floats(*shape: int, dtype: torch.dtype = F32, device: str = "cpu") -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, device=device)


def ints(*shape: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    return torch.zeros(*shape, dtype=dtype)


def index_with(value: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A valid all-zero instance index with one entry set to ``value``."""
    index = torch.zeros(shape, dtype=torch.int64)
    index.view(-1)[-1] = value
    return index


def ordered(*fragments: str) -> str:
    """A regex matching the literal ``fragments`` in this order."""
    return ".*".join(re.escape(f) for f in fragments)


def run_hadamard(**overrides):
    args = {"embeddings": floats(BATCH, L, D), "vectors": floats(N, D)}
    return muxkernels.hadamard_mux(**(args | overrides))


def run_ortho(**overrides):
    args = {"embeddings": floats(BATCH, L, D), "matrices": floats(N, D, D)}
    return muxkernels.ortho_mux(**(args | overrides))


def run_lowrank(**overrides):
    args = {"embeddings": floats(BATCH, L, D), "u": floats(D, D), "h": floats(D, D)}
    return muxkernels.lowrank_ortho_mux(**(args | {"num_instances": N} | overrides))


def layer_norm_params(*lead: int, dtype: torch.dtype = F32) -> dict[str, torch.Tensor]:
    return {"ln_weight": floats(*lead, D, dtype=dtype), "ln_bias": floats(*lead, D, dtype=dtype)}


def index_params(dtype: torch.dtype = F32) -> dict[str, torch.Tensor]:
    return {
        "weight": floats(D, 2 * D, dtype=dtype),
        "bias": floats(D, dtype=dtype),
        **layer_norm_params(dtype=dtype),
    }


def run_index_demux(**overrides):
    args = {"hidden": floats(GROUPS, PREFIXED, D), **index_params(), "num_instances": N}
    return muxkernels.index_demux(**(args | overrides))


def run_index_demux_logits(**overrides):
    args = {
        "hidden": floats(GROUPS, PREFIXED, D),
        **index_params(),
        "proj_weight": floats(3, D),
        "proj_bias": floats(3),
        "num_instances": N,
    }
    return muxkernels.index_demux_logits(**(args | overrides))


def run_index_pos_demux(**overrides):
    args = {"hidden": floats(GROUPS, L, D), "keys": floats(N, D), **index_params()}
    return muxkernels.index_pos_demux(**(args | overrides))


def mlp_params(dtype: torch.dtype = F32) -> dict[str, torch.Tensor]:
    return {
        "weight": floats(N, D, D, dtype=dtype),
        "bias": floats(N, D, dtype=dtype),
        **layer_norm_params(N, dtype=dtype),
    }


def run_mlp_demux(**overrides):
    args = {"hidden": floats(GROUPS, L, D), **mlp_params()}
    return muxkernels.mlp_demux(**(args | overrides))


def run_add_index_prefix(**overrides):
    args = {
        "input_ids": torch.arange(BATCH * 5).reshape(BATCH, 5),
        "num_instances": N,
        "index_ids": [10, 11, 12],
        "filler_id": 1,
        "cls_id": 0,
    }
    return muxkernels.add_index_prefix(**(args | overrides))


def run_pad_batch(**overrides):
    args = {"batch": floats(7, L, D), "num_instances": N}
    return muxkernels.pad_batch(**(args | overrides))


def case(case_id: str, run, overrides: dict, error: type[Exception], *fragments: str):
    return pytest.param(run, overrides, error, fragments, id=case_id)


def bad_counts(run, **fixed):
    """num_instances that are not positive ints: 0, negative, bool, float."""
    return [
        case(
            f"num_instances={n!r}",
            run,
            {"num_instances": n, **fixed},
            ValueError,
            f"num_instances must be an integer >= 1, got {n!r}",
        )
        for n in BAD_COUNTS
    ]


HADAMARD = [
    case(
        "rank-2-embeddings",
        run_hadamard,
        {"embeddings": floats(BATCH, D)},
        ValueError,
        "embeddings must have shape (B, L, d) or (B', N, L, d), got rank 2 shape (6, 4)",
    ),
    case(
        "rank-5-embeddings",
        run_hadamard,
        {"embeddings": floats(GROUPS, N, L, D, 1)},
        ValueError,
        "embeddings must have shape",
        "got rank 5 shape (2, 3, 2, 4, 1)",
    ),
    case(
        "rank-3-vectors",
        run_hadamard,
        {"vectors": floats(N, D, D)},
        ValueError,
        "vectors must have shape (N, d), got rank 3 shape (3, 4, 4)",
    ),
    case(
        "grouped-N-mismatch",
        run_hadamard,
        {"embeddings": floats(GROUPS, 2, L, D)},
        ValueError,
        "embeddings has size 2 in dim 1 (shape (2, 2, 2, 4))",
        "the number of instances N is 3",
    ),
    case(
        "batch-not-multiple-of-N",
        run_hadamard,
        {"embeddings": floats(7, L, D)},
        ValueError,
        "embeddings has batch size 7 (shape (7, 2, 4))",
        "num_instances=3",
        "pad_batch",
    ),
    case(
        "d-mismatch-grouped",
        run_hadamard,
        {"embeddings": floats(GROUPS, N, L, 5)},
        ValueError,
        "embeddings has size 5",
        "(shape (2, 3, 2, 5))",
        "hidden size d is 4",
    ),
    case(
        "d-mismatch-batch",
        run_hadamard,
        {"embeddings": floats(BATCH, L, 5)},
        ValueError,
        "embeddings has size 5",
        "(shape (6, 2, 5))",
        "hidden size d is 4",
    ),
    case(
        "integer-embeddings",
        run_hadamard,
        {"embeddings": ints(BATCH, L, D)},
        TypeError,
        "embeddings must be float16, bfloat16, float32 or float64, got torch.int64",
    ),
    case(
        "integer-vectors",
        run_hadamard,
        {"vectors": ints(N, D, dtype=torch.int32)},
        TypeError,
        "vectors must be float16, bfloat16, float32 or float64, got torch.int32",
    ),
    case(
        "fp16-embeddings-bf16-vectors",
        run_hadamard,
        {"embeddings": floats(BATCH, L, D, dtype=F16), "vectors": floats(N, D, dtype=BF16)},
        TypeError,
        "vectors has dtype torch.bfloat16",
        "embeddings in torch.float16",
        "torch.float16 or torch.float32",
    ),
    case(
        "fp64-embeddings-fp32-vectors",
        run_hadamard,
        {"embeddings": floats(BATCH, L, D, dtype=F64)},
        TypeError,
        "vectors has dtype torch.float32",
        "embeddings in torch.float64 it must be torch.float64",
    ),
    case(
        "vectors-on-other-device",
        run_hadamard,
        {"vectors": floats(N, D, device="meta")},
        ValueError,
        "vectors is on meta but embeddings is on cpu",
    ),
    case(
        "embeddings-on-other-device",
        run_hadamard,
        {"embeddings": floats(BATCH, L, D, device="meta")},
        ValueError,
        "vectors is on cpu but embeddings is on meta",
    ),
    case(
        "zero-groups",
        run_hadamard,
        {"embeddings": floats(0, L, D)},
        ValueError,
        "embeddings is empty (shape (0, 2, 4))",
    ),
    case(
        "zero-length",
        run_hadamard,
        {"embeddings": floats(BATCH, 0, D)},
        ValueError,
        "embeddings is empty (shape (6, 0, 4))",
    ),
    case(
        "zero-hidden-size",
        run_hadamard,
        {"embeddings": floats(BATCH, L, 0), "vectors": floats(N, 0)},
        ValueError,
        "vectors is empty (shape (3, 0))",
    ),
    case(
        "zero-instances",
        run_hadamard,
        {"vectors": floats(0, D)},
        ValueError,
        "vectors is empty (shape (0, 4))",
    ),
    case(
        "embeddings-not-a-tensor",
        run_hadamard,
        {"embeddings": [[0.0] * D] * BATCH},
        TypeError,
        "embeddings must be a torch.Tensor, got list",
    ),
]

ORTHO = [
    case(
        "rank-2-embeddings",
        run_ortho,
        {"embeddings": floats(BATCH, D)},
        ValueError,
        "embeddings must have shape (B, L, d) or (B', N, L, d), got rank 2 shape (6, 4)",
    ),
    case(
        "rank-2-matrices",
        run_ortho,
        {"matrices": floats(N, D)},
        ValueError,
        "matrices must have shape (N, d, d), got rank 2 shape (3, 4)",
    ),
    case(
        "non-square-matrices",
        run_ortho,
        {"matrices": floats(N, D, 5)},
        ValueError,
        "matrices must be square (N, d, d), got shape (3, 4, 5)",
    ),
    case(
        "grouped-N-mismatch",
        run_ortho,
        {"embeddings": floats(GROUPS, 2, L, D)},
        ValueError,
        "embeddings has size 2 in dim 1 (shape (2, 2, 2, 4))",
        "the number of instances N is 3",
    ),
    case(
        "batch-not-multiple-of-N",
        run_ortho,
        {"embeddings": floats(7, L, D)},
        ValueError,
        "embeddings has batch size 7 (shape (7, 2, 4))",
        "pad_batch",
    ),
    case(
        "d-mismatch",
        run_ortho,
        {"embeddings": floats(GROUPS, N, L, 5)},
        ValueError,
        "embeddings has size 5",
        "(shape (2, 3, 2, 5))",
        "hidden size d is 4",
    ),
    case(
        "integer-embeddings",
        run_ortho,
        {"embeddings": ints(BATCH, L, D)},
        TypeError,
        "embeddings must be float16, bfloat16, float32 or float64, got torch.int64",
    ),
    case(
        "fp16-embeddings-bf16-matrices",
        run_ortho,
        {"embeddings": floats(BATCH, L, D, dtype=F16), "matrices": floats(N, D, D, dtype=BF16)},
        TypeError,
        "matrices has dtype torch.bfloat16",
        "embeddings in torch.float16",
    ),
    case(
        "fp64-embeddings-fp32-matrices",
        run_ortho,
        {"embeddings": floats(BATCH, L, D, dtype=F64)},
        TypeError,
        "matrices has dtype torch.float32",
        "embeddings in torch.float64 it must be torch.float64",
    ),
    case(
        "matrices-on-other-device",
        run_ortho,
        {"matrices": floats(N, D, D, device="meta")},
        ValueError,
        "matrices is on meta but embeddings is on cpu",
    ),
    case(
        "zero-groups",
        run_ortho,
        {"embeddings": floats(0, N, L, D)},
        ValueError,
        "embeddings is empty (shape (0, 3, 2, 4))",
    ),
    case(
        "zero-hidden-size",
        run_ortho,
        {"embeddings": floats(BATCH, L, 0), "matrices": floats(N, 0, 0)},
        ValueError,
        "matrices is empty (shape (3, 0, 0))",
    ),
]

LOWRANK = [
    case(
        "rank-3-u",
        run_lowrank,
        {"u": floats(1, D, D)},
        ValueError,
        "u must have shape (d, d), got rank 3 shape (1, 4, 4)",
    ),
    case(
        "non-square-u",
        run_lowrank,
        {"u": floats(D, 5)},
        ValueError,
        "u must be square (d, d) with d=4, got (4, 5)",
    ),
    case(
        "h-size-mismatch",
        run_lowrank,
        {"h": floats(5, 5)},
        ValueError,
        "h must be square (d, d) with d=4, got (5, 5)",
    ),
    case(
        "batch-input-without-num_instances",
        run_lowrank,
        {"num_instances": None},
        ValueError,
        "lowrank_ortho_mux needs num_instances for (B, L, d) embeddings, got shape (6, 2, 4)",
    ),
    case(
        "grouped-N-mismatch",
        run_lowrank,
        {"embeddings": floats(GROUPS, N, L, D), "num_instances": 2},
        ValueError,
        "embeddings has size 3 in dim 1 (shape (2, 3, 2, 4))",
        "the number of instances N is 2",
    ),
    case(
        "batch-not-multiple-of-N",
        run_lowrank,
        {"embeddings": floats(7, L, D)},
        ValueError,
        "embeddings has batch size 7 (shape (7, 2, 4))",
        "pad_batch",
    ),
    case(
        "d-mismatch",
        run_lowrank,
        {"embeddings": floats(GROUPS, N, L, 5)},
        ValueError,
        "embeddings has size 5",
        "(shape (2, 3, 2, 5))",
        "hidden size d is 4",
    ),
    case(
        "d-smaller-than-N",
        run_lowrank,
        {"embeddings": floats(1, N, L, 2), "u": floats(2, 2), "h": floats(2, 2)},
        ValueError,
        "low-rank transforms need d >= N, got d=2 and N=3",
    ),
    case(
        "integer-embeddings",
        run_lowrank,
        {"embeddings": ints(BATCH, L, D)},
        TypeError,
        "embeddings must be float16, bfloat16, float32 or float64, got torch.int64",
    ),
    case(
        "fp16-embeddings-bf16-h",
        run_lowrank,
        {"embeddings": floats(BATCH, L, D, dtype=F16), "h": floats(D, D, dtype=BF16)},
        TypeError,
        "h has dtype torch.bfloat16",
        "embeddings in torch.float16",
    ),
    case(
        "fp64-embeddings-fp32-factors",
        run_lowrank,
        {"embeddings": floats(BATCH, L, D, dtype=F64)},
        TypeError,
        "u has dtype torch.float32",
        "embeddings in torch.float64 it must be torch.float64",
    ),
    case(
        "h-on-other-device",
        run_lowrank,
        {"h": floats(D, D, device="meta")},
        ValueError,
        "h is on meta but embeddings is on cpu",
    ),
    case(
        "zero-groups",
        run_lowrank,
        {"embeddings": floats(0, L, D)},
        ValueError,
        "embeddings is empty (shape (0, 2, 4))",
    ),
    case(
        "zero-hidden-size",
        run_lowrank,
        {"embeddings": floats(BATCH, L, 0), "u": floats(0, 0), "h": floats(0, 0)},
        ValueError,
        "u is empty (shape (0, 0))",
    ),
    *bad_counts(run_lowrank),
]


def demux_common(run, hidden_length: int, index_count: int, *bias_lead: int) -> list:
    """Cases every demultiplexer shares: hidden, dense/LayerNorm parameters, eps, gather.

    ``bias_lead`` is the bias's leading shape ((N,) for the stacked MLP branches);
    ``index_count`` is N for the gathers, 0 for the MLP demux, which has none.
    """
    index_shape = (GROUPS, hidden_length)
    cases = [
        case(
            "rank-2-hidden",
            run,
            {"hidden": floats(GROUPS * hidden_length, D)},
            ValueError,
            f"hidden must have shape (B', L', d), got rank 2 shape ({GROUPS * hidden_length}, 4)",
        ),
        case(
            "integer-hidden",
            run,
            {"hidden": ints(GROUPS, hidden_length, D)},
            TypeError,
            "hidden must be float16, bfloat16, float32 or float64, got torch.int64",
        ),
        case(
            "zero-groups",
            run,
            {"hidden": floats(0, hidden_length, D)},
            ValueError,
            f"hidden is empty (shape (0, {hidden_length}, 4))",
        ),
        case(
            "zero-hidden-size",
            run,
            {"hidden": floats(GROUPS, hidden_length, 0)},
            ValueError,
            f"hidden is empty (shape (2, {hidden_length}, 0))",
        ),
        case(
            "fp64-hidden-fp32-params",
            run,
            {"hidden": floats(GROUPS, hidden_length, D, dtype=F64)},
            TypeError,
            "has dtype torch.float32",
            "hidden in torch.float64 it must be torch.float64",
        ),
        case(
            "fp16-hidden-bf16-bias",
            run,
            {
                "hidden": floats(GROUPS, hidden_length, D, dtype=F16),
                "bias": floats(*bias_lead, D, dtype=BF16),
            },
            TypeError,
            "bias has dtype torch.bfloat16",
            "hidden in torch.float16",
        ),
        case(
            "bias-on-other-device",
            run,
            {"bias": floats(*bias_lead, D, device="meta")},
            ValueError,
            "bias is on meta but hidden is on cpu",
        ),
        case(
            "eps=0",
            run,
            {"eps": 0.0},
            ValueError,
            "eps must be a finite number > 0.0, got 0.0",
        ),
        case(
            "eps-negative",
            run,
            {"eps": -1e-5},
            ValueError,
            "eps must be a finite number > 0.0, got -1e-05",
        ),
    ]
    if index_count == 0:  # the MLP demux has no gathers
        return cases
    return [
        *cases,
        case(
            "unknown-gather",
            run,
            {"gather": "tokens"},
            ValueError,
            "gather must be one of ('token', 'sequence', 'selected'), got 'tokens'",
        ),
        case(
            "selected-without-index",
            run,
            {"gather": "selected"},
            ValueError,
            'gather="selected" needs index',
        ),
        case(
            "index-with-token-gather",
            run,
            {"index": index_with(0, index_shape)},
            ValueError,
            "index is only used with gather=\"selected\", got gather='token'",
        ),
        case(
            "index-with-sequence-gather",
            run,
            {"gather": "sequence", "index": index_with(0, index_shape)},
            ValueError,
            "got gather='sequence'",
        ),
        case(
            "index-wrong-shape",
            run,
            {"gather": "selected", "index": index_with(0, (GROUPS, hidden_length - 1))},
            ValueError,
            f"index must have shape (2, {hidden_length})",
            f"got (2, {hidden_length - 1})",
        ),
        case(
            "float-index",
            run,
            {"gather": "selected", "index": torch.zeros(index_shape)},
            TypeError,
            "index must be an integer tensor, got torch.float32",
        ),
        case(
            "negative-index",
            run,
            {"gather": "selected", "index": index_with(-1, index_shape)},
            ValueError,
            "index holds values in [-1, 0]",
            f"[0, {index_count - 1}] (num_instances={index_count})",
        ),
        case(
            "index-equal-to-N",
            run,
            {"gather": "selected", "index": index_with(index_count, index_shape)},
            ValueError,
            f"index holds values in [0, {index_count}]",
        ),
        case(
            "index-on-other-device",
            run,
            {"gather": "selected", "index": index_with(0, index_shape).to("meta")},
            ValueError,
            "index is on meta but hidden is on cpu",
        ),
    ]


INDEX_DEMUX = [
    *demux_common(run_index_demux, PREFIXED, N),
    case(
        "hidden-shorter-than-prefix",
        run_index_demux,
        {"hidden": floats(GROUPS, N, D)},
        ValueError,
        "hidden has length 3 (shape (2, 3, 4))",
        "N+1=4",
    ),
    case(
        "weight-not-d-by-2d",
        run_index_demux,
        {"weight": floats(D, D)},
        ValueError,
        "weight must have shape (4, 8) (d=4), got (4, 4)",
    ),
    case(
        "d-mismatch",
        run_index_demux,
        {"hidden": floats(GROUPS, PREFIXED, 5)},
        ValueError,
        "weight must have shape (5, 10) (d=5), got (4, 8)",
    ),
    case(
        "bias-wrong-shape",
        run_index_demux,
        {"bias": floats(D + 1)},
        ValueError,
        "bias must have shape (4,)",
        "got (5,)",
    ),
    case(
        "ln_weight-wrong-shape",
        run_index_demux,
        {"ln_weight": floats(2, D)},
        ValueError,
        "ln_weight must have shape (4,)",
        "got (2, 4)",
    ),
    case(
        "ln_bias-wrong-shape",
        run_index_demux,
        {"ln_bias": floats(1)},
        ValueError,
        "ln_bias must have shape (4,)",
        "got (1,)",
    ),
    case(
        "fp16-hidden-bf16-weight",
        run_index_demux,
        {"hidden": floats(GROUPS, PREFIXED, D, dtype=F16), "weight": floats(D, 2 * D, dtype=BF16)},
        TypeError,
        "weight has dtype torch.bfloat16",
        "hidden in torch.float16",
    ),
    case(
        "integer-weight",
        run_index_demux,
        {"weight": ints(D, 2 * D)},
        TypeError,
        "weight must be float16, bfloat16, float32 or float64, got torch.int64",
    ),
    case(
        "weight-on-other-device",
        run_index_demux,
        {"weight": floats(D, 2 * D, device="meta")},
        ValueError,
        "weight is on meta but hidden is on cpu",
    ),
    *bad_counts(run_index_demux),
]

INDEX_POS_DEMUX = [
    *demux_common(run_index_pos_demux, L, N),
    case(
        "zero-length",
        run_index_pos_demux,
        {"hidden": floats(GROUPS, 0, D)},
        ValueError,
        "hidden is empty (shape (2, 0, 4))",
    ),
    case(
        "rank-1-keys",
        run_index_pos_demux,
        {"keys": floats(D)},
        ValueError,
        "keys must have shape (N, d), got rank 1 shape (4,)",
    ),
    case(
        "keys-d-mismatch",
        run_index_pos_demux,
        {"keys": floats(N, 5)},
        ValueError,
        "keys must have shape (N, 4), got (3, 5)",
    ),
    case(
        "zero-keys",
        run_index_pos_demux,
        {"keys": floats(0, D)},
        ValueError,
        "keys is empty (shape (0, 4))",
    ),
    case(
        "integer-keys",
        run_index_pos_demux,
        {"keys": ints(N, D)},
        TypeError,
        "keys must be float16, bfloat16, float32 or float64, got torch.int64",
    ),
    case(
        "fp16-hidden-bf16-keys",
        run_index_pos_demux,
        {"hidden": floats(GROUPS, L, D, dtype=F16), "keys": floats(N, D, dtype=BF16)},
        TypeError,
        "keys has dtype torch.bfloat16",
        "hidden in torch.float16",
    ),
    case(
        "fp64-hidden-and-params-fp32-keys",
        run_index_pos_demux,
        {"hidden": floats(GROUPS, L, D, dtype=F64), **index_params(F64)},
        TypeError,
        "keys has dtype torch.float32",
        "hidden in torch.float64",
    ),
    case(
        "keys-on-other-device",
        run_index_pos_demux,
        {"keys": floats(N, D, device="meta")},
        ValueError,
        "keys is on meta but hidden is on cpu",
    ),
    case(
        "weight-not-d-by-2d",
        run_index_pos_demux,
        {"weight": floats(D, D)},
        ValueError,
        "weight must have shape (4, 8) (d=4), got (4, 4)",
    ),
]

MLP_DEMUX = [
    *demux_common(run_mlp_demux, L, 0, N),
    case(
        "rank-2-weight",
        run_mlp_demux,
        {"weight": floats(D, D)},
        ValueError,
        "weight must have shape (N, d, d), got rank 2 shape (4, 4)",
    ),
    case(
        "non-square-weight",
        run_mlp_demux,
        {"weight": floats(N, D, 5)},
        ValueError,
        "weight must have shape (3, 4, 4) (d=4), got (3, 4, 5)",
    ),
    case(
        "d-mismatch",
        run_mlp_demux,
        {"hidden": floats(GROUPS, L, 5)},
        ValueError,
        "weight must have shape (3, 5, 5) (d=5), got (3, 4, 4)",
    ),
    case(
        "bias-N-mismatch",
        run_mlp_demux,
        {"bias": floats(2, D)},
        ValueError,
        "bias must have shape (3, 4)",
        "got (2, 4)",
    ),
    case(
        "ln_weight-not-stacked",
        run_mlp_demux,
        {"ln_weight": floats(D)},
        ValueError,
        "ln_weight must have shape (3, 4)",
        "got (4,)",
    ),
    case(
        "zero-branches",
        run_mlp_demux,
        {"weight": floats(0, D, D)},
        ValueError,
        "weight is empty (shape (0, 4, 4))",
    ),
    case(
        "fp16-hidden-bf16-weight",
        run_mlp_demux,
        {"hidden": floats(GROUPS, L, D, dtype=F16), "weight": floats(N, D, D, dtype=BF16)},
        TypeError,
        "weight has dtype torch.bfloat16",
        "hidden in torch.float16",
    ),
    case(
        "weight-on-other-device",
        run_mlp_demux,
        {"weight": floats(N, D, D, device="meta")},
        ValueError,
        "weight is on meta but hidden is on cpu",
    ),
]

ADD_INDEX_PREFIX = [
    case(
        "rank-1-ids",
        run_add_index_prefix,
        {"input_ids": torch.arange(BATCH)},
        ValueError,
        "input_ids must have shape (B, L), got rank 1 shape (6,)",
    ),
    case(
        "rank-3-ids",
        run_add_index_prefix,
        {"input_ids": ints(BATCH, 5, 1)},
        ValueError,
        "input_ids must have shape (B, L), got rank 3 shape (6, 5, 1)",
    ),
    case(
        "float-ids",
        run_add_index_prefix,
        {"input_ids": floats(BATCH, 5)},
        TypeError,
        "input_ids must be an integer tensor, got torch.float32",
    ),
    case(
        "batch-not-multiple-of-N",
        run_add_index_prefix,
        {"input_ids": ints(7, 5)},
        ValueError,
        "input_ids has batch size 7 (shape (7, 5))",
        "num_instances=3",
        "pad_batch",
    ),
    case(
        "zero-rows",
        run_add_index_prefix,
        {"input_ids": ints(0, 5)},
        ValueError,
        "input_ids is empty (shape (0, 5))",
    ),
    case(
        "zero-length",
        run_add_index_prefix,
        {"input_ids": ints(BATCH, 0)},
        ValueError,
        "input_ids is empty (shape (6, 0))",
    ),
    case(
        "index_ids-wrong-count",
        run_add_index_prefix,
        {"index_ids": [10, 11]},
        ValueError,
        "index_ids must hold num_instances=3 ids, got 2",
    ),
    case(
        "attention_mask-wrong-shape",
        run_add_index_prefix,
        {"attention_mask": ints(BATCH, 4)},
        ValueError,
        "attention_mask has shape (6, 4) but input_ids has (6, 5)",
    ),
    case(
        "attention_mask-on-other-device",
        run_add_index_prefix,
        {"attention_mask": ints(BATCH, 5).to("meta")},
        ValueError,
        "attention_mask is on meta but input_ids is on cpu",
    ),
    case(
        "ids-not-a-tensor",
        run_add_index_prefix,
        {"input_ids": [[1, 2, 3]] * BATCH},
        TypeError,
        "input_ids must be a torch.Tensor, got list",
    ),
    *bad_counts(run_add_index_prefix),
]

PAD_BATCH = [
    case(
        "not-a-tensor",
        run_pad_batch,
        {"batch": [1.0] * 7},
        TypeError,
        "batch must be a torch.Tensor, got list",
    ),
    case(
        "scalar",
        run_pad_batch,
        {"batch": torch.tensor(1.0)},
        ValueError,
        "batch must have at least one row, got shape ()",
    ),
    case(
        "zero-rows",
        run_pad_batch,
        {"batch": floats(0, L, D)},
        ValueError,
        "batch must have at least one row, got shape (0, 2, 4)",
    ),
    *bad_counts(run_pad_batch),
]


INDEX_DEMUX_LOGITS = [
    *demux_common(run_index_demux_logits, PREFIXED, N),
    case(
        "proj_weight-rank-1",
        run_index_demux_logits,
        {"proj_weight": floats(D)},
        ValueError,
        "proj_weight must have shape (K, d), got rank 1 shape (4,)",
    ),
    case(
        "proj_weight-wrong-d",
        run_index_demux_logits,
        {"proj_weight": floats(3, D + 1)},
        ValueError,
        "proj_weight must have shape (3, 4) (d=4), got (3, 5)",
    ),
    case(
        "proj_weight-empty",
        run_index_demux_logits,
        {"proj_weight": floats(0, D)},
        ValueError,
        "proj_weight is empty (shape (0, 4))",
    ),
    case(
        "proj_bias-wrong-shape",
        run_index_demux_logits,
        {"proj_bias": floats(4)},
        ValueError,
        "proj_bias must have shape (3,)",
        "got (4,)",
    ),
    case(
        "proj_bias-other-dtype",
        run_index_demux_logits,
        {"hidden": floats(GROUPS, PREFIXED, D, dtype=F16), "proj_bias": floats(3, dtype=BF16)},
        TypeError,
        "proj_bias has dtype torch.bfloat16",
    ),
]


REJECTED = {
    "hadamard_mux": HADAMARD,
    "ortho_mux": ORTHO,
    "lowrank_ortho_mux": LOWRANK,
    "index_demux": INDEX_DEMUX,
    "index_demux_logits": INDEX_DEMUX_LOGITS,
    "index_pos_demux": INDEX_POS_DEMUX,
    "mlp_demux": MLP_DEMUX,
    "add_index_prefix": ADD_INDEX_PREFIX,
    "pad_batch": PAD_BATCH,
}


@pytest.mark.parametrize(
    ("run", "overrides", "error", "fragments"),
    [pytest.param(*c.values, id=f"{op}-{c.id}") for op, cases in REJECTED.items() for c in cases],
)
def test_bad_input_is_rejected(run, overrides, error, fragments):
    with pytest.raises(error, match=ordered(*fragments)):
        run(**overrides)


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(lambda rows: run_hadamard(embeddings=rows), id="hadamard_mux"),
        pytest.param(lambda rows: run_ortho(embeddings=rows), id="ortho_mux"),
        pytest.param(lambda rows: run_lowrank(embeddings=rows), id="lowrank_ortho_mux"),
        pytest.param(
            lambda rows: run_add_index_prefix(input_ids=rows[:, :, 0].long()), id="add_index_prefix"
        ),
        *(
            pytest.param(
                lambda rows, v=variant: Multiplexer(N, D, v)(rows), id=f"Multiplexer-{variant}"
            )
            for variant in MUXING_VARIANTS
        ),
    ],
)
def test_seven_rows_with_three_instances_never_drop_silently(run):
    """The published code drops the remainder of a 7-row batch at N=3; we always refuse it."""
    with pytest.raises(ValueError, match=ordered("batch size 7", "num_instances=3")):
        run(floats(7, L, D))
