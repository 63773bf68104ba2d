// Types shared by the launchers of every kernel in csrc/, for plain C++ callers.
//
// Like the launcher headers, this header includes only CUDA runtime headers,
// never torch/ATen, so that the kernel files compile fast and anywhere nvcc is
// installed.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace muxkernels {

// Element types understood by the launchers. The numeric values are private to
// this library (they are not torch's ScalarType codes); csrc/bindings/ maps them.
enum class DType : int32_t {
  kFloat16 = 0,
  kBFloat16 = 1,
  kFloat32 = 2,
  kFloat64 = 3,
};

// A read-only device array holding a small operand of a kernel (transform vectors,
// LayerNorm affine parameters, the per-instance term of the demux), in the data's dtype
// or float32. Kernels convert its elements to their accumulation type as they load.
struct Param {
  const void* data;
  DType dtype;
};

// Whether a parameter of dtype `param` may accompany data of dtype `data`: it has the
// data's dtype or is float32.
inline bool param_dtype_ok(DType data, DType param) {
  return param == data || param == DType::kFloat32;
}

}  // namespace muxkernels
