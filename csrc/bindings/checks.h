// Helpers shared by the operator bindings in csrc/bindings/: dtype mapping between torch
// and the launchers, the current stream, launch-error reporting, and the argument checks
// every operator makes before any work (each fails with one line naming the operator, the
// argument and what it got).
//
// Only the binding files include torch headers; the kernel files (csrc/*.cu) and their
// launcher headers include CUDA runtime headers alone.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "common.h"

namespace muxkernels {

inline bool is_kernel_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

inline DType to_kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kFloat:
      return DType::kFloat32;
    case at::kDouble:
      return DType::kFloat64;
    default:
      TORCH_CHECK(false, "muxkernels: no kernel for dtype ", t);
  }
}

// fp32 accumulation for 16- and 32-bit floats, fp64 for double.
inline at::ScalarType accumulate_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline Param kernel_param(const at::Tensor& t) {
  return Param{t.const_data_ptr(), to_kernel_dtype(t.scalar_type())};
}

inline void check_cuda_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "muxkernels::", op, ": kernel launch failed: ",
              cudaGetErrorString(err));
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Argument checks: `op` is the message prefix "muxkernels::<name>: ".
inline void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank,
                       const char* layout) {
  TORCH_CHECK(t.dim() == rank, op, name, " must have rank ", rank, " ", layout, ", got shape ",
              t.sizes());
}

inline void check_size(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                       int64_t expected, const char* what) {
  TORCH_CHECK(t.size(dim) == expected, op, name, ".size(", dim, ") must equal ", what, " (",
              expected, "), got shape ", t.sizes());
}

inline void check_data(const char* op, const char* name, const at::Tensor& t,
                       c10::DeviceType device_type) {
  TORCH_CHECK(is_kernel_float(t.scalar_type()), op, name,
              " must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.device().type() == device_type, op, name, " must be a ",
              c10::DeviceTypeName(device_type), " tensor here, got one on ", t.device());
  TORCH_CHECK(t.is_contiguous(), op, name, " must be contiguous, got shape ", t.sizes(),
              " and strides ", t.strides());
  TORCH_CHECK(t.numel() > 0, op, name, " must be non-empty, got shape ", t.sizes());
}

inline void check_same_device(const char* op, const char* name, const at::Tensor& t,
                              const char* data_name, const at::Tensor& data) {
  TORCH_CHECK(t.device() == data.device(), op, data_name, " and ", name,
              " must be on the same device, got ", data_name, " on ", data.device(), " and ",
              name, " on ", t.device());
}

inline void check_contiguous(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), op, name, " must be contiguous, got shape ", t.sizes(),
              " and strides ", t.strides());
}

// A parameter: the data's dtype or float32, on the data's device, contiguous.
inline void check_param(const char* op, const char* name, const at::Tensor& t,
                        const char* data_name, const at::Tensor& data) {
  TORCH_CHECK(t.scalar_type() == data.scalar_type() || t.scalar_type() == at::kFloat, op, name,
              " must have the dtype of ", data_name, " (", data.scalar_type(),
              ") or float32, got ", t.scalar_type());
  check_same_device(op, name, t, data_name, data);
  check_contiguous(op, name, t);
}

// Integer ids (or indices) on the data's device, contiguous; returned as int64.
inline at::Tensor check_ids(const char* op, const char* name, const at::Tensor& t,
                            const char* data_name, const at::Tensor& data) {
  TORCH_CHECK(at::isIntegralType(t.scalar_type(), /*includeBool=*/false), op, name,
              " must be an integer tensor, got ", t.scalar_type());
  check_same_device(op, name, t, data_name, data);
  check_contiguous(op, name, t);
  return t.to(at::kLong);
}

// On CPU only (a CUDA check would synchronize): every id lies in [0, limit), the rows of
// `what`.
inline void check_id_range(const char* op, const char* name, const at::Tensor& ids,
                           int64_t limit, const char* what) {
  if (ids.device().type() != c10::DeviceType::CPU || ids.numel() == 0) return;
  const int64_t lo = ids.min().item<int64_t>();
  const int64_t hi = ids.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < limit, op, name, " holds values in [", lo, ", ", hi,
              "] but must lie in [0, ", limit, "), the rows of ", what);
}

inline void check_eps(const char* op, double eps) {
  TORCH_CHECK(std::isfinite(eps) && eps > 0, op, "eps must be a positive float, got ", eps);
}

}  // namespace muxkernels
