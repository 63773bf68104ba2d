// What the cpu kernels (csrc/cpu/) share: how their float32 row loops are compiled, and the
// argument check of their floating tensors.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

// The float32 row loops are compiled twice on x86-64 with GCC, for AVX2+FMA and for the
// baseline, and the clone is picked at load time ("arch=haswell" fell back to the baseline
// clone on an AMD EPYC; "arch=x86-64-v3" does not).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 12
#define MUX_ROW_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MUX_ROW_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MUX_ROW_CLONES
#endif
#define MUX_INLINE inline __attribute__((always_inline))

#include <algorithm>
#include <vector>

namespace muxkernels::cpu {

// The sizes of the multiplexers' data E (B', N, L, d).
struct MuxSizes {
  int64_t groups;  // B'
  int64_t n;       // N
  int64_t length;  // L
  int64_t d;
};

// out[k] = Σ_c partials[c·stride + offset + k] for k < width: per-chunk partial sums added
// in chunk order, so a reduction does not depend on the number of threads.
template <typename T>
void sum_partials(const std::vector<T>& partials, int64_t chunks, int64_t stride,
                  int64_t offset, int64_t width, T* out) {
  std::copy_n(partials.data() + offset, width, out);
  for (int64_t c = 1; c < chunks; ++c) {
    const T* part = partials.data() + c * stride + offset;
    for (int64_t k = 0; k < width; ++k) out[k] += part[k];
  }
}

// Fails, naming the argument, unless t is a CPU tensor of `dtype`.
void check_cpu_dtype(const char* op, const char* name, const at::Tensor& t,
                     at::ScalarType dtype);

// Fails, naming the argument, unless t is a contiguous CPU tensor of `dtype` and `rank`.
void check_float_tensor(const char* op, const char* name, const at::Tensor& t,
                        at::ScalarType dtype, int64_t rank);

}  // namespace muxkernels::cpu
