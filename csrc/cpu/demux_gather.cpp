// The cpu backend's demux core, muxkernels::demux_gather_{fwd,bwd}_cpu (schemas:
// muxkernels/_opdefs.py SCHEMAS, defined from Python by muxkernels/_cpu/_compiled.py):
//
//   u[g,i,t] = LN(gelu(a[g',i] + c[g,t])),  g' = g, or 0 when a is broadcast (a.size(0) == 1),
//
// gathered "token" (B', N, L', d), "sequence" at t = sequence_position (B', N, d) or
// "selected" with i = index[g,t] (B', L', d). Each output row is computed in cache (the
// sum, gelu and LayerNorm), where ATen needs four calls and three intermediate tensors;
// the backward recomputes the row from a and c and adds its gradients into da and dc in
// the same pass (design §3).
//
// Data: float32 or float64, every floating input and the output in one dtype (the cpu
// backend computes half data in float32); accumulation in that dtype. float32 uses gelu
// with erf from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, the formula of ATen's
// vectorized CPU gelu) and a Cephes-style exp, written so that the compiler vectorizes the
// loops; float64 uses std::erf and std::exp. On x86-64 with GCC the row loops are also
// compiled for AVX2+FMA and picked at load time (target_clones).
//
// Work is split into chunks of whole groups of a fixed size (by element count, not by the
// thread count), each reducing its own partial dγ, dβ (and da when a is broadcast); the
// partials are added in chunk order, so results do not depend on the number of threads.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/demux_gather.h"

namespace muxkernels::cpu {
namespace {

enum class Gather { kToken, kSequence, kSelected };

// ---------------------------------------------------------------------------------------
// gelu(p) = p Φ(p) and gelu'(p) = Φ(p) + p φ(p), sharing e = exp(-p²/2).

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

MUX_INLINE float exp_f32(float x) {
  // e^x = 2^n e^r, n = round(x log2 e), |r| <= ln2 / 2; Cephes expf's polynomial.
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  constexpr float kRound = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// Φ(p) (the normal CDF) and φ(p) (its density) of one element.
template <typename T>
struct Normal {
  T cdf;
  T pdf;
};

MUX_INLINE Normal<float> normal(float p) {
  const float e = exp_f32(-0.5f * p * p);
  const float z = std::fabs(p) * static_cast<float>(kInvSqrt2);
  const float t = 1.0f / (1.0f + 0.3275911f * z);
  float y = 1.061405429f;
  y = y * t - 1.453152027f;
  y = y * t + 1.421413741f;
  y = y * t - 0.284496736f;
  y = y * t + 0.254829592f;
  const float erf_abs = 1.0f - y * t * e;  // erf(|p|/√2)
  return {0.5f + 0.5f * (p < 0.0f ? -erf_abs : erf_abs), static_cast<float>(kInvSqrt2Pi) * e};
}

MUX_INLINE Normal<double> normal(double p) {
  return {0.5 * (1.0 + std::erf(p * kInvSqrt2)), kInvSqrt2Pi * std::exp(-0.5 * p * p)};
}

// ---------------------------------------------------------------------------------------
// One row of d elements.

// The gradient of one row: dpre = d/dpre of <du, LN(gelu(a + c))>; adds du·x̂ to dw and du
// to db. xhat and dgelu are scratch rows of d.
template <typename T>
MUX_INLINE void backward_row(const T* __restrict__ a, const T* __restrict__ c,
                             const T* __restrict__ w, const T* __restrict__ du, T eps, int64_t d,
                             T* __restrict__ dpre, T* __restrict__ dw, T* __restrict__ db,
                             T* __restrict__ xhat, T* __restrict__ dgelu) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t k = 0; k < d; ++k) {
    const T p = a[k] + c[k];
    const Normal<T> phi = normal(p);
    xhat[k] = p * phi.cdf;
    dgelu[k] = phi.cdf + p * phi.pdf;
    sum += xhat[k];
  }
  const T mean = sum / static_cast<T>(d);
  T var = 0;
#pragma omp simd reduction(+ : var)
  for (int64_t k = 0; k < d; ++k) var += (xhat[k] - mean) * (xhat[k] - mean);
  const T rstd = T(1) / std::sqrt(var / static_cast<T>(d) + eps);
  T sum_g = 0;
  T sum_gx = 0;
#pragma omp simd reduction(+ : sum_g, sum_gx)
  for (int64_t k = 0; k < d; ++k) {
    xhat[k] = (xhat[k] - mean) * rstd;
    const T g = du[k] * w[k];
    sum_g += g;
    sum_gx += g * xhat[k];
    dw[k] += du[k] * xhat[k];
    db[k] += du[k];
  }
  const T m1 = sum_g / static_cast<T>(d);
  const T m2 = sum_gx / static_cast<T>(d);
#pragma omp simd
  for (int64_t k = 0; k < d; ++k) {
    dpre[k] = rstd * (du[k] * w[k] - m1 - xhat[k] * m2) * dgelu[k];
  }
}

template <typename T>
MUX_INLINE void add_row(T* __restrict__ into, const T* __restrict__ x, int64_t d) {
#pragma omp simd
  for (int64_t k = 0; k < d; ++k) into[k] += x[k];
}

// ---------------------------------------------------------------------------------------
// The rows of a gather.

struct Sizes {
  int64_t groups;     // B'
  int64_t a_groups;   // B' or 1
  int64_t n;          // N
  int64_t positions;  // L'
  int64_t d;
  Gather gather;
  int64_t sequence_position;

