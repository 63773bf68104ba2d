// Device-side building blocks shared by the kernel files of csrc/ (CUDA headers only, no
// torch/ATen): element traits, 16-byte packs, parameters in the data's dtype or float32,
// gelu, row reductions and LayerNorm statistics, the row layout of the LayerNorm kernels,
// and the dispatch helpers that turn run-time choices into template arguments.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common.h"

namespace muxkernels {
namespace detail {

constexpr int kVectorBytes = 16;  // width of the vector loads and stores

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool is_aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

inline int64_t dtype_size(DType t) {
  return t == DType::kFloat64 ? 8 : t == DType::kFloat32 ? 4 : 2;
}

// ---------------------------------------------------------------------------
// Element traits: how an element is stored and converted to and from the
// accumulator (fp32, or fp64 for double). Half types are stored as raw 16-bit
// words so that packs of them are trivially copyable.
// ---------------------------------------------------------------------------
struct Half {};
struct BFloat16 {};

template <typename T>
struct Elem;

template <>
struct Elem<float> {
  using Storage = float;
  using Acc = float;
  __device__ __forceinline__ static float to_acc(Storage x) { return x; }
  __device__ __forceinline__ static Storage from_acc(float a) { return a; }
};

template <>
struct Elem<double> {
  using Storage = double;
  using Acc = double;
  __device__ __forceinline__ static double to_acc(Storage x) { return x; }
  __device__ __forceinline__ static Storage from_acc(double a) { return a; }
};

template <>
struct Elem<Half> {
  using Storage = unsigned short;
  using Acc = float;
  __device__ __forceinline__ static float to_acc(Storage x) {
    return __half2float(__ushort_as_half(x));
  }
  __device__ __forceinline__ static Storage from_acc(float a) {
    return __half_as_ushort(__float2half_rn(a));
  }
};

template <>
struct Elem<BFloat16> {
  using Storage = unsigned short;
  using Acc = float;
  __device__ __forceinline__ static float to_acc(Storage x) {
    return __bfloat162float(__ushort_as_bfloat16(x));
  }
  __device__ __forceinline__ static Storage from_acc(float a) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(a));
  }
};

template <typename T>
using StorageOf = typename Elem<T>::Storage;
template <typename T>
using AccOf = typename Elem<T>::Acc;

// Elements of T in one 16-byte vector.
template <typename T>
constexpr int kVecOf = kVectorBytes / static_cast<int>(sizeof(StorageOf<T>));

// VEC consecutive elements, aligned to their total size so that a load or a
// store of a whole pack is one (or, beyond 16 bytes, several) vector
// instruction(s).
template <typename S, int VEC>
struct alignas(sizeof(S) * VEC) Pack {
  S x[VEC];
};

// Loads VEC elements of T at p (aligned to the pack when VEC > 1) as Acc.
template <typename T, int VEC, typename Acc>
__device__ __forceinline__ void load_acc(const StorageOf<T>* __restrict__ p, Acc* out) {
  const Pack<StorageOf<T>, VEC> pack = *reinterpret_cast<const Pack<StorageOf<T>, VEC>*>(p);
#pragma unroll
  for (int j = 0; j < VEC; ++j) out[j] = static_cast<Acc>(Elem<T>::to_acc(pack.x[j]));
}

// Rounds VEC accumulators to T and stores them at p (aligned to the pack when
// VEC > 1). STREAMING marks 16-byte stores evict-first (data not read again).
template <typename T, int VEC, bool STREAMING = false, typename Acc>
__device__ __forceinline__ void store_acc(StorageOf<T>* __restrict__ p, const Acc* in) {
  using P = Pack<StorageOf<T>, VEC>;
  P pack;
#pragma unroll
  for (int j = 0; j < VEC; ++j) pack.x[j] = Elem<T>::from_acc(in[j]);
  if constexpr (STREAMING && sizeof(P) == 16) {
    uint4 bits;
    memcpy(&bits, &pack, sizeof(bits));
    __stcs(reinterpret_cast<uint4*>(p), bits);
  } else {
    *reinterpret_cast<P*>(p) = pack;
  }
}

