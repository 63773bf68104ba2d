// Index-demultiplex gather core, backward kernels. See demux_gather_bwd.h for the
// contract.
//
// Main kernel: block (g, tile) holds R rows (g, t) for R consecutive positions t of the
// tile, each row held by the threads of one threadIdx.y (ITEMS packs per thread, ~8
// elements, so that c, the recomputed forward values and the dc, d_ln_weight and
// d_ln_bias accumulators stay in registers). For each instance i every row recomputes
// pre, x and rstd, loads du, and computes dpre; dc accumulates in registers over i. For
// the token and sequence gathers the R rows' dpre meet in shared memory and the block
// adds them in a fixed order, writing da_partial[g, tile, i]; the selected gather
// writes dpre to a workspace instead and a second kernel sums, for each (g, i), the rows
// that selected i. The LayerNorm parameter gradients are summed over the block's rows the
// same way at the end. No atomics: every sum has a fixed order. Only CUDA headers are
// included here (no torch/ATen).

#include "demux_gather_bwd.h"

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

constexpr int kMaxRowsPerBlock = 16;
// Shared memory for the staging rows (with the 4 KiB of `red`, under the 48 KiB that
// needs no opt-in): one row always fits, as d <= kMaxDemuxD = 8192.
constexpr int64_t kMaxStageFloats = 11 * 1024;
static_assert(kMaxStageFloats >= kMaxDemuxD, "one staging row must fit");
constexpr int kSelectDaThreads = 256;
constexpr int64_t kMaxGridY = 65535;

// Threads of a block: the rows of 8 elements per thread fit in 128 registers at 512.
template <int ITEMS>
constexpr int kMaxThreads = ITEMS <= 4 ? 512 : 1024;

template <typename T>
struct Params {
  const StorageOf<T>* c;
  const StorageOf<T>* grad_u;
  StorageOf<T>* dc;
  DeviceParam a, ln_weight;
  const int64_t* index;  // null unless the gather is "selected"
  float* da_partial;
  float* ln_partial;
  float* dpre;
  int64_t n, len, d;
  int64_t a_group_stride;  // n * d, or 0 when a is broadcast over the groups
  int64_t t0, t_out, tiles, blocks;
  float inv_d, eps;
};

// The sum over the block's `rows` rows of v (ITEMS packs per thread, valid packs only)
// written to out[k] for k < d; `stage` holds blockDim.y rows of d floats. Every thread of
// the block calls it.
template <int VEC, int ITEMS>
__device__ __forceinline__ void block_row_sum(const float (&v)[ITEMS][VEC], bool active,
                                              int64_t packs, int64_t d, int64_t rows,
                                              float* stage, float* __restrict__ out) {
  if (active) {
    float* mine = stage + threadIdx.y * d;
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      if (pack_of(j) < packs) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) mine[pack_of(j) * VEC + e] = v[j][e];
      }
    }
  }
  __syncthreads();
  const int64_t threads = static_cast<int64_t>(blockDim.x) * blockDim.y;
  for (int64_t k = threadIdx.y * blockDim.x + threadIdx.x; k < d; k += threads) {
    float s = 0.0f;
    for (int64_t r = 0; r < rows; ++r) s += stage[r * d + k];
    out[k] = s;
  }
  __syncthreads();
}

template <typename T, int VEC, int ITEMS>
__global__ void __launch_bounds__(kMaxThreads<ITEMS>)
    demux_gather_bwd_kernel(const Params<T> p) {
  extern __shared__ float stage[];  // blockDim.y rows of d floats
  __shared__ float red[kMaxRowsPerBlock * 32 * 2];
  const int64_t packs = p.d / VEC;
  const int64_t g = blockIdx.x / p.tiles;
  const int64_t tile = blockIdx.x - g * p.tiles;
  const int64_t left = p.t_out - tile * blockDim.y;  // positions from this tile on
  const int64_t rows = left < blockDim.y ? left : blockDim.y;
  const bool active = threadIdx.y < rows;  // uniform over the row's threads
  const int64_t tt = tile * blockDim.y + threadIdx.y;
  const int64_t c_row = g * p.len + p.t0 + tt;  // also the row of dc and dpre

  float c[ITEMS][VEC], dc[ITEMS][VEC], dw[ITEMS][VEC], db[ITEMS][VEC];
  if (active) {
    detail::load_row<T>(p.c + c_row * p.d, packs, c);
  } else {
    detail::load_row<T>(p.c, 0, c);  // zeros
  }
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) dc[j][e] = dw[j][e] = db[j][e] = 0.0f;
  }

  // All n instances, or the one index[g, t] selects: the same count in every row.
  int64_t i = 0;
  int64_t i_end = p.n;
  if (p.index != nullptr) {
    i = active ? p.index[c_row] : 0;
    i_end = i + 1;
  }