  // Output rows per group: N·L' (token), N (sequence), L' (selected).
  int64_t rows_per_group() const {
    return gather == Gather::kToken ? n * positions : gather == Gather::kSequence ? n : positions;
  }
};

// Groups per chunk: about 2^16 output elements (at least one group).
int64_t groups_per_chunk(const Sizes& s) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, s.rows_per_group() * s.d));
}

// The (a row, c row) of output row r of group g.
template <typename T>
MUX_INLINE void row_operands(const Sizes& s, const T* a, const T* c, const int64_t* index,
                             int64_t g, int64_t r, const T** a_row, const T** c_row,
                             int64_t* instance, int64_t* position) {
  int64_t i;
  int64_t t;
  if (s.gather == Gather::kToken) {
    i = r / s.positions;
    t = r % s.positions;
  } else if (s.gather == Gather::kSequence) {
    i = r;
    t = s.sequence_position;
  } else {
    t = r;
    i = index[g * s.positions + t];
  }
  const int64_t ga = s.a_groups == 1 ? 0 : g;
  *a_row = a + (ga * s.n + i) * s.d;
  *c_row = c + (g * s.positions + t) * s.d;
  *instance = i;
  *position = t;
}

// out = LN(gelu(a + c)) with affine (w, b) for every row of groups [g0, g1), a block of
// rows at a time, each step over the whole block: gelu and its sum, then the variance of
// the centred values, then the normalized affine output. A row's steps wait on its
// reductions (a horizontal sum, then a sqrt and a division); the rows of a block are
// independent, so their chains overlap: at d = 64, 8-row blocks made the forward 1.27x
// faster than one row at a time (B'=2, N=40, L'=57).
template <typename T>
MUX_INLINE void forward_groups(const Sizes& s, const T* a, const T* c, const T* w, const T* b,
                               const int64_t* index, T eps, T* out, int64_t g0, int64_t g1) {
  const int64_t rows = s.rows_per_group();
  const int64_t d = s.d;
  constexpr int64_t kBlock = 8;
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
      const int64_t count = std::min(kBlock, rows - r0);
      T mean[kBlock];
      T rstd[kBlock];
      T* o[kBlock];
      for (int64_t j = 0; j < count; ++j) {
        const T* a_row;
        const T* c_row;
        int64_t i, t;
        row_operands(s, a, c, index, g, r0 + j, &a_row, &c_row, &i, &t);
        o[j] = out + (g * rows + r0 + j) * d;
        T* __restrict__ oj = o[j];
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t k = 0; k < d; ++k) {
          const T p = a_row[k] + c_row[k];
          oj[k] = p * normal(p).cdf;
          sum += oj[k];
        }
        mean[j] = sum / static_cast<T>(d);
      }
      for (int64_t j = 0; j < count; ++j) {
        const T* __restrict__ oj = o[j];
        const T m = mean[j];
        T var = 0;
#pragma omp simd reduction(+ : var)
        for (int64_t k = 0; k < d; ++k) var += (oj[k] - m) * (oj[k] - m);
        rstd[j] = T(1) / std::sqrt(var / static_cast<T>(d) + eps);
      }
      for (int64_t j = 0; j < count; ++j) {
        T* __restrict__ oj = o[j];
        const T m = mean[j];
        const T rs = rstd[j];
#pragma omp simd
        for (int64_t k = 0; k < d; ++k) oj[k] = (oj[k] - m) * rs * w[k] + b[k];
      }
    }
  }
}

