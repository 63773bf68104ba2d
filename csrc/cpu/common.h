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

namespace muxkernels::cpu {

// Fails, naming the argument, unless t is a contiguous CPU tensor of `dtype` and `rank`.
void check_float_tensor(const char* op, const char* name, const at::Tensor& t,
                        at::ScalarType dtype, int64_t rank);

}  // namespace muxkernels::cpu
