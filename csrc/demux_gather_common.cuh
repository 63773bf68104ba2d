// Pieces shared by the demux gather forward and backward kernels (CUDA headers only):
// which rows a gather visits, and the forward computation of one row, z = a + c, then
// x = gelu(z) - mean, with 1 / sqrt(var + eps).
#pragma once

#include <cstdint>

#include "demux_gather_fwd.h"
#include "device_utils.cuh"

namespace muxkernels {
namespace detail {

// The rows (g, tt) of a gather, tt in [0, t_out): row tt reads c[g, t0 + tt]. Token and
// selected gathers visit every position (t0 = 0, t_out = len); the sequence gather one
// (t0 = sequence_position, t_out = 1).
struct GatherRows {
  int64_t t0;
  int64_t t_out;
};

inline GatherRows gather_rows(const DemuxGatherArgs& args) {
  if (args.gather == Gather::kSequence) return GatherRows{args.sequence_position, 1};
  return GatherRows{0, args.len};
}

// z = a[a_row + k] + c[k] over this thread's packs of the row (0 for the packs past its
// end), with c a row held in registers (ITEMS packs).
template <typename T, int VEC, int ITEMS>
__device__ __forceinline__ void add_row(const DeviceParam& a, int64_t a_row,
                                        const float (&c)[ITEMS][VEC], int64_t packs,
                                        float (&z)[ITEMS][VEC]) {
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    if (pack_of(j) < packs) {
      load_param<T, VEC>(a, a_row + pack_of(j) * VEC, z[j]);
#pragma unroll
      for (int e = 0; e < VEC; ++e) z[j][e] += c[j][e];
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) z[j][e] = 0.0f;
    }
  }
}

// The same, with c read from element `c_row` of c, in the data's dtype T or float32 (L1-
// resident when a kernel reads it often); packs at or past c_packs read c as 0.
template <typename T, int VEC, int ITEMS>
__device__ __forceinline__ void add_row(const DeviceParam& a, int64_t a_row, const DeviceParam& c,
                                        int64_t c_row, int64_t packs, int64_t c_packs,
                                        float (&z)[ITEMS][VEC]) {
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    if (pack_of(j) < packs) {
      load_param<T, VEC>(a, a_row + pack_of(j) * VEC, z[j]);
      if (pack_of(j) < c_packs) {
        float cv[VEC];
        load_param<T, VEC>(c, c_row + pack_of(j) * VEC, cv);
#pragma unroll
        for (int e = 0; e < VEC; ++e) z[j][e] += cv[e];
      }
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) z[j][e] = 0.0f;
    }
  }
}

// x <- gelu(x) - mean(gelu(x)) over the valid packs of the row (0 elsewhere); returns
// 1 / sqrt(var + eps), with inv_d = 1 / d. The threads of the row call it together.
template <int VEC, int ITEMS>
__device__ __forceinline__ float centered_gelu(float (&x)[ITEMS][VEC], int64_t packs,
                                               float inv_d, float eps, float* red) {
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) x[j][e] = pack_of(j) < packs ? gelu(x[j][e]) : 0.0f;
  }
  return center_row(x, packs, inv_d, eps, red);
}

// Loads row `row` (d elements of T, VEC-aligned on the vector path) into x, 0 for the
// packs past the end.
template <typename T, int VEC, int ITEMS, typename Acc>
__device__ __forceinline__ void load_row(const StorageOf<T>* __restrict__ row, int64_t packs,
                                         Acc (&x)[ITEMS][VEC]) {
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    if (pack_of(j) < packs) {
      load_acc<T, VEC>(row + pack_of(j) * VEC, x[j]);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) x[j][e] = Acc(0);
    }
  }
}

// The same for a row of a tensor in the data's dtype T or float32 (c), starting at element
// `row` of `param`.
template <typename T, int VEC, int ITEMS>
__device__ __forceinline__ void load_row_param(const DeviceParam& param, int64_t row,
                                               int64_t packs, float (&x)[ITEMS][VEC]) {
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    if (pack_of(j) < packs) {
      load_param<T, VEC>(param, row + pack_of(j) * VEC, x[j]);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) x[j][e] = 0.0f;
    }
  }
}

}  // namespace detail
}  // namespace muxkernels
