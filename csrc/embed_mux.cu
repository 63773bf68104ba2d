// Fused embedding + hadamard multiplex kernel. See embed_mux.h for the contract.
//
// One "row" is one output position (g, t), held by one warp (d up to 4 * 32 vectors of
// 16 bytes: 1024 bf16, 512 fp32) or by the warps of one block: each thread keeps ITEMS
// packs of VEC features in registers. For each instance i the row gathers the three
// table rows, sums them, takes the LayerNorm statistics (two-pass mean and variance,
// row sums by warp shuffles, across warps through shared memory), and accumulates
// v_i * LN(...) into m; the ids of instance i + 1 are loaded ahead. After the n
// instances the mixed position and type rows are added and the second LayerNorm is
// written. Only CUDA headers are included here (no torch/ATen).

#include "embed_mux.h"

#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

#include "device_utils.cuh"

namespace muxkernels {
namespace {

using detail::ceil_div;
using detail::is_aligned;
using detail::kVectorBytes;
using detail::load_acc;
using detail::DeviceParam;
using detail::pack_of;
using detail::RowLayout;
using detail::StorageOf;
using detail::store_acc;

constexpr int kRowsPerWarpBlock = 4;  // rows per block when a row is one warp
constexpr int64_t kMaxGridX = 2147483647;
// Registers: the running mixture m and one instance's row, plus the three table rows it
// sums: up to 16 elements each on the vector path (rows of 8192 in 512 threads), 2 on the
// element-wise one (rows of 2048).
template <int VEC>
using Policy = detail::RowPolicy<VEC, 16, 512, 2, 1024>;

template <typename T>
struct Params {
  const int64_t* input_ids;
  const int64_t* position_ids;
  const int64_t* token_type_ids;
  const int64_t* mixed_position_ids;
  const int64_t* mixed_token_type_ids;
  const StorageOf<T>* word;
  const StorageOf<T>* pos;
  const StorageOf<T>* type;
  StorageOf<T>* out;
  DeviceParam ln_weight, ln_bias, vectors;
  int64_t rows, n, len, d;
  float inv_d, eps;
};

// x <- LN(x) without the affine part, over the valid packs of the row:
// (x - mean) / sqrt(var + eps), two-pass statistics; inv_d = 1 / d.
template <int VEC, int ITEMS>
__device__ __forceinline__ void normalize(float (&x)[ITEMS][VEC], int64_t packs, float inv_d,
                                          float eps, float* red) {
  const float rstd = detail::center_row(x, packs, inv_d, eps, red);
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) x[j][e] *= rstd;
  }
}

template <typename T, int VEC, int ITEMS>
__global__ void
__launch_bounds__(Policy<VEC>::kThreads, Policy<VEC>::kMinBlocks)
    embed_mux_fwd_kernel(const Params<T> p) {
  __shared__ float red[32];  // cross-warp row sums (one row per block in that case)

  const int64_t packs = p.d / VEC;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < p.rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const int64_t g = row / p.len;
    const int64_t t = row - g * p.len;
    float m[ITEMS][VEC];
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) m[j][e] = 0.0f;
    }

    int64_t at = g * p.n * p.len + t;  // ids[g, i, t]
    int64_t id = p.input_ids[at], pid = p.position_ids[at], tid = p.token_type_ids[at];
#pragma unroll 1
    for (int64_t i = 0; i < p.n; ++i) {
      const StorageOf<T>* word = p.word + id * p.d;
      const StorageOf<T>* pos = p.pos + pid * p.d;
      const StorageOf<T>* type = p.type + tid * p.d;
      if (i + 1 < p.n) {  // the next instance's ids, ahead of this one's arithmetic
        at += p.len;
        id = p.input_ids[at];
        pid = p.position_ids[at];
        tid = p.token_type_ids[at];
      }
      float x[ITEMS][VEC];
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        const int64_t k = pack_of(j) * VEC;
        if (pack_of(j) < packs) {
          float pv[VEC], tv[VEC];
          load_acc<T, VEC>(word + k, x[j]);
          load_acc<T, VEC>(pos + k, pv);
          load_acc<T, VEC>(type + k, tv);
#pragma unroll
          for (int e = 0; e < VEC; ++e) x[j][e] = (x[j][e] + pv[e]) + tv[e];
        } else {
#pragma unroll
          for (int e = 0; e < VEC; ++e) x[j][e] = 0.0f;
        }
      }
      normalize(x, packs, p.inv_d, p.eps, red);
