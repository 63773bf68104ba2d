// The CPU and CUDA implementations of muxkernels::embed_mux_fwd_cuda. The operators and their
// schemas (muxkernels/_opdefs.py SCHEMAS) are defined from Python, by
// muxkernels/_extension.py; this file only registers implementations. The CPU one is written
// with ATen ops, so that the operators can be tested and opcheck-ed without a GPU, and the
// CUDA one uses it too for float64, which has no kernel; otherwise the CUDA one calls the
// plain C++ launcher of the kernel on the current stream.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "bindings/checks.h"
#include "embed_mux.h"

namespace muxkernels {
namespace {

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
  if (!embed_mux_fwd_covers(args)) {  // rows the kernel's registers do not hold (embed_mux.h)
    return embed_mux_fwd_aten(in, word, pos, type, ln_weight, ln_bias, vectors, eps);
  }
  check_cuda_launch(launch_embed_mux_fwd(args, current_stream()), kEmbedMuxFwd);
  return out;
}

}  // namespace
}  // namespace muxkernels

TORCH_LIBRARY_IMPL(muxkernels, CPU, m) {
  m.impl("embed_mux_fwd_cuda", &muxkernels::embed_mux_fwd_cpu);
}

TORCH_LIBRARY_IMPL(muxkernels, CUDA, m) {
  m.impl("embed_mux_fwd_cuda", &muxkernels::embed_mux_fwd_cuda);
}
