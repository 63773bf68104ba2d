// Hadamard (vector) multiplex forward kernel. See hadamard_mux.h for the contract.
//
//   out[g, t, k] = (1 / n) * sum_i v[i, k] * E[g, i, t, k]
//
// Memory-bound: every element of E is read once and every output element is
// written once; v (n x d) is small and stays in L1/L2. Layout of the work:
//   * a "row" is one (g, t) pair; rows = groups * len, each one d elements long;
//   * a thread block is (tx, ty): ty rows at a time, tx threads along d, each
//     thread owning one "unit" of VEC consecutive elements (16 bytes of E);
//   * grid.x strides over rows and grid.y over slabs of d (both grid-stride
//     loops, so any size fits the grid limits);
//   * a thread walks the n instances kUnroll at a time, loads of a chunk written
//     ahead of its multiply-adds (memory-level parallelism; ptxas may interleave
//     them with the previous chunk), accumulating in fp32 (fp64 for double).
// Only CUDA headers are included here (no torch/ATen).

#include "hadamard_mux.h"

#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

#include "device_utils.cuh"

namespace muxkernels {
namespace {

using detail::BFloat16;
using detail::ceil_div;
using detail::Elem;
using detail::Half;
using detail::is_aligned;
using detail::kVectorBytes;
using detail::Pack;

constexpr int kThreadsPerBlock = 256;
// Blocks per SM that __launch_bounds__ asks for: 2 caps a thread at 128 registers, room for
// its kUnroll packs of E and v in flight. With the block size alone ptxas held some
// instantiations (bf16 with packed v, float64 with float32 v) at 64 registers and spilled.
constexpr int kMinBlocksPerSM = 2;
// Instances whose loads are in flight together: 4 x 16 bytes on the vector
// path, 8 elements on the element-wise one.
template <int VEC>
constexpr int kUnroll = VEC == 1 ? 8 : 4;
constexpr int64_t kMaxGridX = 2147483647;  // 2^31 - 1
constexpr int64_t kMaxGridY = 65535;

// Loads a pack at p: one vector load when PACKED (p aligned to the pack), else
// element by element.
template <typename S, int VEC, bool PACKED>
__device__ __forceinline__ Pack<S, VEC> load_pack(const S* __restrict__ p) {
  if constexpr (PACKED) {
    return *reinterpret_cast<const Pack<S, VEC>*>(p);
  } else {
    Pack<S, VEC> r;
#pragma unroll
    for (int j = 0; j < VEC; ++j) r.x[j] = p[j];
    return r;
  }
}

// ---------------------------------------------------------------------------
// Kernel. T: element type of E and out; VT: element type of v; VEC: elements
// per unit (1 on the element-wise path); V_PACKED: whether v may be read in
// packs (E and out always are when VEC > 1).
// ---------------------------------------------------------------------------
template <typename T, typename VT, int VEC, bool V_PACKED>
__global__ void __launch_bounds__(kThreadsPerBlock, kMinBlocksPerSM)
    hadamard_mux_fwd_kernel(const typename Elem<T>::Storage* __restrict__ E,
                            const typename Elem<VT>::Storage* __restrict__ v,
                            typename Elem<T>::Storage* __restrict__ out, int64_t rows,
                            int64_t n, int64_t len, int64_t d) {
  using ES = typename Elem<T>::Storage;
  using VS = typename Elem<VT>::Storage;
  using Acc = typename Elem<T>::Acc;
  using EPack = Pack<ES, VEC>;
  using VPack = Pack<VS, VEC>;

  const int64_t units = d / VEC;          // VEC divides d on the vector path
  const int64_t instance_stride = len * d;  // E[g, i+1, t] - E[g, i, t]
  const Acc n_acc = static_cast<Acc>(n);

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const int64_t g = row / len;
    const int64_t t = row - g * len;
    const ES* __restrict__ e_row = E + (g * n * len + t) * d;  // E[g, 0, t, :]
    ES* __restrict__ o_row = out + row * d;                   // out[g, t, :]

    for (int64_t u = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; u < units;
         u += static_cast<int64_t>(gridDim.y) * blockDim.x) {
      const int64_t k = u * VEC;
      Acc acc[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) acc[j] = Acc(0);

      const ES* __restrict__ e_ptr = e_row + k;  // E[g, i, t, k]
      const VS* __restrict__ v_ptr = v + k;      // v[i, k]
      // Summation order is i = 0, 1, ..., n-1 for every element. Full chunks of
      // kUnroll instances load everything first, then multiply-add.
      int64_t i = 0;
      for (; i + kUnroll<VEC> <= n; i += kUnroll<VEC>) {
        EPack ep[kUnroll<VEC>];
        VPack vp[kUnroll<VEC>];
#pragma unroll
        for (int r = 0; r < kUnroll<VEC>; ++r) {
          ep[r] = load_pack<ES, VEC, true>(e_ptr);
          vp[r] = load_pack<VS, VEC, V_PACKED>(v_ptr);
          e_ptr += instance_stride;
          v_ptr += d;
        }
#pragma unroll
        for (int r = 0; r < kUnroll<VEC>; ++r) {
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            acc[j] += static_cast<Acc>(Elem<VT>::to_acc(vp[r].x[j])) *
                      static_cast<Acc>(Elem<T>::to_acc(ep[r].x[j]));
          }
        }
      }
#pragma unroll 1
      for (; i < n; ++i) {
        const EPack ep = load_pack<ES, VEC, true>(e_ptr);
        const VPack vp = load_pack<VS, VEC, V_PACKED>(v_ptr);
        e_ptr += instance_stride;
        v_ptr += d;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          acc[j] += static_cast<Acc>(Elem<VT>::to_acc(vp.x[j])) *
                    static_cast<Acc>(Elem<T>::to_acc(ep.x[j]));
        }
      }

