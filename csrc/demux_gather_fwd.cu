// Index-demultiplex gather core, forward kernel. See demux_gather_fwd.h for the contract.
//
//   u[g, i, t] = LN(gelu(a[g', i] + c[g, t]))
//
// Work: a "task" is a row (g, t) and a chunk of up to kChunk instances (all n instances of
// the token and sequence gathers, in chunks; the one index[g, t] selects). A task is held
// by one warp for d up to 4 vectors of 16 bytes per lane (1024 bf16, 512 fp32), otherwise
// by the warps of a block: each thread keeps ITEMS packs of c[g, t] and of the LayerNorm
// parameters in registers, then for each instance i loads a[g', i] (L1/L2-resident, n x d
// per group), computes gelu (the polynomial form of device_utils.cuh: the kernel is bound
// by arithmetic, about 25 instructions per element), the two-pass LayerNorm statistics
// (warp shuffles, then shared memory across warps), and writes u[g, i, t] with 16-byte
// evict-first stores. Chunks keep many more tasks than warps in flight, so the SMs finish
// together. Only CUDA headers are included here (no torch/ATen).

#include "demux_gather_fwd.h"

#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

#include "demux_gather_common.cuh"
#include "device_utils.cuh"

namespace muxkernels {
namespace {

using detail::ceil_div;
using detail::DeviceParam;
using detail::is_aligned;
using detail::kVectorBytes;
using detail::pack_of;
using detail::RowLayout;
using detail::StorageOf;

constexpr int kRowsPerWarpBlock = 4;  // rows per block when a row is one warp
constexpr int64_t kMaxGridX = 2147483647;
// Registers: c and one row of results (x), up to 32 elements each on the vector path
// (rows of 8192 in 256 threads), 2 on the element-wise one (rows of 2048).
template <int VEC>
using Policy = detail::RowPolicy<VEC, 32, 256, 2, 1024>;

// Instances per task: a row's n instances are split into tasks of at most kChunk, so that
// there are many more tasks than warps that run at once (an even load on the SMs).
constexpr int64_t kChunk = 8;

template <typename T>
struct Params {
  StorageOf<T>* out;
  DeviceParam a, c, ln_weight, ln_bias;
  const int64_t* index;  // null unless the gather is "selected"
  int64_t tasks, chunks;  // tasks = rows * chunks, chunks = tasks of one row
  int64_t n, len, d;
  int64_t a_group_stride;  // n * d, or 0 when a is broadcast over the groups
  int64_t t0, t_out;
  float inv_d, eps;
};

template <typename T, int VEC, int ITEMS>
__global__ void __launch_bounds__(Policy<VEC>::kThreads, Policy<VEC>::kMinBlocks)
    demux_gather_fwd_kernel(const Params<T> p) {
  __shared__ float red[32];  // cross-warp row sums (one row per block in that case)
  const int64_t packs = p.d / VEC;
  for (int64_t task = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
       task < p.tasks; task += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const int64_t row = task / p.chunks;  // (g, tt)
    const int64_t g = row / p.t_out;
    const int64_t tt = row - g * p.t_out;
    float c[ITEMS][VEC];
    detail::load_row_param<T>(p.c, (g * p.len + p.t0 + tt) * p.d, packs, c);

    // The task's chunk of instances, or the one index[g, t] selects (then out row = row).
    int64_t i = (task - row * p.chunks) * kChunk;
    int64_t i_end = i + kChunk < p.n ? i + kChunk : p.n;
    if (p.index != nullptr) {
      i = p.index[row];
      i_end = i + 1;
    }
    int64_t a_row = g * p.a_group_stride + i * p.d;  // a[g', i]
    StorageOf<T>* out = p.out + (p.index != nullptr ? row : (g * p.n + i) * p.t_out + tt) * p.d;
#pragma unroll 1
    for (; i < i_end; ++i, a_row += p.d, out += p.t_out * p.d) {
      float x[ITEMS][VEC];
      detail::add_row<T>(p.a, a_row, c, packs, x);
      const float rstd = detail::centered_gelu(x, packs, p.inv_d, p.eps, red);
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        if (pack_of(j) < packs) {  // gamma and beta from L1: no registers held across rows
          float w[VEC], b[VEC];
          detail::load_param<T, VEC>(p.ln_weight, pack_of(j) * VEC, w);
          detail::load_param<T, VEC>(p.ln_bias, pack_of(j) * VEC, b);
#pragma unroll
          for (int e = 0; e < VEC; ++e) x[j][e] = x[j][e] * rstd * w[e] + b[e];
          detail::store_acc<T, VEC, true>(out + pack_of(j) * VEC, x[j]);
        }
      }
    }
  }
}

template <typename T, int VEC>
cudaError_t launch(const DemuxGatherArgs& a, void* out, cudaStream_t stream) {
  using S = StorageOf<T>;
  RowLayout layout;
  if (!detail::choose_row_layout<Policy<VEC>, VEC>(a.d / VEC, Policy<VEC>::kMaxItems, &layout)) {
    return cudaErrorInvalidValue;
  }
  const detail::GatherRows rows = detail::gather_rows(a);
  const bool selected = a.gather == Gather::kSelected;
  const int64_t chunks = selected ? 1 : ceil_div(a.n, kChunk);
  const Params<T> p{static_cast<S*>(out),
                    detail::make_param(a.a),
                    detail::make_param(a.c),
                    detail::make_param(a.ln_weight),
                    detail::make_param(a.ln_bias),
                    selected ? a.index : nullptr,
                    a.groups * rows.t_out * chunks,
                    chunks,
                    a.n,
                    a.len,
                    a.d,
                    a.a_groups == 1 ? 0 : a.n * a.d,
                    rows.t0,
                    rows.t_out,
                    static_cast<float>(1.0 / static_cast<double>(a.d)),
                    static_cast<float>(a.eps)};
  const int rows_per_block = layout.threads == 32 ? kRowsPerWarpBlock : 1;
  const dim3 block(static_cast<unsigned>(layout.threads), static_cast<unsigned>(rows_per_block));
  const dim3 grid(static_cast<unsigned>(
      std::min<int64_t>(ceil_div(p.tasks, rows_per_block), kMaxGridX)));
  return detail::dispatch_items<VEC, Policy<VEC>>(layout.items, [&](auto items) {
    demux_gather_fwd_kernel<T, VEC, decltype(items)::value><<<grid, block, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace

bool demux_gather_supported(const DemuxGatherArgs& a) {
  if (a.dtype == DType::kFloat64) return false;
  if (!param_dtype_ok(a.dtype, a.a.dtype) || !param_dtype_ok(a.dtype, a.c.dtype) ||
      !param_dtype_ok(a.dtype, a.ln_weight.dtype) || !param_dtype_ok(a.dtype, a.ln_bias.dtype)) {
    return false;
  }
  if (a.groups < 1 || a.n < 1 || a.len < 1 || a.d < 1 || a.d > kMaxDemuxD) return false;
  if (a.a_groups != 1 && a.a_groups != a.groups) return false;
  if (a.gather == Gather::kSequence &&
      (a.sequence_position < 0 || a.sequence_position >= a.len)) {
    return false;
  }
  return a.gather != Gather::kSelected || a.index != nullptr;
}

namespace {

// Calls f with the element type and the vector width (16 bytes of T when d * sizeof(T) is a
// multiple of 16 and out, a, c and the parameters are aligned to their packs, else 1).
template <typename F>
cudaError_t dispatch_path(const DemuxGatherArgs& a, const void* out, F&& f) {
  return detail::dispatch_dtype<false>(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = detail::kVecOf<T>;
    const bool vector_ok = a.d % kVec == 0 && is_aligned(out, kVectorBytes) &&
                           detail::params_aligned<kVec>({a.a, a.c, a.ln_weight, a.ln_bias});
    return detail::dispatch_vec<T>(vector_ok, [&](auto vec) { return f(tag, vec); });
  });
}

}  // namespace

bool demux_gather_fwd_covers(const DemuxGatherArgs& a, const void* out) {
  if (!demux_gather_supported(a)) return false;
  return dispatch_path(a, out, [&](auto, auto vec) {
           constexpr int VEC = decltype(vec)::value;
           RowLayout layout;
           const bool fits = detail::choose_row_layout<Policy<VEC>, VEC>(
               a.d / VEC, Policy<VEC>::kMaxItems, &layout);
           return fits ? cudaSuccess : cudaErrorInvalidValue;
         }) == cudaSuccess;
}

cudaError_t launch_demux_gather_fwd(const DemuxGatherArgs& a, void* out, cudaStream_t stream) {
  if (!demux_gather_supported(a)) return cudaErrorInvalidValue;
  return dispatch_path(a, out, [&](auto tag, auto vec) {
    return launch<decltype(tag), decltype(vec)::value>(a, out, stream);
  });
}

}  // namespace muxkernels
