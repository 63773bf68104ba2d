// Index-demultiplex gather core, backward kernels. See demux_gather_bwd.h for the
// contract.
//
// Main kernel: block (g, s) takes the tiles s, s + S, ... of group g (S = splits), each
// tile R rows (g, t) for R consecutive positions t, each row held by the threads of one
// threadIdx.y (ITEMS packs per thread, at most 8 elements, so that the dc, d_ln_weight and
// d_ln_bias accumulators stay in registers; c and a are read from L1 where needed). For
// each instance i every row recomputes z = a + c, x and rstd, loads du, and computes dz;
// dc accumulates in registers over i. For the token and sequence gathers the R rows' dz
// meet in shared memory and the block adds them, in a fixed order, to its own running
// da_partial[g, s, i] (written on its first tile, then read back and added to by the same
// threads: it stays in L2, and memory sees S partial rows per (g, i) rather than one per
// tile). The selected gather writes dz to a workspace instead and a second kernel sums,
// for each (g, i), the rows that selected i. The LayerNorm parameter gradients are summed
// over the block's rows the same way at the end. No atomics: every sum has a fixed order.
// c and dc are in the data's dtype or float32 (float32 for half data). Only CUDA headers
// are included here (no torch/ATen).

#include "demux_gather_bwd.h"

#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

#include "demux_gather_common.cuh"
#include "device_utils.cuh"

