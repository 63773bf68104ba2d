// Index-demultiplex gather core, backward: the CUDA launcher, for plain C++.
//
// Gradients of u[g, i, t] = LN(gelu(a[g', i] + c[g, t])) (see demux_gather_fwd.h),
// recomputed from a and c. With x = gelu(pre) - mean, xhat = x * rstd, du the incoming
// gradient and gd = du * ln_weight:
//   dpre = rstd * (gd - mean(gd) - xhat * mean(gd * xhat)) * gelu'(pre)
//   dc[g, t]  = sum_i dpre[g, i, t]     (rows the gather does not read are not written)
//   da[g', i] = sum_t dpre[g, i, t]     (and over g when a is broadcast)
//   d_ln_weight = sum du * xhat, d_ln_bias = sum du over every row
// Every sum over rows is deterministic: the kernel writes fp32 partial sums, in a fixed
// order, which the caller adds up (for instance with at::sum):
//   da        = da_partial.sum over splits (dim 1), then over groups if a_groups == 1
//   ln_weight = ln_partial[0].sum(0), ln_bias = ln_partial[1].sum(0)
//
// This header includes only CUDA runtime headers, never torch/ATen.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "common.h"
#include "demux_gather_fwd.h"

namespace muxkernels {

// Device pointers, contiguous.
struct DemuxGatherBwdBuffers {
  const void* grad_u;  // the gather's output shape, args.dtype
  void* dc;            // (groups, len, d), the dtype of c; zero it first for kSequence
  float* da_partial;   // (groups, plan.da_tiles, n, d); written, never read before written
  float* ln_partial;   // (2, plan.blocks, d)
  float* dpre;         // (groups, len, d) workspace for kSelected, else unused
};

// Sizes of the partial buffers. The gather's positions of a group fall into `tiles` tiles
// of consecutive positions (one for the sequence gather); the main kernel runs `blocks` =
// groups * splits blocks, block (g, s) taking the tiles s, s + splits, ... of group g.
// da_tiles is da_partial's dim 1: splits for the token and sequence gathers, 1 for
// kSelected (whose da is summed per (g, i) by a second kernel).
struct DemuxGatherBwdPlan {
  int64_t tiles;
  int64_t splits;
  int64_t blocks;
  int64_t da_tiles;
};

// Fills `plan` for these arguments and buffers (grad_u and dc decide the vector path).
// Returns false when the kernels do not take them: unsupported, or a row that does not fit
// the kernel's registers on its path (d <= 4096 with 16-byte loads, d <= 1024
// element-wise); the bindings compute those with ATen ops.
bool plan_demux_gather_bwd(const DemuxGatherArgs& args, const DemuxGatherBwdBuffers& buffers,
                           DemuxGatherBwdPlan* plan);

// Enqueues the backward kernels on `stream`. Returns cudaErrorInvalidValue when the
// arguments are not supported, else the launches' error.
cudaError_t launch_demux_gather_bwd(const DemuxGatherArgs& args,
                                    const DemuxGatherBwdBuffers& buffers, cudaStream_t stream);

}  // namespace muxkernels
