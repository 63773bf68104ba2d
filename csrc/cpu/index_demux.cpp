// muxkernels::index_demux_{fwd,bwd}_cpu: the index demux of design §3 in one operator call
// each way, u[g,i,t] = LN(gelu(W · [p_i; h_t] + b)) with p_i = h[g,i] (i < N), computed
// split, W = [W_p | W_h]: a = p W_pᵀ (B', N, d) and c = h W_hᵀ + b (B', L', d; only t = N
// for the sequence gather) by two GEMMs, then the demux core (demux_gather.cpp). On a small
// input the cost of the op is the number of calls it makes, so the GEMMs and the
// gradients' GEMMs run here, in C++, instead of one Python-dispatched call each.
//
// forward returns (u, a, c); backward takes a and c back (saved by the autograd Function,
// muxkernels/_cpu/kernels.py) and returns (d_hidden, d_weight, d_bias, dγ, dβ).
// muxkernels::index_pos_demux_{fwd,bwd}_cpu do the same for the index_pos demux (learned
// keys k instead of the prefix rows; backward also returns d_keys, after d_hidden).

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "cpu/demux_gather.h"

namespace muxkernels::cpu {
namespace {

struct Terms {
  int64_t n;
  int64_t d;
  bool sequence;
  at::Tensor prefix;  // h[:, :N] (B', N, d)
  at::Tensor rows;    // the rows c covers: h, or h[:, N:N+1] for the sequence gather
  at::Tensor w_p;     // W[:, :d]
  at::Tensor w_h;     // W[:, d:]
};

Terms check_terms(const char* op, const at::Tensor& hidden, const at::Tensor& weight,
                  int64_t n, c10::string_view gather) {
  const at::ScalarType dtype = hidden.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              "hidden must be float32 or float64, got ", dtype);
  check_float_tensor(op, "hidden", hidden, dtype, 3);
  check_float_tensor(op, "weight", weight, dtype, 2);
  const int64_t d = hidden.size(2);
  TORCH_CHECK(weight.size(0) == d && weight.size(1) == 2 * d, op, "weight must have shape (", d,
              ", ", 2 * d, "), got ", weight.sizes());
  TORCH_CHECK(n >= 1 && n < hidden.size(1), op, "num_instances must be in [1, L') = [1, ",
              hidden.size(1), ") (an index prefix of N + 1 positions), got ", n);
  const bool sequence = gather == "sequence";
  return Terms{n,
               d,
               sequence,
               hidden.narrow(1, 0, n),
               sequence ? hidden.narrow(1, n, 1) : hidden,
               weight.narrow(1, 0, d),
               weight.narrow(1, d, d)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> index_demux_fwd(
    const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& ln_weight, const at::Tensor& ln_bias, int64_t num_instances, double eps,
    c10::string_view gather, const std::optional<at::Tensor>& index) {
  constexpr const char* op = "muxkernels::index_demux_fwd_cpu: ";
  const Terms t = check_terms(op, hidden, weight, num_instances, gather);
  check_float_tensor(op, "bias", bias, hidden.scalar_type(), 1);
  TORCH_CHECK(bias.size(0) == t.d, op, "bias must have shape (", t.d, "), got ", bias.sizes());
  // mm on the prefix rows copied out (at::matmul would batch a 3-D strided view, 2.6x
  // slower at B'=8, L'=131, d=768)
  const at::Tensor a =
      at::mm(t.prefix.reshape({-1, t.d}), t.w_p.t()).view({hidden.size(0), t.n, t.d});
  const at::Tensor c = at::addmm(bias, t.rows.reshape({-1, t.d}), t.w_h.t())
                           .view({hidden.size(0), t.rows.size(1), t.d});
  at::Tensor u = demux_gather_fwd(a, c, ln_weight, ln_bias, eps, gather, index, 0,
                                  hidden.scalar_type());
  return {u, a, c};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> index_demux_bwd(
    const at::Tensor& grad_u, const at::Tensor& hidden, const at::Tensor& weight,
    const at::Tensor& a, const at::Tensor& c, const at::Tensor& ln_weight,
    const at::Tensor& ln_bias, int64_t num_instances, double eps, c10::string_view gather,
    const std::optional<at::Tensor>& index) {
  constexpr const char* op = "muxkernels::index_demux_bwd_cpu: ";
  const Terms t = check_terms(op, hidden, weight, num_instances, gather);
  TORCH_CHECK(a.sizes() == at::IntArrayRef({hidden.size(0), t.n, t.d}) &&
                  c.sizes() == at::IntArrayRef({hidden.size(0), t.rows.size(1), t.d}),
              op, "a and c must be the forward's terms, got shapes ", a.sizes(), " and ",
              c.sizes());
  const auto [da, dc, d_ln_weight, d_ln_bias] =
      demux_gather_bwd(grad_u, a, c, ln_weight, ln_bias, eps, gather, index, 0);
  const at::Tensor da2 = da.view({-1, t.d});
  const at::Tensor dc2 = dc.view({-1, t.d});
  // d_hidden: dc W_h on the rows c covers, plus da W_p on the prefix rows
  at::Tensor d_hidden;
  const at::Tensor d_rows = at::mm(dc2, t.w_h).view(t.rows.sizes());
  if (t.sequence) {
    d_hidden = at::zeros_like(hidden);
    d_hidden.narrow(1, t.n, 1).copy_(d_rows);
  } else {
    d_hidden = d_rows;
  }
  d_hidden.narrow(1, 0, t.n).add_(at::mm(da2, t.w_p).view(da.sizes()));
  const at::Tensor d_weight = at::cat(
      {at::mm(da2.t(), t.prefix.reshape({-1, t.d})), at::mm(dc2.t(), t.rows.reshape({-1, t.d}))},
      1);
  return {d_hidden, d_weight, dc2.sum(0), d_ln_weight, d_ln_bias};
}

// The index_pos demux (design §4): a = k W_kᵀ + b (1, N, d), shared by every group, and
// c = h W_hᵀ (B', L', d; only t = 0 for the sequence gather), W = [W_k | W_h].
Terms check_pos_terms(const char* op, const at::Tensor& hidden, const at::Tensor& keys,
                      const at::Tensor& weight, c10::string_view gather) {
  const at::ScalarType dtype = hidden.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              "hidden must be float32 or float64, got ", dtype);
  check_float_tensor(op, "hidden", hidden, dtype, 3);
  check_float_tensor(op, "keys", keys, dtype, 2);
  check_float_tensor(op, "weight", weight, dtype, 2);
  const int64_t d = hidden.size(2);
  TORCH_CHECK(keys.size(1) == d && keys.size(0) >= 1, op, "keys must have shape (N, ", d,
              "), N >= 1, got ", keys.sizes());
  TORCH_CHECK(weight.size(0) == d && weight.size(1) == 2 * d, op, "weight must have shape (", d,
              ", ", 2 * d, "), got ", weight.sizes());
  const bool sequence = gather == "sequence";
  return Terms{keys.size(0),
               d,
               sequence,
               keys,
               sequence ? hidden.narrow(1, 0, 1) : hidden,
               weight.narrow(1, 0, d),
               weight.narrow(1, d, d)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> index_pos_demux_fwd(
    const at::Tensor& hidden, const at::Tensor& keys, const at::Tensor& weight,
    const at::Tensor& bias, const at::Tensor& ln_weight, const at::Tensor& ln_bias, double eps,
    c10::string_view gather, const std::optional<at::Tensor>& index) {
  constexpr const char* op = "muxkernels::index_pos_demux_fwd_cpu: ";
  const Terms t = check_pos_terms(op, hidden, keys, weight, gather);
  check_float_tensor(op, "bias", bias, hidden.scalar_type(), 1);
  TORCH_CHECK(bias.size(0) == t.d, op, "bias must have shape (", t.d, "), got ", bias.sizes());
  const at::Tensor a = at::addmm(bias, keys, t.w_p.t()).unsqueeze(0);
  const at::Tensor c =
      at::mm(t.rows.reshape({-1, t.d}), t.w_h.t()).view({hidden.size(0), t.rows.size(1), t.d});
  at::Tensor u = demux_gather_fwd(a, c, ln_weight, ln_bias, eps, gather, index, 0,
                                  hidden.scalar_type());
  return {u, a, c};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
index_pos_demux_bwd(const at::Tensor& grad_u, const at::Tensor& hidden, const at::Tensor& keys,
                    const at::Tensor& weight, const at::Tensor& a, const at::Tensor& c,
                    const at::Tensor& ln_weight, const at::Tensor& ln_bias, double eps,
                    c10::string_view gather, const std::optional<at::Tensor>& index) {
  constexpr const char* op = "muxkernels::index_pos_demux_bwd_cpu: ";
  const Terms t = check_pos_terms(op, hidden, keys, weight, gather);
  TORCH_CHECK(a.sizes() == at::IntArrayRef({1, t.n, t.d}) &&
                  c.sizes() == at::IntArrayRef({hidden.size(0), t.rows.size(1), t.d}),
              op, "a and c must be the forward's terms, got shapes ", a.sizes(), " and ",
              c.sizes());
  const auto [da, dc, d_ln_weight, d_ln_bias] =
      demux_gather_bwd(grad_u, a, c, ln_weight, ln_bias, eps, gather, index, 0);
  const at::Tensor da2 = da.view({t.n, t.d});
  const at::Tensor dc2 = dc.view({-1, t.d});
  const at::Tensor d_rows = at::mm(dc2, t.w_h).view(t.rows.sizes());
  at::Tensor d_hidden = d_rows;
  if (t.sequence) {
    d_hidden = at::zeros_like(hidden);
    d_hidden.narrow(1, 0, 1).copy_(d_rows);
  }
  const at::Tensor d_weight =
      at::cat({at::mm(da2.t(), keys), at::mm(dc2.t(), t.rows.reshape({-1, t.d}))}, 1);
  return {d_hidden, at::mm(da2, t.w_p), d_weight, da2.sum(0), d_ln_weight, d_ln_bias};
}

}  // namespace
}  // namespace muxkernels::cpu

TORCH_LIBRARY_IMPL(muxkernels, CPU, m) {
  m.impl("index_demux_fwd_cpu", &muxkernels::cpu::index_demux_fwd);
  m.impl("index_demux_bwd_cpu", &muxkernels::cpu::index_demux_bwd);
  m.impl("index_pos_demux_fwd_cpu", &muxkernels::cpu::index_pos_demux_fwd);
  m.impl("index_pos_demux_bwd_cpu", &muxkernels::cpu::index_pos_demux_bwd);
}