#pragma unroll 1
  for (; i < i_end; ++i) {
    float pre[ITEMS][VEC], x[ITEMS][VEC], du[ITEMS][VEC];
    const float rstd = detail::centered_gelu<T>(p.a, g * p.a_group_stride + i * p.d, c, packs,
                                                p.inv_d, p.eps, red, pre, x);
    const int64_t du_row = p.index != nullptr ? c_row : (g * p.n + i) * p.t_out + tt;
    detail::load_row<T>(p.grad_u + du_row * p.d, active ? packs : 0, du);

    // x <- xhat, du <- gd = du * ln_weight; sums of gd and gd * xhat.
    float s[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      if (pack_of(j) < packs) {
        float w[VEC];
        detail::load_param<T, VEC>(p.ln_weight, pack_of(j) * VEC, w);
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          x[j][e] *= rstd;
          dw[j][e] += du[j][e] * x[j][e];
          db[j][e] += du[j][e];
          du[j][e] *= w[e];
          s[0] += du[j][e];
          s[1] += du[j][e] * x[j][e];
        }
      }
    }
    detail::row_sum(s, red);
    const float mean_gd = s[0] * p.inv_d;
    const float mean_gd_xhat = s[1] * p.inv_d;
    // x <- dpre
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        x[j][e] = rstd * (du[j][e] - mean_gd - x[j][e] * mean_gd_xhat) *
                  detail::gelu_grad(pre[j][e]);
        dc[j][e] += x[j][e];
      }
    }
    if (p.index != nullptr) {
      if (active) {
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
          if (pack_of(j) < packs) {
            float* out = p.dpre + c_row * p.d + pack_of(j) * VEC;
#pragma unroll
            for (int e = 0; e < VEC; ++e) out[e] = x[j][e];
          }
        }
      }
    } else {
      block_row_sum(x, active, packs, p.d, rows, stage,
                    p.da_partial + ((g * p.tiles + tile) * p.n + i) * p.d);
    }
  }

  if (active) {
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      if (pack_of(j) < packs) {
        detail::store_acc<T, VEC>(p.dc + c_row * p.d + pack_of(j) * VEC, dc[j]);
      }
    }
  }
  block_row_sum(dw, active, packs, p.d, rows, stage, p.ln_partial + blockIdx.x * p.d);
  block_row_sum(db, active, packs, p.d, rows, stage,
                p.ln_partial + (p.blocks + blockIdx.x) * p.d);
}

// da[g, i, k] = sum over t with index[g, t] == i of dpre[g, t, k], t ascending.
__global__ void __launch_bounds__(kSelectDaThreads)
    select_da_kernel(const float* __restrict__ dpre, const int64_t* __restrict__ index,
                     float* __restrict__ da, int64_t n, int64_t len, int64_t d) {
  const int64_t g = blockIdx.x / n;
  const int64_t i = blockIdx.x - g * n;
  for (int64_t k = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; k < d;
       k += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    float s = 0.0f;
    for (int64_t t = 0; t < len; ++t) {
      if (index[g * len + t] == i) s += dpre[(g * len + t) * d + k];
    }
    da[(g * n + i) * d + k] = s;
  }
}

struct Layout {
  RowLayout row;
  int rows_per_block;
};

template <int VEC>
Layout choose_layout(const DemuxGatherArgs& a, int64_t t_out) {
  Layout layout;
  detail::choose_row_layout(a.d / VEC, 1, &layout.row);  // fits: d <= kMaxDemuxD
  const int max_threads = layout.row.items <= 4 ? kMaxThreads<4> : kMaxThreads<8>;
  const int64_t rows = std::min<int64_t>(
      {max_threads / layout.row.threads, kMaxRowsPerBlock, t_out, kMaxStageFloats / a.d});
  layout.rows_per_block = static_cast<int>(std::max<int64_t>(rows, 1));
  return layout;
}

