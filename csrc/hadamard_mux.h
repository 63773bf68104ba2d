// Hadamard (vector) multiplex forward: the CUDA launcher, declared for plain C++.
//
// docs/design.md §1, vector transforms:
//   E   : (groups, n, len, d) contiguous       ("embeddings", B' x N x L x d)
//   v   : (n, d) contiguous                    ("vectors")
//   out : (groups, len, d) contiguous
//   out[g, t, k] = (1 / n) * sum_i v[i, k] * E[g, i, t, k]
//
// This header includes only CUDA runtime headers, never torch/ATen, so that the
// kernel files compile fast and anywhere nvcc is installed.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "common.h"

namespace muxkernels {

// Accepted type combinations (the output has the dtype of E):
//   E in {float16, bfloat16, float32}: v has E's dtype or is float32; fp32 accumulation.
//   E float64: v is float64 or float32; fp64 accumulation.
// Returns true when (e_dtype, v_dtype) is one of those combinations.
bool hadamard_mux_fwd_supported(DType e_dtype, DType v_dtype);

// Enqueues the forward kernel on `stream`.
//
// All pointers are device pointers to contiguous data. 16-byte vector loads and
// stores are used when d * sizeof(E element) is a multiple of 16 and E and out
// are 16-byte aligned (v may use element loads if it is not aligned); any other
// case takes an element-wise path. Sizes and offsets are 64-bit throughout.
//
// Returns cudaSuccess; cudaErrorInvalidValue for an unsupported dtype
// combination, n < 1 or a negative size; or the error of the launch itself
// (cudaGetLastError() right after it). Nothing is launched when the output is
// empty (groups, len or d is 0).
cudaError_t launch_hadamard_mux_fwd(const void* E, const void* v, void* out, int64_t groups,
                                    int64_t n, int64_t len, int64_t d, DType e_dtype,
                                    DType v_dtype, cudaStream_t stream);

}  // namespace muxkernels
