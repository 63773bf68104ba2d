// Index-demultiplex gather core, forward: the CUDA launcher, for plain C++.
//
// docs/design.md §3 (and §5): u[g, i, t] = LN(gelu(a[g', i] + c[g, t])) with exact gelu
// and an affine LayerNorm over the d features (biased variance, eps inside the sqrt),
// g' = g when a has `groups` groups and g' = 0 when it has one (broadcast). Gathers:
//   kToken    : every i and t                   out (groups, n, len, d)
//   kSequence : t = sequence_position only      out (groups, n, d)
//   kSelected : i = index[g, t] for every (g, t) out (groups, len, d)
//
// This header includes only CUDA runtime headers, never torch/ATen.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "common.h"

namespace muxkernels {

enum class Gather : int32_t {
  kToken = 0,
  kSequence = 1,
  kSelected = 2,
};

// The inputs of the forward and backward launchers. Device pointers, contiguous. The data's
// dtype is `dtype`, that of u (the output) and of grad_u; a and c are the small GEMMs'
// outputs, in that dtype or float32 (float32 for half data: not rounded to half first).
struct DemuxGatherArgs {
  Param a;           // (a_groups, n, d), a_groups = groups or 1; `dtype` or float32
  Param c;           // (groups, len, d), `dtype` or float32
  Param ln_weight;   // (d,), `dtype` or float32
  Param ln_bias;     // (d,), `dtype` or float32
  const int64_t* index;  // (groups, len) ids in [0, n) for kSelected (not checked), else unused
  int64_t groups, a_groups, n, len, d;
  double eps;
  Gather gather;
  int64_t sequence_position;  // in [0, len) for kSequence
  DType dtype;                // of the output (and grad_u); float16, bfloat16 or float32
};

// Whether `args` is supported: dtype float16, bfloat16 or float32 (float64 has no
// kernel), a, c and the parameters in that dtype or float32, sizes >= 1, d <= kMaxDemuxD,
// a_groups 1 or groups, sequence_position in range for kSequence, and an index for kSelected.
constexpr int64_t kMaxDemuxD = 8192;
bool demux_gather_supported(const DemuxGatherArgs& args);

// Whether the forward kernel takes `args` (writing `out`): supported, and a row fits the
// kernel's registers on its path: d <= kMaxDemuxD with 16-byte loads and stores (d *
// sizeof(element) a multiple of 16, c, out and the parameters 16-byte aligned), d <= 2048
// element-wise. The bindings compute anything else with ATen ops.
bool demux_gather_fwd_covers(const DemuxGatherArgs& args, const void* out);

// Enqueues the forward kernel on `stream`, writing out (the gather's shape, `dtype`).
// Returns cudaErrorInvalidValue unless demux_gather_fwd_covers(args, out), else the
// launch's error.
cudaError_t launch_demux_gather_fwd(const DemuxGatherArgs& args, void* out, cudaStream_t stream);

}  // namespace muxkernels