// ---------------------------------------------------------------------------
// Parameters: small read-only arrays in the data's dtype T or in float32, chosen
// at run time (a uniform branch between two pack loads). On the vector path
// (VEC > 1) the launchers make sure that packs of every parameter are aligned
// (params_aligned), so that a pack is one load, with no element-wise fallback
// taking issue slots.
// ---------------------------------------------------------------------------
struct DeviceParam {
  const void* data;
  bool f32;
};

inline DeviceParam make_param(Param p) { return DeviceParam{p.data, p.dtype == DType::kFloat32}; }

// A writable array in the data's dtype T or in float32, chosen at run time (dc: the
// gradient of c has c's dtype).
struct DeviceOut {
  void* data;
  bool f32;
};

// Stores VEC accumulators at out[offset ...] in out's dtype; T is the data's type.
template <typename T, int VEC, typename Acc>
__device__ __forceinline__ void store_param(const DeviceOut& out, int64_t offset, const Acc* in) {
  if (std::is_same<T, float>::value || out.f32) {
    store_acc<float, VEC>(static_cast<float*>(out.data) + offset, in);
  } else {
    store_acc<T, VEC>(static_cast<StorageOf<T>*>(out.data) + offset, in);
  }
}

// Whether VEC-element packs of every parameter are aligned (with d a multiple of VEC, the
// packs of each row then are).
template <int VEC>
inline bool params_aligned(std::initializer_list<Param> params) {
  for (const Param& p : params) {
    if (!is_aligned(p.data, VEC * dtype_size(p.dtype))) return false;
  }
  return true;
}

// out[j] = param[offset + j] for j < VEC, converted to Acc; T is the data's type.
template <typename T, int VEC, typename Acc>
__device__ __forceinline__ void load_param(const DeviceParam& param, int64_t offset, Acc* out) {
  if (std::is_same<T, float>::value || param.f32) {
    load_acc<float, VEC>(static_cast<const float*>(param.data) + offset, out);
  } else {
    load_acc<T, VEC>(static_cast<const StorageOf<T>*>(param.data) + offset, out);
  }
}

// ---------------------------------------------------------------------------
// Math
// ---------------------------------------------------------------------------

// 2^x for x >= -126 (no denormal handling, unlike exp2f): one MUFU.EX2, ~2 ulp.
__device__ __forceinline__ float exp2_approx(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}

// The exact (erf) gelu, x * Phi(x), evaluated as max(x, 0) - |x| * Q(|x|) with
// Q(u) = Phi(-u) = 0.5 * erfc(u / sqrt(2)) = 2^p(u): p is a degree-6 polynomial fit of
// log2 Q on [0, 6] minimising the error of |x| * Q(|x|), decreasing from -1 to -29.9
// (beyond 6, |x| Q(|x|) < 1e-8 |x|). Absolute error < 3e-7, relative < 4e-5 where
// |gelu| > 1e-3: as accurate as PyTorch's float32 gelu (x * 0.5 * (1 + erff(x / sqrt(2))),
// 4.5e-7 and 5e-5), in 11 instructions instead of about 25, which matters in the demux
// forward, bound by arithmetic rather than memory.
__device__ __forceinline__ float gelu(float x) {
  const float u = fminf(fabsf(x), 6.0f);
  float p = 3.309283e-05f;
  p = fmaf(p, u, -7.692198e-04f);
  p = fmaf(p, u, 8.080717e-03f);
  p = fmaf(p, u, -5.3412106e-02f);
  p = fmaf(p, u, -4.5877096e-01f);
  p = fmaf(p, u, -1.1512017f);
  p = fmaf(p, u, -9.999931e-01f);
  return fmaxf(x, 0.0f) - fabsf(x) * exp2_approx(p);
}

// d gelu / dx = Phi(x) + x * phi(x), with phi the standard normal density.
__device__ __forceinline__ float gelu_grad(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
  const float pdf = expf(-0.5f * x * x) * 0.39894228040143267794f;
  return cdf + x * pdf;
}