namespace muxkernels {
namespace {

using detail::ceil_div;
using detail::DeviceOut;
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
// Blocks the main kernel aims for (about 4 per SM of an H100 / H200); the splits per
// group follow from it.
constexpr int64_t kTargetBlocks = 512;
constexpr int kSelectDaThreads = 64;  // a block sums 4·64 columns of da for a chunk of i
constexpr int64_t kSelectDaSmem = 40 * 1024;
constexpr int64_t kMaxGridY = 65535;

// Registers: three accumulators across instances (dc, d_ln_weight, d_ln_bias) and x, du
// within one, up to 8 elements each on the vector path (rows of 4096 in 512 threads), 2 on
// the element-wise one (rows of 1024 in 512); longer rows are computed with ATen ops.
template <int VEC>
using Policy = detail::RowPolicy<VEC, 8, 512, 2, 512>;

template <typename T>
struct Params {
  const StorageOf<T>* grad_u;
  DeviceOut dc;
  DeviceParam a, c, ln_weight;
  const int64_t* index;  // null unless the gather is "selected"
  float* da_partial;
  float* ln_partial;
  float* dpre;
  int64_t n, len, d;
  int64_t a_group_stride;  // n * d, or 0 when a is broadcast over the groups
  int64_t t0, t_out, tiles, splits, blocks;
  float inv_d, eps;
};

// Stores v (ITEMS packs per thread, valid packs only) as fp32 into row `out` with 16-byte
// stores.
template <int VEC, int ITEMS>
__device__ __forceinline__ void store_row_f32(const float (&v)[ITEMS][VEC], int64_t packs,
                                              float* __restrict__ out) {
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    if (pack_of(j) < packs) detail::store_acc<float, VEC>(out + pack_of(j) * VEC, v[j]);
  }
}

// The sum over the block's `rows` rows of v written to out (d floats), or added to it
// when `accumulate` (the threads that add a column are the ones that wrote it before);
// `stage` holds blockDim.y rows of d floats. Every thread of the block calls it.
template <int VEC, int ITEMS>
__device__ __forceinline__ void block_row_sum(const float (&v)[ITEMS][VEC], bool active,
                                              int64_t packs, int64_t d, int64_t rows,
                                              bool accumulate, float* stage,
                                              float* __restrict__ out) {
  if (active) store_row_f32(v, packs, stage + threadIdx.y * d);
  __syncthreads();
  const int threads = static_cast<int>(blockDim.x * blockDim.y);
  for (int64_t k = threadIdx.y * blockDim.x + threadIdx.x; k < packs; k += threads) {
    float s[VEC];
    detail::load_acc<float, VEC>(stage + k * VEC, s);
    for (int64_t r = 1; r < rows; ++r) {
      float t[VEC];
      detail::load_acc<float, VEC>(stage + r * d + k * VEC, t);
#pragma unroll
      for (int e = 0; e < VEC; ++e) s[e] += t[e];
    }
    if (accumulate) {
      float before[VEC];
      detail::load_acc<float, VEC>(out + k * VEC, before);
#pragma unroll
      for (int e = 0; e < VEC; ++e) s[e] += before[e];
    }
    detail::store_acc<float, VEC>(out + k * VEC, s);
  }
  __syncthreads();
}

template <typename T, int VEC, int ITEMS>
__global__ void __launch_bounds__(Policy<VEC>::kThreads, Policy<VEC>::kMinBlocks)
    demux_gather_bwd_kernel(const Params<T> p) {
  extern __shared__ float stage[];  // blockDim.y rows of d floats
  __shared__ float red[kMaxRowsPerBlock * 32 * 2];
  const int64_t packs = p.d / VEC;
  const int64_t g = blockIdx.x / p.splits;
  const int64_t split = blockIdx.x - g * p.splits;
  float dw[ITEMS][VEC], db[ITEMS][VEC];
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) dw[j][e] = db[j][e] = 0.0f;
  }

  for (int64_t tile = split; tile < p.tiles; tile += p.splits) {  // uniform over the block
    const int64_t left = p.t_out - tile * blockDim.y;  // positions from this tile on
    const int64_t rows = left < blockDim.y ? left : blockDim.y;
    const bool active = threadIdx.y < rows;  // uniform over the row's threads
    const int64_t tt = tile * blockDim.y + threadIdx.y;
    const int64_t c_row = g * p.len + p.t0 + tt;  // also the row of dc and dpre

    // c is read from L1 where it is needed, not held: registers go to the accumulators
    const int64_t c_at = (active ? c_row : 0) * p.d;
    const int64_t c_packs = active ? packs : 0;  // rows past the end read zeros
    float dc[ITEMS][VEC];
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) dc[j][e] = 0.0f;
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
      const int64_t a_row = g * p.a_group_stride + i * p.d;
      float x[ITEMS][VEC], du[ITEMS][VEC];
      detail::add_row<T>(p.a, a_row, p.c, c_at, packs, c_packs, x);
      const float rstd = detail::centered_gelu(x, packs, p.inv_d, p.eps, red);
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
      // x <- dz = dy * gelu'(z), with z = a + c recomputed (a from L1) rather than kept
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        if (pack_of(j) < packs) {
          float z[VEC], cv[VEC];
          detail::load_param<T, VEC>(p.a, a_row + pack_of(j) * VEC, z);
          if (pack_of(j) < c_packs) {
            detail::load_param<T, VEC>(p.c, c_at + pack_of(j) * VEC, cv);
          } else {
#pragma unroll
            for (int e = 0; e < VEC; ++e) cv[e] = 0.0f;
          }
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            x[j][e] = rstd * (du[j][e] - mean_gd - x[j][e] * mean_gd_xhat) *
                      detail::gelu_grad(z[e] + cv[e]);
            dc[j][e] += x[j][e];
          }
        } else {
#pragma unroll
          for (int e = 0; e < VEC; ++e) x[j][e] = 0.0f;
        }
      }
      if (p.index != nullptr) {
        if (active) store_row_f32(x, packs, p.dpre + c_row * p.d);
      } else {
        block_row_sum(x, active, packs, p.d, rows, tile != split, stage,
                      p.da_partial + ((g * p.splits + split) * p.n + i) * p.d);
      }
    }

    if (active) {
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        if (pack_of(j) < packs) {
          detail::store_param<T, VEC>(p.dc, c_row * p.d + pack_of(j) * VEC, dc[j]);
        }
      }
    }
  }
  const int64_t all_rows = p.t_out < static_cast<int64_t>(blockDim.y) ? p.t_out : blockDim.y;
  block_row_sum(dw, true, packs, p.d, all_rows, false, stage, p.ln_partial + blockIdx.x * p.d);
  block_row_sum(db, true, packs, p.d, all_rows, false, stage,
                p.ln_partial + (p.blocks + blockIdx.x) * p.d);
}

// da[g, i, k] = sum over t with index[g, t] == i of dpre[g, t, k], t ascending. Block
// (g, column slab, chunk of instances): each thread owns 4 columns and accumulates them
// for every instance of the chunk in shared memory, reading dpre[g] once per chunk.
__global__ void __launch_bounds__(kSelectDaThreads)
    select_da_kernel(const float* __restrict__ dpre, const int64_t* __restrict__ index,
                     float* __restrict__ da, int64_t n, int64_t len, int64_t d, int64_t chunk) {
  extern __shared__ float acc[];  // chunk rows of 4 * kSelectDaThreads floats
  constexpr int kCols = 4 * kSelectDaThreads;
  const int64_t g = blockIdx.x;
  const int64_t k = static_cast<int64_t>(blockIdx.y) * kCols + 4 * threadIdx.x;
  const int64_t i0 = static_cast<int64_t>(blockIdx.z) * chunk;
  const int64_t i1 = i0 + chunk < n ? i0 + chunk : n;
  float* mine = acc + 4 * threadIdx.x;
  for (int64_t i = i0; i < i1; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) mine[(i - i0) * kCols + e] = 0.0f;
  }
  const bool vector = d % 4 == 0;
  for (int64_t t = 0; t < len; ++t) {
    const int64_t i = index[g * len + t];
    if (i < i0 || i >= i1 || k >= d) continue;
    const float* row = dpre + (g * len + t) * d + k;
    float v[4];
    if (vector) {
      detail::load_acc<float, 4>(row, v);
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) v[e] = k + e < d ? row[e] : 0.0f;
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) mine[(i - i0) * kCols + e] += v[e];
  }
  if (k >= d) return;
  for (int64_t i = i0; i < i1; ++i) {
    float* out = da + (g * n + i) * d + k;
    if (vector) {
      detail::store_acc<float, 4>(out, mine + (i - i0) * kCols);
    } else {
      for (int e = 0; e < 4 && k + e < d; ++e) out[e] = mine[(i - i0) * kCols + e];
    }
  }
}