#pragma unroll
      for (int j = 0; j < ITEMS; ++j) {
        if (pack_of(j) < packs) {
          const int64_t k = pack_of(j) * VEC;
          float w[VEC], b[VEC], v[VEC];
          detail::load_param<T, VEC>(p.ln_weight, k, w);
          detail::load_param<T, VEC>(p.ln_bias, k, b);
          detail::load_param<T, VEC>(p.vectors, i * p.d + k, v);
#pragma unroll
          for (int e = 0; e < VEC; ++e) m[j][e] += v[e] * (x[j][e] * w[e] + b[e]);
        }
      }
    }

    const StorageOf<T>* pos = p.pos + p.mixed_position_ids[row] * p.d;
    const StorageOf<T>* type = p.type + p.mixed_token_type_ids[row] * p.d;
    const float n = static_cast<float>(p.n);
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      const int64_t k = pack_of(j) * VEC;
      if (pack_of(j) < packs) {
        float pv[VEC], tv[VEC];
        load_acc<T, VEC>(pos + k, pv);
        load_acc<T, VEC>(type + k, tv);
#pragma unroll
        for (int e = 0; e < VEC; ++e) m[j][e] = (m[j][e] / n + pv[e]) + tv[e];
      } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) m[j][e] = 0.0f;
      }
    }
    normalize(m, packs, p.inv_d, p.eps, red);
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
      if (pack_of(j) < packs) {
        const int64_t k = pack_of(j) * VEC;
        float w[VEC], b[VEC];
        detail::load_param<T, VEC>(p.ln_weight, k, w);
        detail::load_param<T, VEC>(p.ln_bias, k, b);
#pragma unroll
        for (int e = 0; e < VEC; ++e) w[e] = m[j][e] * w[e] + b[e];
        store_acc<T, VEC>(p.out + row * p.d + k, w);
      }
    }
  }
}

template <typename T, int VEC>
cudaError_t launch(const EmbedMuxArgs& a, cudaStream_t stream) {
  using S = StorageOf<T>;
  RowLayout layout;
  if (!detail::choose_row_layout<Policy<VEC>, VEC>(a.d / VEC, Policy<VEC>::kMaxItems, &layout)) {
    return cudaErrorInvalidValue;
  }
  Params<T> p{a.input_ids,
              a.position_ids,
              a.token_type_ids,
              a.mixed_position_ids,
              a.mixed_token_type_ids,
              static_cast<const S*>(a.word_embeddings),
              static_cast<const S*>(a.position_embeddings),
              static_cast<const S*>(a.token_type_embeddings),
              static_cast<S*>(a.out),
              detail::make_param(a.ln_weight),
              detail::make_param(a.ln_bias),
              detail::make_param(a.vectors),
              a.groups * a.len,
              a.n,
              a.len,
              a.d,
              static_cast<float>(1.0 / static_cast<double>(a.d)),
              static_cast<float>(a.eps)};
  const int rows_per_block = layout.threads == 32 ? kRowsPerWarpBlock : 1;
  const dim3 block(static_cast<unsigned>(layout.threads), static_cast<unsigned>(rows_per_block));
  const dim3 grid(static_cast<unsigned>(
      std::min<int64_t>(ceil_div(p.rows, rows_per_block), kMaxGridX)));
  return detail::dispatch_items<VEC, Policy<VEC>>(layout.items, [&](auto items) {
    embed_mux_fwd_kernel<T, VEC, decltype(items)::value><<<grid, block, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace

bool embed_mux_fwd_supported(const EmbedMuxArgs& a) {
  return a.dtype != DType::kFloat64 && a.groups >= 1 && a.n >= 1 && a.len >= 1 && a.d >= 1 &&
         a.d <= kMaxEmbedMuxD && param_dtype_ok(a.dtype, a.ln_weight.dtype) &&
         param_dtype_ok(a.dtype, a.ln_bias.dtype) && param_dtype_ok(a.dtype, a.vectors.dtype);
}

namespace {

// Calls f with the element type and the vector width (16 bytes of T when d * sizeof(T) is a
// multiple of 16 and the tables, the output and the parameters are aligned to it, else 1).
template <typename F>
cudaError_t dispatch_path(const EmbedMuxArgs& a, F&& f) {
  return detail::dispatch_dtype<false>(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = detail::kVecOf<T>;
    const bool vector_ok = a.d % kVec == 0 && is_aligned(a.word_embeddings, kVectorBytes) &&
                           is_aligned(a.position_embeddings, kVectorBytes) &&
                           is_aligned(a.token_type_embeddings, kVectorBytes) &&
                           is_aligned(a.out, kVectorBytes) &&
                           detail::params_aligned<kVec>({a.ln_weight, a.ln_bias, a.vectors});
    return detail::dispatch_vec<T>(vector_ok, [&](auto vec) { return f(tag, vec); });
  });
}

}  // namespace

bool embed_mux_fwd_covers(const EmbedMuxArgs& a) {
  if (!embed_mux_fwd_supported(a)) return false;
  return dispatch_path(a, [&](auto, auto vec) {
           constexpr int VEC = decltype(vec)::value;
           RowLayout layout;
           const bool fits = detail::choose_row_layout<Policy<VEC>, VEC>(
               a.d / VEC, Policy<VEC>::kMaxItems, &layout);
           return fits ? cudaSuccess : cudaErrorInvalidValue;
         }) == cudaSuccess;
}

cudaError_t launch_embed_mux_fwd(const EmbedMuxArgs& a, cudaStream_t stream) {
  if (!embed_mux_fwd_supported(a)) return cudaErrorInvalidValue;
  return dispatch_path(a, [&](auto tag, auto vec) {
    return launch<decltype(tag), decltype(vec)::value>(a, stream);
  });
}

}  // namespace muxkernels