// Adds the gradients of groups [g0, g1) into da (a's rows for those groups, or a chunk's
// partial when a is broadcast), dc (zeroed by the caller), dw and db (the chunk's).
template <typename T>
MUX_INLINE void backward_groups(const Sizes& s, const T* grad_u, const T* a, const T* c,
                                const T* w, const int64_t* index, T eps, T* da, T* dc, T* dw,
                                T* db, T* scratch, int64_t g0, int64_t g1) {
  const int64_t rows = s.rows_per_group();
  const int64_t d = s.d;
  T* dpre = scratch;
  T* xhat = scratch + d;
  T* dgelu = scratch + 2 * d;
  for (int64_t g = g0; g < g1; ++g) {
    T* da_group = s.a_groups == 1 ? da : da + g * s.n * d;
    for (int64_t r = 0; r < rows; ++r) {
      const T* a_row;
      const T* c_row;
      int64_t i, t;
      row_operands(s, a, c, index, g, r, &a_row, &c_row, &i, &t);
      backward_row(a_row, c_row, w, grad_u + (g * rows + r) * d, eps, d, dpre, dw, db, xhat,
                   dgelu);
      add_row(da_group + i * d, dpre, d);
      add_row(dc + (g * s.positions + t) * d, dpre, d);
    }
  }
}

MUX_ROW_CLONES void forward_groups_f32(const Sizes& s, const float* a, const float* c,
                                       const float* w, const float* b, const int64_t* index,
                                       float eps, float* out, int64_t g0, int64_t g1) {
  forward_groups(s, a, c, w, b, index, eps, out, g0, g1);
}

MUX_ROW_CLONES void backward_groups_f32(const Sizes& s, const float* grad_u, const float* a,
                                        const float* c, const float* w, const int64_t* index,
                                        float eps, float* da, float* dc, float* dw, float* db,
                                        float* scratch, int64_t g0, int64_t g1) {
  backward_groups(s, grad_u, a, c, w, index, eps, da, dc, dw, db, scratch, g0, g1);
}

void run_forward(const Sizes& s, const float* a, const float* c, const float* w,
                 const float* b, const int64_t* index, float eps, float* out, int64_t g0,
                 int64_t g1) {
  forward_groups_f32(s, a, c, w, b, index, eps, out, g0, g1);
}

void run_forward(const Sizes& s, const double* a, const double* c, const double* w,
                 const double* b, const int64_t* index, double eps, double* out, int64_t g0,
                 int64_t g1) {
  forward_groups(s, a, c, w, b, index, eps, out, g0, g1);
}

void run_backward(const Sizes& s, const float* grad_u, const float* a, const float* c,
                  const float* w, const int64_t* index, float eps, float* da, float* dc,
                  float* dw, float* db, float* scratch, int64_t g0, int64_t g1) {
  backward_groups_f32(s, grad_u, a, c, w, index, eps, da, dc, dw, db, scratch, g0, g1);
}

void run_backward(const Sizes& s, const double* grad_u, const double* a, const double* c,
                  const double* w, const int64_t* index, double eps, double* da, double* dc,
                  double* dw, double* db, double* scratch, int64_t g0, int64_t g1) {
  backward_groups(s, grad_u, a, c, w, index, eps, da, dc, dw, db, scratch, g0, g1);
}

// ---------------------------------------------------------------------------------------
// The operators: argument checks (one line naming the argument), then the chunks.