struct Layout {
  RowLayout row;
  int rows_per_block;
  bool fits;  // whether a row fits Policy<VEC> (else the kernel does not take it)
};

template <int VEC>
Layout choose_layout(const DemuxGatherArgs& a, int64_t t_out) {
  Layout layout;
  layout.fits = detail::choose_row_layout<Policy<VEC>, VEC>(a.d / VEC, 1, &layout.row);
  const int64_t rows = std::min<int64_t>({Policy<VEC>::kThreads / layout.row.threads,
                                          kMaxRowsPerBlock, t_out, kMaxStageFloats / a.d});
  layout.rows_per_block = static_cast<int>(std::max<int64_t>(rows, 1));
  return layout;
}

template <typename T>
bool vector_path(const DemuxGatherArgs& a, const DemuxGatherBwdBuffers& b) {
  constexpr int kVec = detail::kVecOf<T>;
  return a.d % kVec == 0 && is_aligned(b.grad_u, kVectorBytes) &&
         detail::params_aligned<kVec>({a.a, a.c, a.ln_weight, Param{b.dc, a.c.dtype}});
}

template <typename T, int VEC>
cudaError_t launch(const DemuxGatherArgs& a, const DemuxGatherBwdBuffers& b,
                   const DemuxGatherBwdPlan& plan, cudaStream_t stream) {
  using S = StorageOf<T>;
  const detail::GatherRows rows = detail::gather_rows(a);
  const Layout layout = choose_layout<VEC>(a, rows.t_out);
  const bool selected = a.gather == Gather::kSelected;
  const Params<T> p{static_cast<const S*>(b.grad_u),
                    DeviceOut{b.dc, a.c.dtype == DType::kFloat32},
                    detail::make_param(a.a),
                    detail::make_param(a.c),
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
                    plan.splits,
                    plan.blocks,
                    static_cast<float>(1.0 / static_cast<double>(a.d)),
                    static_cast<float>(a.eps)};
  const dim3 block(static_cast<unsigned>(layout.row.threads),
                   static_cast<unsigned>(layout.rows_per_block));
  const size_t stage_bytes = static_cast<size_t>(layout.rows_per_block) * a.d * sizeof(float);
  cudaError_t err = detail::dispatch_items<VEC, Policy<VEC>>(layout.row.items, [&](auto items) {
    demux_gather_bwd_kernel<T, VEC, decltype(items)::value>
        <<<static_cast<unsigned>(plan.blocks), block, stage_bytes, stream>>>(p);
    return cudaGetLastError();
  });
  if (err != cudaSuccess || !selected) return err;
  constexpr int64_t kCols = 4 * kSelectDaThreads;
  const int64_t chunk = std::min<int64_t>(a.n, kSelectDaSmem / (kCols * sizeof(float)));
  const dim3 da_grid(static_cast<unsigned>(a.groups),
                     static_cast<unsigned>(std::min(ceil_div(a.d, kCols), kMaxGridY)),
                     static_cast<unsigned>(ceil_div(a.n, chunk)));
  select_da_kernel<<<da_grid, kSelectDaThreads, chunk * kCols * sizeof(float), stream>>>(
      b.dpre, a.index, b.da_partial, a.n, a.len, a.d, chunk);
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
      return layout.fits ? cudaSuccess : cudaErrorInvalidValue;
    });
  });
  const bool selected = a.gather == Gather::kSelected;
  plan->splits = selected ? plan->tiles
                          : std::min(plan->tiles, std::max<int64_t>(1, kTargetBlocks / a.groups));
  plan->blocks = a.groups * plan->splits;
  plan->da_tiles = selected ? 1 : plan->splits;
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
