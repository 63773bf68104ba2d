// PyTorch bindings of the CUDA kernels in csrc/: the muxkernels::<name>_cuda operators.
//
// This is the one translation unit that includes torch headers. Each operator has a
// schema in the TORCH_LIBRARY block (the schemas of muxkernels/_opdefs.py), one
// argument-check helper shared by its implementations, an implementation written with
// ATen ops (registered for CPU, so that the operators can be tested and opcheck-ed
// without a GPU; the CUDA implementation uses it too for float64, which has no kernel
// except for the hadamard mux), and a CUDA implementation that calls the plain C++
// launcher of its kernel on the current stream. Fake (meta) implementations are the
// shared ones of muxkernels/_opdefs.py, registered by muxkernels/_extension.py.
//
// Importing the Python module muxkernels._C registers the operators; the module itself
// has no attributes.

#include <Python.h>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "demux_gather_bwd.h"
#include "demux_gather_fwd.h"
#include "embed_mux.h"
#include "hadamard_mux.h"
#include "hadamard_mux_bwd.h"

namespace muxkernels {
namespace {

using TensorPair = std::tuple<at::Tensor, at::Tensor>;
using TensorQuad = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

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

Param kernel_param(const at::Tensor& t) {
  return Param{t.const_data_ptr(), to_kernel_dtype(t.scalar_type())};
}

void check_cuda_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "muxkernels::", op, ": kernel launch failed: ",
              cudaGetErrorString(err));
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Argument checks: `op` is the message prefix "muxkernels::<name>: ".
void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank,
                const char* layout) {
  TORCH_CHECK(t.dim() == rank, op, name, " must have rank ", rank, " ", layout, ", got shape ",
              t.sizes());
}

void check_size(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                int64_t expected, const char* what) {
  TORCH_CHECK(t.size(dim) == expected, op, name, ".size(", dim, ") must equal ", what, " (",
              expected, "), got shape ", t.sizes());
}

void check_data(const char* op, const char* name, const at::Tensor& t,
                c10::DeviceType device_type) {
  TORCH_CHECK(is_kernel_float(t.scalar_type()), op, name,
              " must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.device().type() == device_type, op, name, " must be a ",
              c10::DeviceTypeName(device_type), " tensor here, got one on ", t.device());
  TORCH_CHECK(t.is_contiguous(), op, name, " must be contiguous, got shape ", t.sizes(),
              " and strides ", t.strides());
  TORCH_CHECK(t.numel() > 0, op, name, " must be non-empty, got shape ", t.sizes());
}

void check_same_device(const char* op, const char* name, const at::Tensor& t,
                       const char* data_name, const at::Tensor& data) {
  TORCH_CHECK(t.device() == data.device(), op, data_name, " and ", name,
              " must be on the same device, got ", data_name, " on ", data.device(), " and ",
              name, " on ", t.device());
}

void check_contiguous(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), op, name, " must be contiguous, got shape ", t.sizes(),
              " and strides ", t.strides());
}

// A parameter: the data's dtype or float32, on the data's device, contiguous.
void check_param(const char* op, const char* name, const at::Tensor& t, const char* data_name,
                 const at::Tensor& data) {
  TORCH_CHECK(t.scalar_type() == data.scalar_type() || t.scalar_type() == at::kFloat, op, name,
              " must have the dtype of ", data_name, " (", data.scalar_type(),
              ") or float32, got ", t.scalar_type());
  check_same_device(op, name, t, data_name, data);
  check_contiguous(op, name, t);
}

// Integer ids (or indices) on the data's device, contiguous; returned as int64.
at::Tensor check_ids(const char* op, const char* name, const at::Tensor& t,
                     const char* data_name, const at::Tensor& data) {
  TORCH_CHECK(at::isIntegralType(t.scalar_type(), /*includeBool=*/false), op, name,
              " must be an integer tensor, got ", t.scalar_type());
  check_same_device(op, name, t, data_name, data);
  check_contiguous(op, name, t);
  return t.to(at::kLong);
}