Gather parse_gather(const char* op, c10::string_view gather) {
  if (gather == "token") return Gather::kToken;
  if (gather == "sequence") return Gather::kSequence;
  TORCH_CHECK(gather == "selected", op, "gather must be \"token\", \"sequence\" or \"selected\", got \"",
              std::string(gather), "\"");
  return Gather::kSelected;
}

Sizes check_args(const char* op, const at::Tensor& a, const at::Tensor& c,
                 const at::Tensor& ln_weight, const at::Tensor& ln_bias, double eps,
                 c10::string_view gather, const std::optional<at::Tensor>& index,
                 int64_t sequence_position) {
  const at::ScalarType dtype = c.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              "c must be float32 or float64 (the cpu backend computes half data in float32), got ",
              dtype);
  check_float_tensor(op, "c", c, dtype, 3);
  check_float_tensor(op, "a", a, dtype, 3);
  check_float_tensor(op, "ln_weight", ln_weight, dtype, 1);
  check_float_tensor(op, "ln_bias", ln_bias, dtype, 1);
  const Sizes s{c.size(0), a.size(0), a.size(1), c.size(1), c.size(2), parse_gather(op, gather),
                sequence_position};
  TORCH_CHECK(s.d > 0 && s.n > 0, op, "a (Ga, N, d) and c (B', L', d) must not be empty, got ",
              a.sizes(), " and ", c.sizes());
  TORCH_CHECK(a.size(2) == s.d && (s.a_groups == s.groups || s.a_groups == 1), op,
              "a must have shape (B' or 1, N, d) = (", s.groups, " or 1, N, ", s.d, "), got ",
              a.sizes());
  TORCH_CHECK(ln_weight.size(0) == s.d && ln_bias.size(0) == s.d, op,
              "ln_weight and ln_bias must have shape (", s.d, "), got ", ln_weight.sizes(),
              " and ", ln_bias.sizes());
  TORCH_CHECK(eps > 0.0, op, "eps must be positive, got ", eps);
  if (s.gather == Gather::kSequence) {
    TORCH_CHECK(sequence_position >= 0 && sequence_position < s.positions, op,
                "sequence_position must be in [0, ", s.positions, "), got ", sequence_position);
  }
  if (s.gather == Gather::kSelected) {
    TORCH_CHECK(index.has_value(), op, "index is required for gather \"selected\"");
    const at::Tensor& ids = *index;
    TORCH_CHECK(ids.device().is_cpu() && ids.scalar_type() == at::kLong && ids.is_contiguous(),
                op, "index must be a contiguous int64 CPU tensor, got ", ids.scalar_type(),
                " on ", ids.device());
    TORCH_CHECK(ids.sizes() == at::IntArrayRef({s.groups, s.positions}), op,
                "index must have shape (B', L') = (", s.groups, ", ", s.positions, "), got ",
                ids.sizes());
    const int64_t* p = ids.const_data_ptr<int64_t>();
    for (int64_t k = 0; k < ids.numel(); ++k) {
      TORCH_CHECK(p[k] >= 0 && p[k] < s.n, op, "index values must be in [0, N) = [0, ", s.n,
                  "), got ", p[k]);
    }
  }
  return s;
}

std::vector<int64_t> output_shape(const Sizes& s) {
  if (s.gather == Gather::kToken) return {s.groups, s.n, s.positions, s.d};
  if (s.gather == Gather::kSequence) return {s.groups, s.n, s.d};
  return {s.groups, s.positions, s.d};
}

const int64_t* index_data(const Sizes& s, const std::optional<at::Tensor>& index) {
  return s.gather == Gather::kSelected ? index->const_data_ptr<int64_t>() : nullptr;
}

}  // namespace

