// Fused embedding + hadamard multiplex front end: the CUDA launcher, for plain C++.
//
// docs/design.md §1, "optional fused front end" (muxkernels.reference.embed_mux):
//   e[g, i, t] = LN(word[ids[g, i, t]] + pos[position_ids[g, i, t]]
//                   + type[token_type_ids[g, i, t]])
//   m[g, t]    = (1 / n) sum_i v[i] * e[g, i, t]
//   out[g, t]  = LN(m[g, t] + pos[mixed_position_ids[g, t]] + type[mixed_token_type_ids[g, t]])
// with LN(x) = (x - mean(x)) / sqrt(var(x) + eps) * ln_weight + ln_bias over the d features
// (biased variance), the same LayerNorm for both steps. The n per-instance embeddings e are
// never written to memory.
//
// This header includes only CUDA runtime headers, never torch/ATen.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "common.h"

namespace muxkernels {

struct EmbedMuxArgs {
  // Device pointers to contiguous int64 ids, each in range for its table (not checked
  // here: an id out of range reads out of bounds).
  const int64_t* input_ids;             // (groups, n, len)
  const int64_t* position_ids;          // (groups, n, len)
  const int64_t* token_type_ids;        // (groups, n, len)
  const int64_t* mixed_position_ids;    // (groups, len)
  const int64_t* mixed_token_type_ids;  // (groups, len)
  // Tables (rows of d elements, contiguous) and the output, all of dtype `dtype`.
  const void* word_embeddings;
  const void* position_embeddings;
  const void* token_type_embeddings;
  void* out;  // (groups, len, d)
  // (d,) and (n, d) parameters in `dtype` or float32.
  Param ln_weight;
  Param ln_bias;
  Param vectors;
  int64_t groups, n, len, d;
  double eps;
  DType dtype;
};

// Whether `args` is supported: dtype float16, bfloat16 or float32 (float64 has no kernel),
// parameters in that dtype or float32, sizes >= 1 and d <= kMaxEmbedMuxD.
constexpr int64_t kMaxEmbedMuxD = 8192;
bool embed_mux_fwd_supported(const EmbedMuxArgs& args);

// Whether the kernel takes `args`: supported, and a row fits the kernel's registers on its
// path: d <= kMaxEmbedMuxD with 16-byte loads and stores (d * sizeof(element) a multiple
// of 16, the tables, the output and the parameters 16-byte aligned), d <= 2048
// element-wise. The bindings compute anything else with ATen ops.
bool embed_mux_fwd_covers(const EmbedMuxArgs& args);

// Enqueues the kernel on `stream`. Accumulation and LayerNorm statistics are fp32.
// Returns cudaErrorInvalidValue unless embed_mux_fwd_covers(args), else the launch's
// error.
cudaError_t launch_embed_mux_fwd(const EmbedMuxArgs& args, cudaStream_t stream);

}  // namespace muxkernels