template <typename T>
bool vector_path(const DemuxGatherArgs& a, const DemuxGatherBwdBuffers& b) {
  constexpr int kVec = detail::kVecOf<T>;
  return a.d % kVec == 0 && is_aligned(a.c, kVectorBytes) &&
         is_aligned(b.grad_u, kVectorBytes) && is_aligned(b.dc, kVectorBytes) &&
         detail::params_aligned<kVec>({a.a, a.ln_weight});
}

template <typename T, int VEC>
cudaError_t launch(const DemuxGatherArgs& a, const DemuxGatherBwdBuffers& b,
                   const DemuxGatherBwdPlan& plan, cudaStream_t stream) {
  using S = StorageOf<T>;
  const detail::GatherRows rows = detail::gather_rows(a);
  const Layout layout = choose_layout<VEC>(a, rows.t_out);
  const bool selected = a.gather == Gather::kSelected;
  const Params<T> p{static_cast<const S*>(a.c),
                    static_cast<const S*>(b.grad_u),
                    static_cast<S*>(b.dc),
                    detail::make_param(a.a),
                    detail::make_param(a.ln_weight),
                    selected ? a.index : nullptr,
                    b.da_partial,
                    b.ln_partial,
                    b.dpre,
                    a.n,
                    a.len,
                    a.d,
                    a.a_groups == 1 ? 0 : a.n * a.d,
                    rows.t0,
                    rows.t_out,
                    plan.tiles,
                    plan.blocks,
                    static_cast<float>(1.0 / static_cast<double>(a.d)),
                    static_cast<float>(a.eps)};
  const dim3 block(static_cast<unsigned>(layout.row.threads),
                   static_cast<unsigned>(layout.rows_per_block));
  const size_t stage_bytes = static_cast<size_t>(layout.rows_per_block) * a.d * sizeof(float);
  cudaError_t err = detail::dispatch_items(layout.row.items, [&](auto items) {
    demux_gather_bwd_kernel<T, VEC, decltype(items)::value>
        <<<static_cast<unsigned>(plan.blocks), block, stage_bytes, stream>>>(p);
    return cudaGetLastError();
  });
  if (err != cudaSuccess || !selected) return err;
  const dim3 da_grid(static_cast<unsigned>(a.groups * a.n),
                     static_cast<unsigned>(std::min(ceil_div(a.d, kSelectDaThreads), kMaxGridY)));
  select_da_kernel<<<da_grid, kSelectDaThreads, 0, stream>>>(b.dpre, a.index, b.da_partial, a.n,
                                                              a.len, a.d);
  return cudaGetLastError();
}

}  // namespace

bool plan_demux_gather_bwd(const DemuxGatherArgs& a, const DemuxGatherBwdBuffers& b,
                           DemuxGatherBwdPlan* plan) {
  if (!demux_gather_supported(a)) return false;
  const int64_t t_out = detail::gather_rows(a).t_out;
  const cudaError_t err = detail::dispatch_dtype<false>(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    return detail::dispatch_vec<T>(vector_path<T>(a, b), [&](auto vec) {
      const Layout layout = choose_layout<decltype(vec)::value>(a, t_out);
      plan->tiles = ceil_div(t_out, layout.rows_per_block);
      return cudaSuccess;
    });
  });
  plan->blocks = a.groups * plan->tiles;
  plan->da_tiles = a.gather == Gather::kSelected ? 1 : plan->tiles;
  return err == cudaSuccess;
}

cudaError_t launch_demux_gather_bwd(const DemuxGatherArgs& a, const DemuxGatherBwdBuffers& b,
                                    cudaStream_t stream) {
  DemuxGatherBwdPlan plan;
  if (!plan_demux_gather_bwd(a, b, &plan)) return cudaErrorInvalidValue;
  return detail::dispatch_dtype<false>(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    return detail::dispatch_vec<T>(vector_path<T>(a, b), [&](auto vec) {
      return launch<T, decltype(vec)::value>(a, b, plan, stream);
    });
  });
}

}  // namespace muxkernels