at::Tensor demux_gather_fwd(const at::Tensor& a, const at::Tensor& c,
                            const at::Tensor& ln_weight, const at::Tensor& ln_bias, double eps,
                            c10::string_view gather, const std::optional<at::Tensor>& index,
                            int64_t sequence_position, at::ScalarType out_dtype) {
  constexpr const char* op = "muxkernels::demux_gather_fwd_cpu: ";
  const Sizes s =
      check_args(op, a, c, ln_weight, ln_bias, eps, gather, index, sequence_position);
  TORCH_CHECK(out_dtype == c.scalar_type(), op, "out_dtype must be the data's dtype ",
              c.scalar_type(), ", got ", out_dtype);
  at::Tensor out = at::empty(output_shape(s), c.options());
  const int64_t* ids = index_data(s, index);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "demux_gather_fwd_cpu", [&] {
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pc = c.const_data_ptr<scalar_t>();
    const scalar_t* pw = ln_weight.const_data_ptr<scalar_t>();
    const scalar_t* pb = ln_bias.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const auto e = static_cast<scalar_t>(eps);
    at::parallel_for(0, s.groups, groups_per_chunk(s), [&](int64_t g0, int64_t g1) {
      run_forward(s, pa, pc, pw, pb, ids, e, po, g0, g1);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> demux_gather_bwd(
    const at::Tensor& grad_u, const at::Tensor& a, const at::Tensor& c,
    const at::Tensor& ln_weight, const at::Tensor& ln_bias, double eps, c10::string_view gather,
    const std::optional<at::Tensor>& index, int64_t sequence_position) {
  constexpr const char* op = "muxkernels::demux_gather_bwd_cpu: ";
  const Sizes s =
      check_args(op, a, c, ln_weight, ln_bias, eps, gather, index, sequence_position);
  const std::vector<int64_t> shape = output_shape(s);
  TORCH_CHECK(grad_u.device().is_cpu() && grad_u.scalar_type() == c.scalar_type() &&
                  grad_u.sizes() == at::IntArrayRef(shape) && grad_u.is_contiguous(),
              op, "grad_u must be a contiguous ", c.scalar_type(), " CPU tensor of shape ",
              at::IntArrayRef(shape), ", got ", grad_u.scalar_type(), " ", grad_u.sizes());
  const int64_t per_chunk = groups_per_chunk(s);
  const int64_t chunks = (s.groups + per_chunk - 1) / per_chunk;
  const bool broadcast = s.a_groups == 1;
  // Chunk k's partial sums of dγ and dβ, and of da when a is broadcast over the groups.
  at::Tensor dw_partial = at::zeros({chunks, s.d}, c.options());
  at::Tensor db_partial = at::zeros({chunks, s.d}, c.options());
  at::Tensor da = broadcast ? at::zeros({chunks, s.n, s.d}, c.options()) : at::zeros_like(a);
  at::Tensor dc = at::zeros_like(c);
  const int64_t* ids = index_data(s, index);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "demux_gather_bwd_cpu", [&] {
    const scalar_t* pg = grad_u.const_data_ptr<scalar_t>();
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pc = c.const_data_ptr<scalar_t>();
    const scalar_t* pw = ln_weight.const_data_ptr<scalar_t>();
    scalar_t* pdw = dw_partial.mutable_data_ptr<scalar_t>();
    scalar_t* pdb = db_partial.mutable_data_ptr<scalar_t>();
    scalar_t* pda = da.mutable_data_ptr<scalar_t>();
    scalar_t* pdc = dc.mutable_data_ptr<scalar_t>();
    const auto e = static_cast<scalar_t>(eps);
    at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
      std::vector<scalar_t> scratch(3 * s.d);
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t g0 = k * per_chunk;
        const int64_t g1 = std::min(s.groups, g0 + per_chunk);
        scalar_t* chunk_da = broadcast ? pda + k * s.n * s.d : pda;
        run_backward(s, pg, pa, pc, pw, ids, e, chunk_da, pdc, pdw + k * s.d, pdb + k * s.d,
                     scratch.data(), g0, g1);
      }
    });
  });

  if (broadcast && chunks > 1) da = da.sum(0, /*keepdim=*/true);
  return {da, dc, dw_partial.sum(0), db_partial.sum(0)};
}

}  // namespace muxkernels::cpu

TORCH_LIBRARY_IMPL(muxkernels, CPU, m) {
  m.impl("demux_gather_fwd_cpu", &muxkernels::cpu::demux_gather_fwd);
  m.impl("demux_gather_bwd_cpu", &muxkernels::cpu::demux_gather_bwd);
}