// On CPU only (a CUDA check would synchronize): every id lies in [0, limit), the rows of
// `what`.
void check_id_range(const char* op, const char* name, const at::Tensor& ids, int64_t limit,
                    const char* what) {
  if (ids.device().type() != c10::DeviceType::CPU || ids.numel() == 0) return;
  const int64_t lo = ids.min().item<int64_t>();
  const int64_t hi = ids.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < limit, op, name, " holds values in [", lo, ", ", hi,
              "] but must lie in [0, ", limit, "), the rows of ", what);
}

void check_eps(const char* op, double eps) {
  TORCH_CHECK(std::isfinite(eps) && eps > 0, op, "eps must be a positive float, got ", eps);
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

// ---------------------------------------------------------------------------
// embed_mux_fwd_cuda(Tensor input_ids, Tensor word_embeddings, Tensor position_embeddings,
//     Tensor token_type_embeddings, Tensor ln_weight, Tensor ln_bias, Tensor vectors,
//     Tensor position_ids, Tensor token_type_ids, Tensor mixed_position_ids,
//     Tensor mixed_token_type_ids, float eps) -> Tensor
//   e = LN(word[ids] + pos[position_ids] + type[token_type_ids]) per instance,
//   x = LN((1/N) sum_i v_i * e_i + pos[mixed_position_ids] + type[mixed_token_type_ids])
// ---------------------------------------------------------------------------

constexpr const char* kEmbedMuxFwd = "embed_mux_fwd_cuda";

struct EmbedMuxInputs {
  at::Tensor input_ids, position_ids, token_type_ids, mixed_position_ids, mixed_token_type_ids;
};

EmbedMuxInputs check_embed_mux_fwd_args(
    const at::Tensor& input_ids, const at::Tensor& word, const at::Tensor& pos,
    const at::Tensor& type, const at::Tensor& ln_weight, const at::Tensor& ln_bias,
    const at::Tensor& vectors, const at::Tensor& position_ids, const at::Tensor& token_type_ids,
    const at::Tensor& mixed_position_ids, const at::Tensor& mixed_token_type_ids, double eps,
    c10::DeviceType device_type) {
  constexpr const char* op = "muxkernels::embed_mux_fwd_cuda: ";
  check_rank(op, "input_ids", input_ids, 3, "(B', N, L)");
  check_rank(op, "word_embeddings", word, 2, "(V, d)");
  check_rank(op, "position_embeddings", pos, 2, "(V_pos, d)");
  check_rank(op, "token_type_embeddings", type, 2, "(V_type, d)");
  check_rank(op, "ln_weight", ln_weight, 1, "(d,)");
  check_rank(op, "ln_bias", ln_bias, 1, "(d,)");
  check_rank(op, "vectors", vectors, 2, "(N, d)");
  const int64_t d = word.size(1);
  check_size(op, "position_embeddings", pos, 1, d, "word_embeddings.size(1), d");
  check_size(op, "token_type_embeddings", type, 1, d, "word_embeddings.size(1), d");
  check_size(op, "ln_weight", ln_weight, 0, d, "word_embeddings.size(1), d");
  check_size(op, "ln_bias", ln_bias, 0, d, "word_embeddings.size(1), d");
  check_size(op, "vectors", vectors, 1, d, "word_embeddings.size(1), d");
  check_size(op, "vectors", vectors, 0, input_ids.size(1), "input_ids.size(1), N");
  for (const auto& [name, ids] : {std::pair<const char*, const at::Tensor*>{"position_ids",
                                                                            &position_ids},
                                  {"token_type_ids", &token_type_ids}}) {
    TORCH_CHECK(ids->sizes() == input_ids.sizes(), op, name,
                " must have the shape of input_ids ", input_ids.sizes(), ", got ",
                ids->sizes());
  }
  const std::vector<int64_t> mixed_shape{input_ids.size(0), input_ids.size(2)};
  for (const auto& [name, ids] :
       {std::pair<const char*, const at::Tensor*>{"mixed_position_ids", &mixed_position_ids},
        {"mixed_token_type_ids", &mixed_token_type_ids}}) {
    TORCH_CHECK(ids->sizes() == at::IntArrayRef(mixed_shape), op, name,
                " must have shape (B', L) = ", at::IntArrayRef(mixed_shape), ", got ",
                ids->sizes());
  }
  check_data(op, "word_embeddings", word, device_type);
  for (const auto& [name, table] : {std::pair<const char*, const at::Tensor*>{
                                        "position_embeddings", &pos},
                                    {"token_type_embeddings", &type}}) {
    TORCH_CHECK(table->scalar_type() == word.scalar_type(), op, name,
                " must have the dtype of word_embeddings (", word.scalar_type(), "), got ",
                table->scalar_type());
    check_same_device(op, name, *table, "word_embeddings", word);
    check_data(op, name, *table, device_type);
  }
  check_param(op, "ln_weight", ln_weight, "word_embeddings", word);
  check_param(op, "ln_bias", ln_bias, "word_embeddings", word);
  check_param(op, "vectors", vectors, "word_embeddings", word);
  check_eps(op, eps);
  TORCH_CHECK(input_ids.numel() > 0, op, "input_ids must be non-empty, got shape ",
              input_ids.sizes());
  EmbedMuxInputs in{
      check_ids(op, "input_ids", input_ids, "word_embeddings", word),
      check_ids(op, "position_ids", position_ids, "word_embeddings", word),
      check_ids(op, "token_type_ids", token_type_ids, "word_embeddings", word),
      check_ids(op, "mixed_position_ids", mixed_position_ids, "word_embeddings", word),
      check_ids(op, "mixed_token_type_ids", mixed_token_type_ids, "word_embeddings", word)};
  check_id_range(op, "input_ids", in.input_ids, word.size(0), "word_embeddings");
  check_id_range(op, "position_ids", in.position_ids, pos.size(0), "position_embeddings");
  check_id_range(op, "token_type_ids", in.token_type_ids, type.size(0), "token_type_embeddings");
  check_id_range(op, "mixed_position_ids", in.mixed_position_ids, pos.size(0),
                 "position_embeddings");
  check_id_range(op, "mixed_token_type_ids", in.mixed_token_type_ids, type.size(0),
                 "token_type_embeddings");
  return in;
}

// Rows of `table` picked by `ids`, in dtype `acc`, shaped ids.shape + (d,).
at::Tensor lookup(const at::Tensor& table, const at::Tensor& ids, at::ScalarType acc) {
  std::vector<int64_t> shape(ids.sizes().begin(), ids.sizes().end());
  shape.push_back(table.size(1));
  return at::index_select(table, 0, ids.reshape({-1})).to(acc).view(shape);
}

at::Tensor embed_mux_fwd_aten(const EmbedMuxInputs& in, const at::Tensor& word,
                              const at::Tensor& pos, const at::Tensor& type,
                              const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                              const at::Tensor& vectors, double eps) {
  const int64_t n = vectors.size(0);
  const int64_t d = word.size(1);
  const at::ScalarType acc = accumulate_dtype(word.scalar_type());
  const at::Tensor w = ln_weight.to(acc);
  const at::Tensor b = ln_bias.to(acc);
  const at::Tensor e = at::layer_norm(
      (lookup(word, in.input_ids, acc) + lookup(pos, in.position_ids, acc)) +
          lookup(type, in.token_type_ids, acc),
      {d}, w, b, eps);
  const at::Tensor v = vectors.to(acc).view({1, n, 1, d});
  const at::Tensor m = (v * e).sum(1).div_(static_cast<double>(n));
  const at::Tensor x = at::layer_norm((m + lookup(pos, in.mixed_position_ids, acc)) +
                                          lookup(type, in.mixed_token_type_ids, acc),
                                      {d}, w, b, eps);
  return x.to(word.scalar_type());
}

at::Tensor embed_mux_fwd_cpu(const at::Tensor& input_ids, const at::Tensor& word,
                             const at::Tensor& pos, const at::Tensor& type,
                             const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                             const at::Tensor& vectors, const at::Tensor& position_ids,
                             const at::Tensor& token_type_ids,
                             const at::Tensor& mixed_position_ids,
                             const at::Tensor& mixed_token_type_ids, double eps) {
  const EmbedMuxInputs in = check_embed_mux_fwd_args(
      input_ids, word, pos, type, ln_weight, ln_bias, vectors, position_ids, token_type_ids,
      mixed_position_ids, mixed_token_type_ids, eps, c10::DeviceType::CPU);
  return embed_mux_fwd_aten(in, word, pos, type, ln_weight, ln_bias, vectors, eps);
}

at::Tensor embed_mux_fwd_cuda(const at::Tensor& input_ids, const at::Tensor& word,
                              const at::Tensor& pos, const at::Tensor& type,
                              const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                              const at::Tensor& vectors, const at::Tensor& position_ids,
                              const at::Tensor& token_type_ids,
                              const at::Tensor& mixed_position_ids,
                              const at::Tensor& mixed_token_type_ids, double eps) {
  constexpr const char* op = "muxkernels::embed_mux_fwd_cuda: ";
  const EmbedMuxInputs in = check_embed_mux_fwd_args(
      input_ids, word, pos, type, ln_weight, ln_bias, vectors, position_ids, token_type_ids,
      mixed_position_ids, mixed_token_type_ids, eps, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard device_guard(word.device());
  if (word.scalar_type() == at::kDouble) {
    return embed_mux_fwd_aten(in, word, pos, type, ln_weight, ln_bias, vectors, eps);
  }
  TORCH_CHECK(word.size(1) <= kMaxEmbedMuxD, op, "d = word_embeddings.size(1) must be at most ",
              kMaxEmbedMuxD, " for the kernel, got ", word.size(1));
  const int64_t groups = input_ids.size(0);
  const int64_t len = input_ids.size(2);
  at::Tensor out = at::empty({groups, len, word.size(1)}, word.options());
  const EmbedMuxArgs args{in.input_ids.const_data_ptr<int64_t>(),
                          in.position_ids.const_data_ptr<int64_t>(),
                          in.token_type_ids.const_data_ptr<int64_t>(),
                          in.mixed_position_ids.const_data_ptr<int64_t>(),
                          in.mixed_token_type_ids.const_data_ptr<int64_t>(),
                          word.const_data_ptr(),
                          pos.const_data_ptr(),
                          type.const_data_ptr(),
                          out.mutable_data_ptr(),
                          kernel_param(ln_weight),
                          kernel_param(ln_bias),
                          kernel_param(vectors),
                          groups,
                          vectors.size(0),
                          len,
                          word.size(1),
                          eps,
                          to_kernel_dtype(word.scalar_type())};
  check_cuda_launch(launch_embed_mux_fwd(args, current_stream()), kEmbedMuxFwd);
  return out;
}

// ---------------------------------------------------------------------------
// demux_gather_fwd_cuda(Tensor a, Tensor c, Tensor ln_weight, Tensor ln_bias, float eps,
//     str gather, Tensor? index, int sequence_position) -> Tensor
// demux_gather_bwd_cuda(Tensor grad_u, <the same>) -> (da, dc, d_ln_weight, d_ln_bias)
//   u[g, i, t] = LN(gelu(a[g', i] + c[g, t])), g' = g or 0 (a broadcast over groups);
//   gather "token" (B', N, L', d), "sequence" at t = sequence_position (B', N, d),
//   "selected" i = index[g, t] (B', L', d). index is read for "selected" only.
// ---------------------------------------------------------------------------

constexpr const char* kDemuxGatherFwd = "demux_gather_fwd_cuda";
constexpr const char* kDemuxGatherBwd = "demux_gather_bwd_cuda";

Gather parse_gather(const char* op, c10::string_view gather) {
  if (gather == "token") return Gather::kToken;
  if (gather == "sequence") return Gather::kSequence;
  TORCH_CHECK(gather == "selected", op,
              "gather must be \"token\", \"sequence\" or \"selected\", got \"",
              std::string(gather), "\"");
  return Gather::kSelected;
}

std::vector<int64_t> gather_shape(const at::Tensor& a, const at::Tensor& c, Gather gather) {
  if (gather == Gather::kToken) return {c.size(0), a.size(1), c.size(1), c.size(2)};
  if (gather == Gather::kSequence) return {c.size(0), a.size(1), c.size(2)};
  return {c.size(0), c.size(1), c.size(2)};
}

struct DemuxGatherInputs {
  Gather gather;
  at::Tensor index;  // int64 (B', L') for "selected", else undefined
};

DemuxGatherInputs check_demux_gather_args(const char* op, const at::Tensor& a,
                                          const at::Tensor& c, const at::Tensor& ln_weight,
                                          const at::Tensor& ln_bias, double eps,
                                          c10::string_view gather,
                                          const std::optional<at::Tensor>& index,
                                          int64_t sequence_position,
                                          c10::DeviceType device_type) {
  check_rank(op, "a", a, 3, "(B' or 1, N, d)");
  check_rank(op, "c", c, 3, "(B', L', d)");
  check_rank(op, "ln_weight", ln_weight, 1, "(d,)");
  check_rank(op, "ln_bias", ln_bias, 1, "(d,)");
  TORCH_CHECK(a.size(0) == c.size(0) || a.size(0) == 1, op,
              "a.size(0) must equal c.size(0) (B') or 1, got a shape ", a.sizes(),
              " and c shape ", c.sizes());
  check_size(op, "a", a, 2, c.size(2), "c.size(2), d");
  check_size(op, "ln_weight", ln_weight, 0, c.size(2), "c.size(2), d");
  check_size(op, "ln_bias", ln_bias, 0, c.size(2), "c.size(2), d");
  check_data(op, "c", c, device_type);
  check_param(op, "a", a, "c", c);
  TORCH_CHECK(a.numel() > 0, op, "a must be non-empty, got shape ", a.sizes());
  check_param(op, "ln_weight", ln_weight, "c", c);
  check_param(op, "ln_bias", ln_bias, "c", c);
  check_eps(op, eps);
  DemuxGatherInputs in{parse_gather(op, gather), at::Tensor()};
  if (in.gather == Gather::kSequence) {
    TORCH_CHECK(sequence_position >= 0 && sequence_position < c.size(1), op,
                "sequence_position must lie in [0, c.size(1)) = [0, ", c.size(1), "), got ",
                sequence_position);
  }
  if (in.gather == Gather::kSelected) {
    TORCH_CHECK(index.has_value(), op, "gather \"selected\" needs index, a (B', L') tensor");
    TORCH_CHECK(index->dim() == 2 && index->size(0) == c.size(0) && index->size(1) == c.size(1),
                op, "index must have shape (B', L') = (", c.size(0), ", ", c.size(1),
                "), got ", index->sizes());
    in.index = check_ids(op, "index", *index, "c", c);
    check_id_range(op, "index", in.index, a.size(1), "a in dim 1 (the N instances)");
  }
  return in;
}

// pre = a[g', i] + c[g, t] over the gather's rows, in dtype acc (the gather's shape).
at::Tensor gather_pre(const at::Tensor& a, const at::Tensor& c, const DemuxGatherInputs& in,
                      int64_t sequence_position, at::ScalarType acc) {
  const at::Tensor a_acc = a.to(acc).expand({c.size(0), a.size(1), a.size(2)});
  const at::Tensor c_acc = c.to(acc);
  if (in.gather == Gather::kToken) return a_acc.unsqueeze(2) + c_acc.unsqueeze(1);
  if (in.gather == Gather::kSequence) {
    return a_acc + c_acc.select(1, sequence_position).unsqueeze(1);
  }
  const at::Tensor rows = in.index.unsqueeze(2).expand({c.size(0), c.size(1), c.size(2)});
  return at::gather(a_acc, 1, rows) + c_acc;
}

at::Tensor demux_gather_fwd_aten(const at::Tensor& a, const at::Tensor& c,
                                 const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                 double eps, const DemuxGatherInputs& in,
                                 int64_t sequence_position) {
  const at::ScalarType acc = accumulate_dtype(c.scalar_type());
  const at::Tensor pre = gather_pre(a, c, in, sequence_position, acc);
  return at::layer_norm(at::gelu(pre), {c.size(2)}, ln_weight.to(acc), ln_bias.to(acc), eps)
      .to(c.scalar_type());
}

DemuxGatherArgs demux_gather_args(const at::Tensor& a, const at::Tensor& c,
                                  const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                  double eps, const DemuxGatherInputs& in,
                                  int64_t sequence_position) {
  return DemuxGatherArgs{kernel_param(a),
                         c.const_data_ptr(),
                         kernel_param(ln_weight),
                         kernel_param(ln_bias),
                         in.index.defined() ? in.index.const_data_ptr<int64_t>() : nullptr,
                         c.size(0),
                         a.size(0),
                         a.size(1),
                         c.size(1),
                         c.size(2),
                         eps,
                         in.gather,
                         sequence_position,
                         to_kernel_dtype(c.scalar_type())};
}

void check_demux_d(const char* op, const at::Tensor& c) {
  TORCH_CHECK(c.size(2) <= kMaxDemuxD, op, "d = c.size(2) must be at most ", kMaxDemuxD,
              " for the kernel, got ", c.size(2));
}

at::Tensor demux_gather_fwd_cpu(const at::Tensor& a, const at::Tensor& c,
                                const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                double eps, c10::string_view gather,
                                const std::optional<at::Tensor>& index,
                                int64_t sequence_position) {
  const DemuxGatherInputs in =
      check_demux_gather_args("muxkernels::demux_gather_fwd_cuda: ", a, c, ln_weight, ln_bias,
                              eps, gather, index, sequence_position, c10::DeviceType::CPU);
  return demux_gather_fwd_aten(a, c, ln_weight, ln_bias, eps, in, sequence_position);
}

at::Tensor demux_gather_fwd_cuda(const at::Tensor& a, const at::Tensor& c,
                                 const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                 double eps, c10::string_view gather,
                                 const std::optional<at::Tensor>& index,
                                 int64_t sequence_position) {
  constexpr const char* op = "muxkernels::demux_gather_fwd_cuda: ";
  const DemuxGatherInputs in =
      check_demux_gather_args(op, a, c, ln_weight, ln_bias, eps, gather, index,
                              sequence_position, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard device_guard(c.device());
  if (c.scalar_type() == at::kDouble) {
    return demux_gather_fwd_aten(a, c, ln_weight, ln_bias, eps, in, sequence_position);
  }
  check_demux_d(op, c);
  at::Tensor out = at::empty(gather_shape(a, c, in.gather), c.options());
  const DemuxGatherArgs args =
      demux_gather_args(a, c, ln_weight, ln_bias, eps, in, sequence_position);
  check_cuda_launch(launch_demux_gather_fwd(args, out.mutable_data_ptr(), current_stream()),
                    kDemuxGatherFwd);
  return out;
}

void check_grad_u(const char* op, const at::Tensor& grad_u, const at::Tensor& a,
                  const at::Tensor& c, Gather gather) {
  const std::vector<int64_t> shape = gather_shape(a, c, gather);
  TORCH_CHECK(grad_u.sizes() == at::IntArrayRef(shape), op,
              "grad_u must have the gather's output shape ", at::IntArrayRef(shape), ", got ",
              grad_u.sizes());
  TORCH_CHECK(grad_u.scalar_type() == c.scalar_type(), op, "grad_u must have the dtype of c (",
              c.scalar_type(), "), got ", grad_u.scalar_type());
  check_same_device(op, "grad_u", grad_u, "c", c);
  check_contiguous(op, "grad_u", grad_u);
}

// Sums the groups of a gradient of a when a is broadcast (a.size(0) == 1).
at::Tensor sum_broadcast_groups(const at::Tensor& da, const at::Tensor& a) {
  return a.size(0) == 1 ? da.sum(0, /*keepdim=*/true) : da;
}

TensorQuad demux_gather_bwd_aten(const at::Tensor& grad_u, const at::Tensor& a,
                                 const at::Tensor& c, const at::Tensor& ln_weight,
                                 const at::Tensor& ln_bias, double eps,
                                 const DemuxGatherInputs& in, int64_t sequence_position) {
  const int64_t d = c.size(2);
  const at::ScalarType acc = accumulate_dtype(c.scalar_type());
  const at::Tensor pre = gather_pre(a, c, in, sequence_position, acc);
  const at::Tensor h = at::gelu(pre);
  const at::Tensor x = h - h.mean(-1, /*keepdim=*/true);
  const at::Tensor rstd = ((x * x).mean(-1, /*keepdim=*/true) + eps).rsqrt();
  const at::Tensor xhat = x * rstd;
  const at::Tensor du = grad_u.to(acc);
  const at::Tensor gd = du * ln_weight.to(acc);
  const at::Tensor dh = rstd * (gd - gd.mean(-1, /*keepdim=*/true) -
                                xhat * (gd * xhat).mean(-1, /*keepdim=*/true));
  const at::Tensor dpre = at::gelu_backward(dh, pre);
  const at::Tensor d_w = (du * xhat).reshape({-1, d}).sum(0);
  const at::Tensor d_b = du.reshape({-1, d}).sum(0);

  at::Tensor da;
  at::Tensor dc;
  if (in.gather == Gather::kToken) {
    dc = dpre.sum(1);
    da = dpre.sum(2);
  } else if (in.gather == Gather::kSequence) {
    dc = at::zeros({c.size(0), c.size(1), d}, dpre.options());
    dc.select(1, sequence_position).copy_(dpre.sum(1));
    da = dpre;
  } else {
    dc = dpre;
    // da[g, i] = sum of dpre[g, t] over the t that selected i: a one-hot matmul, which is
    // deterministic on every device (unlike scatter_add_ on CUDA).
    const at::Tensor one_hot = at::one_hot(in.index, a.size(1)).to(acc).transpose(1, 2);
    da = at::bmm(one_hot, dpre);
  }
  return {sum_broadcast_groups(da, a).to(a.scalar_type()), dc.to(c.scalar_type()),
          d_w.to(ln_weight.scalar_type()), d_b.to(ln_bias.scalar_type())};
}

TensorQuad demux_gather_bwd_cpu(const at::Tensor& grad_u, const at::Tensor& a,
                                const at::Tensor& c, const at::Tensor& ln_weight,
                                const at::Tensor& ln_bias, double eps, c10::string_view gather,
                                const std::optional<at::Tensor>& index,
                                int64_t sequence_position) {
  constexpr const char* op = "muxkernels::demux_gather_bwd_cuda: ";
  const DemuxGatherInputs in = check_demux_gather_args(
      op, a, c, ln_weight, ln_bias, eps, gather, index, sequence_position, c10::DeviceType::CPU);
  check_grad_u(op, grad_u, a, c, in.gather);
  return demux_gather_bwd_aten(grad_u, a, c, ln_weight, ln_bias, eps, in, sequence_position);
}

TensorQuad demux_gather_bwd_cuda(const at::Tensor& grad_u, const at::Tensor& a,
                                 const at::Tensor& c, const at::Tensor& ln_weight,
                                 const at::Tensor& ln_bias, double eps, c10::string_view gather,
                                 const std::optional<at::Tensor>& index,
                                 int64_t sequence_position) {
  constexpr const char* op = "muxkernels::demux_gather_bwd_cuda: ";
  const DemuxGatherInputs in =
      check_demux_gather_args(op, a, c, ln_weight, ln_bias, eps, gather, index,
                              sequence_position, c10::DeviceType::CUDA);
  check_grad_u(op, grad_u, a, c, in.gather);
  const c10::cuda::CUDAGuard device_guard(c.device());
  if (c.scalar_type() == at::kDouble) {
    return demux_gather_bwd_aten(grad_u, a, c, ln_weight, ln_bias, eps, in, sequence_position);
  }
  check_demux_d(op, c);
  const int64_t groups = c.size(0);
  const int64_t n = a.size(1);
  const int64_t d = c.size(2);
  const at::TensorOptions f32 = c.options().dtype(at::kFloat);
  // Positions the sequence gather does not read keep a zero gradient.
  at::Tensor dc = in.gather == Gather::kSequence ? at::zeros_like(c) : at::empty_like(c);
  const DemuxGatherArgs args =
      demux_gather_args(a, c, ln_weight, ln_bias, eps, in, sequence_position);
  DemuxGatherBwdBuffers buffers{grad_u.const_data_ptr(), dc.mutable_data_ptr(), nullptr,
                                nullptr, nullptr};
  DemuxGatherBwdPlan plan;
  TORCH_CHECK(plan_demux_gather_bwd(args, buffers, &plan), op,
              "unsupported arguments for the kernel");
  at::Tensor da_partial = at::empty({groups, plan.da_tiles, n, d}, f32);
  at::Tensor ln_partial = at::empty({2, plan.blocks, d}, f32);
  at::Tensor dpre;
  if (in.gather == Gather::kSelected) dpre = at::empty({groups, c.size(1), d}, f32);
  buffers.da_partial = da_partial.mutable_data_ptr<float>();
  buffers.ln_partial = ln_partial.mutable_data_ptr<float>();
  buffers.dpre = dpre.defined() ? dpre.mutable_data_ptr<float>() : nullptr;
  check_cuda_launch(launch_demux_gather_bwd(args, buffers, current_stream()), kDemuxGatherBwd);
  // The partial sums, added in a fixed order: deterministic.
  const at::Tensor da = sum_broadcast_groups(da_partial.sum(1), a);
  const at::Tensor ln = ln_partial.sum(1);
  return {da.to(a.scalar_type()), dc, ln.select(0, 0).to(ln_weight.scalar_type()),
          ln.select(0, 1).to(ln_bias.scalar_type())};
}

}  // namespace
}  // namespace muxkernels

// ---------------------------------------------------------------------------
// Registration: the schemas of muxkernels/_opdefs.py SCHEMAS, names suffixed _cuda.
// ---------------------------------------------------------------------------

TORCH_LIBRARY(muxkernels, m) {
  m.def("hadamard_mux_fwd_cuda(Tensor embeddings, Tensor vectors) -> Tensor");
  m.def(
      "hadamard_mux_bwd_cuda(Tensor grad_out, Tensor embeddings, Tensor vectors, "
      "bool vectors_grad) -> (Tensor, Tensor)");
  m.def(
      "embed_mux_fwd_cuda(Tensor input_ids, Tensor word_embeddings, "
      "Tensor position_embeddings, Tensor token_type_embeddings, Tensor ln_weight, "
      "Tensor ln_bias, Tensor vectors, Tensor position_ids, Tensor token_type_ids, "
      "Tensor mixed_position_ids, Tensor mixed_token_type_ids, float eps) -> Tensor");
  m.def(
      "demux_gather_fwd_cuda(Tensor a, Tensor c, Tensor ln_weight, Tensor ln_bias, "
      "float eps, str gather, Tensor? index, int sequence_position) -> Tensor");
  m.def(
      "demux_gather_bwd_cuda(Tensor grad_u, Tensor a, Tensor c, Tensor ln_weight, "
      "Tensor ln_bias, float eps, str gather, Tensor? index, int sequence_position) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(muxkernels, CPU, m) {
  m.impl("hadamard_mux_fwd_cuda", &muxkernels::hadamard_mux_fwd_cpu);
  m.impl("hadamard_mux_bwd_cuda", &muxkernels::hadamard_mux_bwd_cpu);
  m.impl("embed_mux_fwd_cuda", &muxkernels::embed_mux_fwd_cpu);
  m.impl("demux_gather_fwd_cuda", &muxkernels::demux_gather_fwd_cpu);
  m.impl("demux_gather_bwd_cuda", &muxkernels::demux_gather_bwd_cpu);
}

TORCH_LIBRARY_IMPL(muxkernels, CUDA, m) {
  m.impl("hadamard_mux_fwd_cuda", &muxkernels::hadamard_mux_fwd_cuda);
  m.impl("hadamard_mux_bwd_cuda", &muxkernels::hadamard_mux_bwd_cuda);
  m.impl("embed_mux_fwd_cuda", &muxkernels::embed_mux_fwd_cuda);
  m.impl("demux_gather_fwd_cuda", &muxkernels::demux_gather_fwd_cuda);
  m.impl("demux_gather_bwd_cuda", &muxkernels::demux_gather_bwd_cuda);
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
