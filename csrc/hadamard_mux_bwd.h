// Hadamard (vector) multiplex backward: the CUDA launcher, declared for plain C++.
//
// docs/design.md §1, gradients of x[g, t] = (1 / n) sum_i v[i] * E[g, i, t]:
//   dx      : (groups, len, d) contiguous       ("grad_out", the gradient of x)
//   E       : (groups, n, len, d) contiguous    ("embeddings")
//   v       : (n, d) contiguous                 ("vectors")
//   dE      : (groups, n, len, d) contiguous    dE[g, i, t, k] = v[i, k] * dx[g, t, k] / n
//   partial : (chunks, n, d) contiguous, fp32 (fp64 for float64 data), or null
//             partial[c, i, k] = sum over the rows (g, t) of chunk c of E[g, i, t, k] * dx[g, t, k]
// so that dv[i, k] = (1 / n) sum_c partial[c, i, k]: the caller sums the chunks (a
// deterministic reduction; no atomics anywhere). Rows (g, t) = g * len + t are cut into
// `chunks` consecutive runs of equal length (the last ones may be shorter or empty).
//
// This header includes only CUDA runtime headers, never torch/ATen.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "common.h"

namespace muxkernels {

// Whether (data dtype of dx, E and dE; dtype of v) is supported: v has the data's
// dtype or float32.
bool hadamard_mux_bwd_supported(DType dtype, DType v_dtype);

// The number of row chunks, i.e. partial.size(0), for rows = groups * len rows.
int64_t hadamard_mux_bwd_chunks(int64_t rows, int64_t n);

// Enqueues the backward kernel on `stream`: writes dE, and partial when it is not null.
// 16-byte vector loads and stores when d * sizeof(element) is a multiple of 16 and dx,
// E and dE are 16-byte aligned; an element-wise path otherwise. Sizes and offsets are
// 64-bit. Returns cudaErrorInvalidValue for an unsupported dtype or a size below 1, else
// the launch's error.
cudaError_t launch_hadamard_mux_bwd(const void* grad_out, const void* E, Param v,
                                    void* dE, void* partial, int64_t groups, int64_t n,
                                    int64_t len, int64_t d, DType dtype, cudaStream_t stream);

}  // namespace muxkernels