// ---------------------------------------------------------------------------
// Row reductions. A "row" (one LayerNorm) is held by the blockDim.x threads of
// one threadIdx.y; when blockDim.x is 32 the row is one warp and the sum needs
// no shared memory, otherwise the warps of the row meet in `red` (32 * K
// values per row) and every thread of the block must take part. The order of
// the additions is fixed, and every thread of the row gets the same result.
// ---------------------------------------------------------------------------
template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc v) {
#pragma unroll
  for (int mask = 16; mask >= 1; mask >>= 1) v += __shfl_xor_sync(0xffffffffu, v, mask);
  return v;
}

// v[k] <- sum of v[k] over the threads of the row, for k < K.
template <int K, typename Acc>
__device__ __forceinline__ void row_sum(Acc (&v)[K], Acc* red) {
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = warp_sum(v[k]);
  if (blockDim.x == 32) return;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int warps = static_cast<int>(blockDim.x) >> 5;
  Acc* mine = red + threadIdx.y * 32 * K;
  if ((threadIdx.x & 31) == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) mine[k * 32 + warp] = v[k];
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) {
    Acc s = Acc(0);
    for (int w = 0; w < warps; ++w) s += mine[k * 32 + w];
    v[k] = s;
  }
  __syncthreads();
}

// ---------------------------------------------------------------------------
// Row layout of the LayerNorm kernels: a row of d elements is `packs` packs of
// VEC elements; thread x of the row owns packs x, x + threads, ..., ITEMS of
// them (ITEMS a template argument, so that they live in registers).
// ---------------------------------------------------------------------------
struct RowLayout {
  int threads;  // per row, a multiple of 32
  int items;    // packs per thread: 1, 2, 3, 4 or 8
};

// The register budget of a row kernel instantiated for VEC-element packs: a thread holds
// at most kElements elements of each row array and a block at most kThreads threads, so
// rows of up to kMaxRow elements fit (longer ones are not the kernel's: its launcher says
// so, and the binding computes them with ATen ops). The kernel chooses the numbers by how
// many row arrays it keeps: VEC_ELEMENTS and VEC_THREADS on the vector path, ELEMENTWISE_
// ELEMENTS and ELEMENTWISE_THREADS on the element-wise one (VEC = 1), where every element
// has addresses of its own. kMinBlocks blocks of kThreads leave 128 registers a thread
// (64 at 1024 threads).
template <int VEC, int VEC_ELEMENTS, int VEC_THREADS, int ELEMENTWISE_ELEMENTS,
          int ELEMENTWISE_THREADS>
struct RowPolicy {
  static constexpr int kElements = VEC == 1 ? ELEMENTWISE_ELEMENTS : VEC_ELEMENTS;
  static constexpr int kThreads = VEC == 1 ? ELEMENTWISE_THREADS : VEC_THREADS;
  static constexpr int kMinBlocks = kThreads <= 256 ? 2 : 1;
  static constexpr int64_t kMaxRow = static_cast<int64_t>(kElements) * kThreads;
  // Packs a thread of a short row takes before a row is spread over more warps.
  static constexpr int kMaxItems = kElements / VEC < 4 ? kElements / VEC : 4;
  static_assert(kThreads <= 1024 && kElements % VEC == 0, "a row must fit in one block");
};

// The row layout of a kernel under POLICY (a RowPolicy) for rows of `packs` packs: the
// fewest warps that keep the packs per thread <= max_items, then the packs per thread,
// rounded up to one the kernels are instantiated for (dispatch_items). Returns false when
// the row does not fit the policy.
template <typename POLICY, int VEC>
inline bool choose_row_layout(int64_t packs, int max_items, RowLayout* layout) {
  const int64_t max_warps = POLICY::kThreads / 32;
  int64_t warps = ceil_div(packs, 32 * static_cast<int64_t>(max_items));
  warps = warps < 1 ? 1 : (warps > max_warps ? max_warps : warps);
  int64_t items = ceil_div(packs, 32 * warps);
  if (items > 4) items = 8;
  if (items * VEC > POLICY::kElements || items * 32 * warps < packs) return false;
  layout->threads = static_cast<int>(32 * warps);
  layout->items = static_cast<int>(items);
  return true;
}