      EPack o;
#pragma unroll
      for (int j = 0; j < VEC; ++j) o.x[j] = Elem<T>::from_acc(acc[j] / n_acc);
      *reinterpret_cast<EPack*>(o_row + k) = o;
    }
  }
}

template <typename T, typename VT, int VEC, bool V_PACKED>
cudaError_t launch(const void* E, const void* v, void* out, int64_t groups, int64_t n,
                   int64_t len, int64_t d, cudaStream_t stream) {
  using ES = typename Elem<T>::Storage;
  using VS = typename Elem<VT>::Storage;
  const int64_t rows = groups * len;
  const int64_t units = d / VEC;

  // tx threads along d (a multiple of the warp size, at most a block), and as
  // many rows per block as fit in kThreadsPerBlock threads.
  int64_t tx = ceil_div(units, 32) * 32;
  if (tx > kThreadsPerBlock) tx = kThreadsPerBlock;
  int64_t ty = kThreadsPerBlock / tx;
  if (ty > rows) ty = rows;
  const int64_t gx = std::min<int64_t>(ceil_div(rows, ty), kMaxGridX);
  const int64_t gy = std::min<int64_t>(ceil_div(units, tx), kMaxGridY);

  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  const dim3 block(static_cast<unsigned>(tx), static_cast<unsigned>(ty));
  hadamard_mux_fwd_kernel<T, VT, VEC, V_PACKED><<<grid, block, 0, stream>>>(
      static_cast<const ES*>(E), static_cast<const VS*>(v), static_cast<ES*>(out), rows, n, len,
      d);
  return cudaGetLastError();
}

// Chooses the vector path (16-byte units) or the element-wise path.
template <typename T, typename VT>
cudaError_t dispatch_path(const void* E, const void* v, void* out, int64_t groups, int64_t n,
                          int64_t len, int64_t d, cudaStream_t stream) {
  using ES = typename Elem<T>::Storage;
  using VS = typename Elem<VT>::Storage;
  constexpr int kVec = kVectorBytes / static_cast<int>(sizeof(ES));
  static_assert(kVec >= 1 && kVec * sizeof(ES) == kVectorBytes, "bad vector width");

  const bool vector_ok = d % kVec == 0 && is_aligned(E, kVectorBytes) &&
                         is_aligned(out, kVectorBytes);
  if (vector_ok) {
    // d % kVec == 0 keeps every row of v aligned once its base is.
    if (is_aligned(v, static_cast<int64_t>(kVec * sizeof(VS)))) {
      return launch<T, VT, kVec, true>(E, v, out, groups, n, len, d, stream);
    }
    return launch<T, VT, kVec, false>(E, v, out, groups, n, len, d, stream);
  }
  return launch<T, VT, 1, false>(E, v, out, groups, n, len, d, stream);
}

}  // namespace

bool hadamard_mux_fwd_supported(DType e_dtype, DType v_dtype) {
  return v_dtype == e_dtype || v_dtype == DType::kFloat32;
}

cudaError_t launch_hadamard_mux_fwd(const void* E, const void* v, void* out, int64_t groups,
                                    int64_t n, int64_t len, int64_t d, DType e_dtype,
                                    DType v_dtype, cudaStream_t stream) {
  if (n < 1 || groups < 0 || len < 0 || d < 0) return cudaErrorInvalidValue;
  if (!hadamard_mux_fwd_supported(e_dtype, v_dtype)) return cudaErrorInvalidValue;
  if (groups == 0 || len == 0 || d == 0) return cudaSuccess;

  const bool v_f32 = v_dtype == DType::kFloat32;
  switch (e_dtype) {
    case DType::kFloat16:
      return v_f32 ? dispatch_path<Half, float>(E, v, out, groups, n, len, d, stream)
                   : dispatch_path<Half, Half>(E, v, out, groups, n, len, d, stream);
    case DType::kBFloat16:
      return v_f32 ? dispatch_path<BFloat16, float>(E, v, out, groups, n, len, d, stream)
                   : dispatch_path<BFloat16, BFloat16>(E, v, out, groups, n, len, d, stream);
    case DType::kFloat32:
      return dispatch_path<float, float>(E, v, out, groups, n, len, d, stream);
    case DType::kFloat64:
      return v_f32 ? dispatch_path<double, float>(E, v, out, groups, n, len, d, stream)
                   : dispatch_path<double, double>(E, v, out, groups, n, len, d, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace muxkernels
