// Hadamard (vector) multiplex backward kernel. See hadamard_mux_bwd.h for the contract.
//
//   dE[g, i, t, k]   = v[i, k] * dx[g, t, k] / n
//   partial[c, i, k] = sum_{(g, t) in chunk c} E[g, i, t, k] * dx[g, t, k]
//
// Memory-bound: dE is written once and E read once (when partial is asked for). Layout:
//   * block (c, i) of grid.x handles instance i over the rows of chunk c, i fastest, so
//     the n blocks of one chunk run together and read that chunk's dx from L2;
//   * a block is (tx, ty): tx threads along d, each owning one "unit" of VEC elements
//     (16 bytes of data), ty threads striding over the rows of the chunk; grid.y strides
//     over slabs of d;
//   * each thread loads v[i] once, then for kRowUnroll rows at a time issues every load
//     before its stores; its dv partial stays in registers and the ty partials of a
//     column are summed in shared memory in a fixed order, then written to `partial`.
// Only CUDA headers are included here (no torch/ATen).

#include "hadamard_mux_bwd.h"

#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

#include "device_utils.cuh"

namespace muxkernels {
namespace {

using detail::AccOf;
using detail::ceil_div;
using detail::is_aligned;
using detail::kVectorBytes;
using detail::load_acc;
using detail::DeviceParam;
using detail::StorageOf;
using detail::store_acc;

constexpr int kThreadsPerBlock = 256;
// Blocks per SM for __launch_bounds__: a 128-register cap (the block size alone let ptxas
// hold the float64 instantiation at 64 registers, with spills).
constexpr int kMinBlocksPerSM = 2;
constexpr int kRowUnroll = 4;              // rows whose loads are in flight together
constexpr int64_t kMinRowsPerChunk = 32;   // keeps the partial buffer small
constexpr int64_t kTargetBlocks = 2048;    // blocks of grid.x to aim for
constexpr int64_t kMaxGridY = 65535;

template <typename T, int VEC, bool WANT_DV>
__global__ void __launch_bounds__(kThreadsPerBlock, kMinBlocksPerSM)
    hadamard_mux_bwd_kernel(const StorageOf<T>* __restrict__ dx,
                            const StorageOf<T>* __restrict__ E, const DeviceParam v,
                            StorageOf<T>* __restrict__ dE, AccOf<T>* __restrict__ partial,
                            int64_t rows, int64_t n, int64_t len, int64_t d,
                            int64_t rows_per_chunk) {
  using Acc = AccOf<T>;
  __shared__ Acc red[kThreadsPerBlock * VEC];

  const int64_t i = blockIdx.x % n;
  const int64_t chunk = blockIdx.x / n;
  const int64_t row_begin = chunk * rows_per_chunk;
  const int64_t row_end = rows < row_begin + rows_per_chunk ? rows : row_begin + rows_per_chunk;
  const int64_t units = d / VEC;  // VEC divides d on the vector path
  const Acc inv_n = Acc(1) / static_cast<Acc>(n);

  // Uniform over the block: every thread takes part in the shared-memory sums.
  for (int64_t slab = static_cast<int64_t>(blockIdx.y) * blockDim.x; slab < units;
       slab += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const int64_t u = slab + threadIdx.x;
    const bool active = u < units;
    const int64_t k = u * VEC;
    Acc acc[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j] = Acc(0);

    if (active) {
      Acc scale[VEC];  // v[i, k] / n
      detail::load_param<T, VEC>(v, i * d + k, scale);
#pragma unroll
      for (int j = 0; j < VEC; ++j) scale[j] *= inv_n;

      const int64_t step = blockDim.y;
      for (int64_t row0 = row_begin + threadIdx.y; row0 < row_end; row0 += step * kRowUnroll) {
        Acc dxv[kRowUnroll][VEC];
        Acc ev[kRowUnroll][VEC];
        int64_t offset[kRowUnroll];  // of E[g, i, t, k] and dE[g, i, t, k]
#pragma unroll
        for (int r = 0; r < kRowUnroll; ++r) {
          const int64_t row = row0 + r * step;
          if (row < row_end) {
            const int64_t g = row / len;
            offset[r] = ((g * n + i) * len + (row - g * len)) * d + k;
            load_acc<T, VEC>(dx + row * d + k, dxv[r]);
            if constexpr (WANT_DV) load_acc<T, VEC>(E + offset[r], ev[r]);
          }
        }
#pragma unroll
        for (int r = 0; r < kRowUnroll; ++r) {
          if (row0 + r * step < row_end) {
            Acc out[VEC];
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
              out[j] = scale[j] * dxv[r][j];
              if constexpr (WANT_DV) acc[j] += ev[r][j] * dxv[r][j];
            }
            store_acc<T, VEC>(dE + offset[r], out);
          }
        }
      }
    }

    if constexpr (WANT_DV) {
      Acc* mine = red + (threadIdx.y * blockDim.x + threadIdx.x) * VEC;
#pragma unroll
      for (int j = 0; j < VEC; ++j) mine[j] = acc[j];
      __syncthreads();
      if (threadIdx.y == 0 && active) {
        Acc sum[VEC];
#pragma unroll
        for (int j = 0; j < VEC; ++j) sum[j] = Acc(0);
        for (unsigned y = 0; y < blockDim.y; ++y) {
          const Acc* theirs = red + (y * blockDim.x + threadIdx.x) * VEC;
#pragma unroll
          for (int j = 0; j < VEC; ++j) sum[j] += theirs[j];
        }
        store_acc<Acc, VEC>(partial + (chunk * n + i) * d + k, sum);  // 16-byte stores
      }
      __syncthreads();
    }
  }
}

template <typename T, int VEC>
cudaError_t launch(const void* grad_out, const void* E, DeviceParam v, void* dE, void* partial,
                   int64_t groups, int64_t n, int64_t len, int64_t d, cudaStream_t stream) {
  using S = StorageOf<T>;
  const int64_t rows = groups * len;
  const int64_t units = d / VEC;
  const int64_t chunks = hadamard_mux_bwd_chunks(rows, n);
  const int64_t rows_per_chunk = ceil_div(rows, chunks);

  int64_t tx = std::min<int64_t>(ceil_div(units, 32) * 32, kThreadsPerBlock);
  int64_t ty = std::min<int64_t>(kThreadsPerBlock / tx, rows_per_chunk);
  const int64_t gy = std::min<int64_t>(ceil_div(units, tx), kMaxGridY);
  const dim3 grid(static_cast<unsigned>(chunks * n), static_cast<unsigned>(gy));
  const dim3 block(static_cast<unsigned>(tx), static_cast<unsigned>(ty));
  const auto* dx_p = static_cast<const S*>(grad_out);
  const auto* e_p = static_cast<const S*>(E);
  auto* de_p = static_cast<S*>(dE);
  auto* partial_p = static_cast<AccOf<T>*>(partial);
  if (partial != nullptr) {
    hadamard_mux_bwd_kernel<T, VEC, true><<<grid, block, 0, stream>>>(
        dx_p, e_p, v, de_p, partial_p, rows, n, len, d, rows_per_chunk);
  } else {
    hadamard_mux_bwd_kernel<T, VEC, false><<<grid, block, 0, stream>>>(
        dx_p, e_p, v, de_p, partial_p, rows, n, len, d, rows_per_chunk);
  }
  return cudaGetLastError();
}

}  // namespace

