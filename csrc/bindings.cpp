// PyTorch bindings of the CUDA kernels in csrc/: the muxkernels:: operators.
//
// This is the one translation unit that includes torch headers. Each operator
// has a schema in the TORCH_LIBRARY block, one argument-check helper shared by
// its implementations, a CPU implementation written with ATen ops, and a CUDA
// implementation that calls the plain C++ launcher of its kernel on the
// current stream. Fake (meta) implementations live in muxkernels/_extension.py.
//
// Importing the Python module muxkernels._C registers the operators; the
// module itself has no attributes.

#include <Python.h>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <cstdint>

#include "hadamard_mux.h"

namespace muxkernels {
namespace {

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

bool is_kernel_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

DType to_kernel_dtype(at::ScalarType t) {
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
at::ScalarType accumulate_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

void check_cuda_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "muxkernels::", op, ": kernel launch failed: ",
              cudaGetErrorString(err));
}

// ---------------------------------------------------------------------------
// hadamard_mux_fwd_cuda(Tensor embeddings, Tensor vectors) -> Tensor
//   embeddings: (B', N, L, d), vectors: (N, d) -> (B', L, d) in embeddings' dtype
//   out[g, t, :] = (1 / N) * sum_i vectors[i, :] * embeddings[g, i, t, :]
// ---------------------------------------------------------------------------

constexpr const char* kHadamardMuxFwd = "hadamard_mux_fwd_cuda";

void check_hadamard_mux_fwd_args(const at::Tensor& embeddings, const at::Tensor& vectors,
                                 c10::DeviceType device_type) {
  constexpr const char* op = "muxkernels::hadamard_mux_fwd_cuda: ";
  TORCH_CHECK(embeddings.dim() == 4, op, "embeddings must have rank 4 (B', N, L, d), got shape ",
              embeddings.sizes());
  TORCH_CHECK(vectors.dim() == 2, op, "vectors must have rank 2 (N, d), got shape ",
              vectors.sizes());
  TORCH_CHECK(vectors.size(0) == embeddings.size(1), op,
              "vectors.size(0) must equal embeddings.size(1) (N), got vectors shape ",
              vectors.sizes(), " and embeddings shape ", embeddings.sizes());
  TORCH_CHECK(vectors.size(1) == embeddings.size(3), op,
              "vectors.size(1) must equal embeddings.size(3) (d), got vectors shape ",
              vectors.sizes(), " and embeddings shape ", embeddings.sizes());
  TORCH_CHECK(is_kernel_float(embeddings.scalar_type()), op,
              "embeddings must be float16, bfloat16, float32 or float64, got ",
              embeddings.scalar_type());
  TORCH_CHECK(vectors.scalar_type() == embeddings.scalar_type() ||
                  vectors.scalar_type() == at::kFloat,
              op, "vectors must have the dtype of embeddings (", embeddings.scalar_type(),
              ") or float32, got ", vectors.scalar_type());
  TORCH_CHECK(embeddings.device() == vectors.device(), op,
              "embeddings and vectors must be on the same device, got embeddings on ",
              embeddings.device(), " and vectors on ", vectors.device());
  TORCH_CHECK(embeddings.device().type() == device_type, op, "embeddings must be a ",
              c10::DeviceTypeName(device_type), " tensor here, got one on ", embeddings.device());
  TORCH_CHECK(embeddings.is_contiguous(), op, "embeddings must be contiguous, got shape ",
              embeddings.sizes(), " and strides ", embeddings.strides());
  TORCH_CHECK(vectors.is_contiguous(), op, "vectors must be contiguous, got shape ",
              vectors.sizes(), " and strides ", vectors.strides());
  TORCH_CHECK(embeddings.numel() > 0, op, "embeddings must be non-empty, got shape ",
              embeddings.sizes());
}

at::Tensor hadamard_mux_fwd_cpu(const at::Tensor& embeddings, const at::Tensor& vectors) {
  check_hadamard_mux_fwd_args(embeddings, vectors, c10::DeviceType::CPU);
  const int64_t groups = embeddings.size(0);
  const int64_t n = embeddings.size(1);
  const int64_t len = embeddings.size(2);
  const int64_t d = embeddings.size(3);
  const at::ScalarType acc_dtype = accumulate_dtype(embeddings.scalar_type());

  // Same summation order as the kernel: i = 0, 1, ..., N-1, then divide by N.
  at::Tensor acc = at::zeros({groups, len, d}, embeddings.options().dtype(acc_dtype));
  const at::Tensor v = vectors.to(acc_dtype);
  for (int64_t i = 0; i < n; ++i) {
    acc.addcmul_(embeddings.select(1, i).to(acc_dtype), v.select(0, i));
  }
  acc.div_(static_cast<double>(n));
  return acc.to(embeddings.scalar_type());
}

at::Tensor hadamard_mux_fwd_cuda(const at::Tensor& embeddings, const at::Tensor& vectors) {
  check_hadamard_mux_fwd_args(embeddings, vectors, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard device_guard(embeddings.device());
  const int64_t groups = embeddings.size(0);
  const int64_t n = embeddings.size(1);
  const int64_t len = embeddings.size(2);
  const int64_t d = embeddings.size(3);

  at::Tensor out = at::empty({groups, len, d}, embeddings.options());
  check_cuda_launch(
      launch_hadamard_mux_fwd(embeddings.const_data_ptr(), vectors.const_data_ptr(),
                              out.mutable_data_ptr(), groups, n, len, d,
                              to_kernel_dtype(embeddings.scalar_type()),
                              to_kernel_dtype(vectors.scalar_type()),
                              c10::cuda::getCurrentCUDAStream().stream()),
      kHadamardMuxFwd);
  return out;
}

}  // namespace
}  // namespace muxkernels

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

TORCH_LIBRARY(muxkernels, m) {
  m.def("hadamard_mux_fwd_cuda(Tensor embeddings, Tensor vectors) -> Tensor");
}

TORCH_LIBRARY_IMPL(muxkernels, CPU, m) {
  m.impl("hadamard_mux_fwd_cuda", &muxkernels::hadamard_mux_fwd_cpu);
}

TORCH_LIBRARY_IMPL(muxkernels, CUDA, m) {
  m.impl("hadamard_mux_fwd_cuda", &muxkernels::hadamard_mux_fwd_cuda);
}

// An empty Python module: importing muxkernels._C runs the registrations above.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",                                                   // m_name
      "muxkernels compiled operators (registered on import)",  // m_doc
      -1,                                                     // m_size
      nullptr,                                                // m_methods
  };
  return PyModule_Create(&module_def);
}
