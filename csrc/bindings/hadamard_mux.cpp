// The CPU and CUDA implementations of muxkernels::hadamard_mux_{fwd,bwd}_cuda. The operators
// and their schemas (muxkernels/_opdefs.py SCHEMAS) are defined from Python, by
// muxkernels/_extension.py; this file only registers implementations. The CPU one is written
// with ATen ops, so that the operators can be tested and opcheck-ed without a GPU; the CUDA
// one calls the plain C++ launcher of the kernel on the current stream.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

#include "bindings/checks.h"
#include "hadamard_mux.h"
#include "hadamard_mux_bwd.h"

namespace muxkernels {
namespace {

using TensorPair = std::tuple<at::Tensor, at::Tensor>;

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
                              to_kernel_dtype(vectors.scalar_type()), current_stream()),
      kHadamardMuxFwd);
  return out;
}

// ---------------------------------------------------------------------------
// hadamard_mux_bwd_cuda(Tensor grad_out, Tensor embeddings, Tensor vectors,
//                       bool vectors_grad) -> (Tensor, Tensor)
//   dE[g, i, t] = (1 / N) v_i * dx[g, t]; dv_i = (1 / N) sum_{g,t} E[g, i, t] * dx[g, t]
//   dv is an empty (0,) tensor when vectors_grad is false.
// ---------------------------------------------------------------------------

constexpr const char* kHadamardMuxBwd = "hadamard_mux_bwd_cuda";

void check_hadamard_mux_bwd_args(const at::Tensor& grad_out, const at::Tensor& embeddings,
                                 const at::Tensor& vectors, c10::DeviceType device_type) {
  constexpr const char* op = "muxkernels::hadamard_mux_bwd_cuda: ";
  check_rank(op, "embeddings", embeddings, 4, "(B', N, L, d)");
  check_rank(op, "vectors", vectors, 2, "(N, d)");
  check_rank(op, "grad_out", grad_out, 3, "(B', L, d)");
  check_size(op, "vectors", vectors, 0, embeddings.size(1), "embeddings.size(1), N");
  check_size(op, "vectors", vectors, 1, embeddings.size(3), "embeddings.size(3), d");
  check_size(op, "grad_out", grad_out, 0, embeddings.size(0), "embeddings.size(0), B'");
  check_size(op, "grad_out", grad_out, 1, embeddings.size(2), "embeddings.size(2), L");
  check_size(op, "grad_out", grad_out, 2, embeddings.size(3), "embeddings.size(3), d");
  check_data(op, "embeddings", embeddings, device_type);
  TORCH_CHECK(grad_out.scalar_type() == embeddings.scalar_type(), op,
              "grad_out must have the dtype of embeddings (", embeddings.scalar_type(),
              "), got ", grad_out.scalar_type());
  check_same_device(op, "grad_out", grad_out, "embeddings", embeddings);
  check_contiguous(op, "grad_out", grad_out);
  check_param(op, "vectors", vectors, "embeddings", embeddings);
}

TensorPair hadamard_mux_bwd_aten(const at::Tensor& grad_out, const at::Tensor& embeddings,
                                 const at::Tensor& vectors, bool vectors_grad) {
  const int64_t n = embeddings.size(1);
  const at::ScalarType acc = accumulate_dtype(embeddings.scalar_type());
  const at::Tensor dx = grad_out.to(acc).unsqueeze(1);            // (B', 1, L, d)
  const at::Tensor v = vectors.to(acc).unsqueeze(0).unsqueeze(2);  // (1, N, 1, d)
  at::Tensor d_e = (v * dx).div_(static_cast<double>(n)).to(embeddings.scalar_type());
  if (!vectors_grad) return {d_e, at::empty({0}, vectors.options())};
  at::Tensor d_v = (embeddings.to(acc) * dx).sum({0, 2}).div_(static_cast<double>(n));
  return {d_e, d_v.to(vectors.scalar_type())};
}

TensorPair hadamard_mux_bwd_cpu(const at::Tensor& grad_out, const at::Tensor& embeddings,
                                const at::Tensor& vectors, bool vectors_grad) {
  check_hadamard_mux_bwd_args(grad_out, embeddings, vectors, c10::DeviceType::CPU);
  return hadamard_mux_bwd_aten(grad_out, embeddings, vectors, vectors_grad);
}

TensorPair hadamard_mux_bwd_cuda(const at::Tensor& grad_out, const at::Tensor& embeddings,
                                 const at::Tensor& vectors, bool vectors_grad) {
  check_hadamard_mux_bwd_args(grad_out, embeddings, vectors, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard device_guard(embeddings.device());
  const int64_t groups = embeddings.size(0);
  const int64_t n = embeddings.size(1);
  const int64_t len = embeddings.size(2);
  const int64_t d = embeddings.size(3);
  const at::ScalarType acc = accumulate_dtype(embeddings.scalar_type());

  at::Tensor d_e = at::empty_like(embeddings);
  at::Tensor partial;
  if (vectors_grad) {
    const int64_t chunks = hadamard_mux_bwd_chunks(groups * len, n);
    partial = at::empty({chunks, n, d}, embeddings.options().dtype(acc));
  }
  check_cuda_launch(
      launch_hadamard_mux_bwd(grad_out.const_data_ptr(), embeddings.const_data_ptr(),
                              kernel_param(vectors), d_e.mutable_data_ptr(),
                              vectors_grad ? partial.mutable_data_ptr() : nullptr, groups, n,
                              len, d, to_kernel_dtype(embeddings.scalar_type()),
                              current_stream()),
      kHadamardMuxBwd);
  if (!vectors_grad) return {d_e, at::empty({0}, vectors.options())};
  // The chunks' partial sums, added in a fixed order: deterministic.
  at::Tensor d_v = partial.sum(0).div_(static_cast<double>(n)).to(vectors.scalar_type());
  return {d_e, d_v};
}

}  // namespace
}  // namespace muxkernels

TORCH_LIBRARY_IMPL(muxkernels, CPU, m) {
  m.impl("hadamard_mux_fwd_cuda", &muxkernels::hadamard_mux_fwd_cpu);
  m.impl("hadamard_mux_bwd_cuda", &muxkernels::hadamard_mux_bwd_cpu);
}

TORCH_LIBRARY_IMPL(muxkernels, CUDA, m) {
  m.impl("hadamard_mux_fwd_cuda", &muxkernels::hadamard_mux_fwd_cuda);
  m.impl("hadamard_mux_bwd_cuda", &muxkernels::hadamard_mux_bwd_cuda);
}