bool hadamard_mux_bwd_supported(DType dtype, DType v_dtype) {
  return param_dtype_ok(dtype, v_dtype);
}

int64_t hadamard_mux_bwd_chunks(int64_t rows, int64_t n) {
  const int64_t by_rows = ceil_div(rows, kMinRowsPerChunk);
  const int64_t by_blocks = std::max<int64_t>(1, kTargetBlocks / std::max<int64_t>(n, 1));
  return std::max<int64_t>(1, std::min(by_rows, by_blocks));
}

cudaError_t launch_hadamard_mux_bwd(const void* grad_out, const void* E, Param v,
                                    void* dE, void* partial, int64_t groups, int64_t n,
                                    int64_t len, int64_t d, DType dtype, cudaStream_t stream) {
  if (groups < 1 || n < 1 || len < 1 || d < 1) return cudaErrorInvalidValue;
  if (!hadamard_mux_bwd_supported(dtype, v.dtype)) return cudaErrorInvalidValue;
  return detail::dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = detail::kVecOf<T>;
    const bool vector_ok = d % kVec == 0 && is_aligned(grad_out, kVectorBytes) &&
                           is_aligned(E, kVectorBytes) && is_aligned(dE, kVectorBytes) &&
                           detail::params_aligned<kVec>({v});
    return detail::dispatch_vec<T>(vector_ok, [&](auto vec) {
      constexpr int VEC = decltype(vec)::value;
      return launch<T, VEC>(grad_out, E, detail::make_param(v), dE, partial, groups,
                            n, len, d, stream);
    });
  });
}

}  // namespace muxkernels