// Pack j of this thread: threadIdx.x + j * blockDim.x. A 32-bit index inside one row (rows
// are at most 65536 elements): row base pointers are 64-bit, offsets within a row are not,
// so that a thread's per-pack addresses need no 64-bit registers.
__device__ __forceinline__ int pack_of(int j) {
  return static_cast<int>(threadIdx.x) + j * static_cast<int>(blockDim.x);
}

// The LayerNorm statistics of a row in registers, two-pass: x <- x - mean over the valid
// packs (the others hold 0 and keep it); returns 1 / sqrt(var + eps), with inv_d = 1 / d.
// The threads of the row call it together (row_sum).
template <int VEC, int ITEMS>
__device__ __forceinline__ float center_row(float (&x)[ITEMS][VEC], int64_t packs, float inv_d,
                                            float eps, float* red) {
  float s[1] = {0.0f};
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) s[0] += x[j][e];  // invalid packs hold 0
  }
  row_sum(s, red);
  const float mean = s[0] * inv_d;
  float q[1] = {0.0f};
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    if (pack_of(j) < packs) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        x[j][e] -= mean;
        q[0] += x[j][e] * x[j][e];
      }
    }
  }
  row_sum(q, red);
  return rsqrtf(q[0] * inv_d + eps);
}

// ---------------------------------------------------------------------------
// Dispatch: run-time choices to template arguments. Each takes a callable
// receiving a tag (an element type, or std::integral_constant). The LayerNorm
// kernels leave float64 out (dispatch_dtype<false>): the bindings (csrc/bindings/) run
// float64 through ATen ops instead, which keeps the build short.
// ---------------------------------------------------------------------------
template <bool WITH_DOUBLE = true, typename F>
cudaError_t dispatch_dtype(DType t, F&& f) {
  switch (t) {
    case DType::kFloat16:
      return f(Half{});
    case DType::kBFloat16:
      return f(BFloat16{});
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat64:
      if constexpr (WITH_DOUBLE) return f(double{});
      break;
  }
  return cudaErrorInvalidValue;
}

// Packs per thread (ITEMS) of a kernel under POLICY (a RowPolicy) with VEC-element packs:
// 1, 2, 3, 4 or 8, but only those within POLICY::kElements elements a thread, so that no
// instantiation needs more registers than its launch bounds give (one is never compiled
// that the policy rules out). Any other count is cudaErrorInvalidValue.
template <int VEC, typename POLICY, typename F>
cudaError_t dispatch_items(int items, F&& f) {
  const auto fit = [&](auto tag) -> cudaError_t {
    if constexpr (VEC * decltype(tag)::value <= POLICY::kElements) {
      return f(tag);
    } else {
      return cudaErrorInvalidValue;
    }
  };
  switch (items) {
    case 1:
      return fit(std::integral_constant<int, 1>{});
    case 2:
      return fit(std::integral_constant<int, 2>{});
    case 3:
      return fit(std::integral_constant<int, 3>{});
    case 4:
      return fit(std::integral_constant<int, 4>{});
    case 8:
      return fit(std::integral_constant<int, 8>{});
    default:
      return cudaErrorInvalidValue;
  }
}

// The vector path (VEC = 16 bytes of T) when `vector_ok`, else VEC = 1. The
// launchers' vector_ok: d % VEC == 0, the data 16-byte aligned, and
// params_aligned<VEC>.
template <typename T, typename F>
cudaError_t dispatch_vec(bool vector_ok, F&& f) {
  if (vector_ok) return f(std::integral_constant<int, kVecOf<T>>{});
  return f(std::integral_constant<int, 1>{});
}

}  // namespace detail
}  // namespace muxkernels
