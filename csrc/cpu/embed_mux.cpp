// muxkernels::embed_mux_{fwd,bwd}_cpu (schemas: muxkernels/_opdefs.py SCHEMAS): design §1's
// fused front end on the CPU,
//
//   e_i = LN(word[ids_i] + pos[pids_i] + type[tids_i]),   m = (1/N) Σ_i v_i ⊙ e_i,
//   x   = LN(m + pos[mpids] + type[mtids])                (one LayerNorm γ, β for both),
//
// each output row (g, t) built from its N instance rows in cache, where ATen takes a dozen
// calls and writes the (B', N, L, d) embeddings twice. With x̂_i the normalized instance
// rows, m = γ ⊙ Σ_i (v_i/N) ⊙ x̂_i + β ⊙ v̄ (v̄ the mean of the vectors), so a row keeps one
// running sum. The backward recomputes a row's instance rows and returns the gradients of
// the three tables, γ, β and the vectors.
//
// A table's gradient is dense (V, d), as nn.Embedding's is: ATen's zero fill, allocated
// before anything else the backward needs, then every gathered row added into its id's row
// in row order (ATen's embedding backward sorts the ids first). At the bench's sizes the
// fill of the 13 MB word table is most of the backward: allocated after the temporaries,
// the allocator moved it between calls and it missed the cache (2-4x slower fill).
//
// Ids: int64, (B', N, L) for the instances and (B', L) for the mixture, read by their
// strides (so an expanded (L,) vector is not copied), every value checked against its
// table's rows before any work. Data: float32 or float64, every floating tensor in one
// dtype (the cpu backend computes half data in float32 with ATen). Partial sums of γ, β and
// the vectors are kept per fixed chunk of groups and added in chunk order, so results do
// not depend on the number of threads.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

#include "cpu/common.h"

namespace muxkernels::cpu {
namespace {

// Columns of a table gradient per thread (256 bytes of float32).
constexpr int64_t kColumns = 64;
// Instance rows normalized together: each step runs over the block, so the rows'
// reductions (a horizontal sum, then a sqrt and a division) overlap.
constexpr int64_t kBlock = 8;

// An id tensor read by its strides: (B', N, L), or (B', L) with instance stride 0.
struct Ids {
  const int64_t* data;
  int64_t group;
  int64_t instance;
  int64_t position;

  MUX_INLINE int64_t operator()(int64_t g, int64_t i, int64_t t) const {
    return data[g * group + i * instance + t * position];
  }
};

template <typename T>
struct Front {
  MuxSizes s;
  Ids ids, pids, tids, mpids, mtids;
  const T* word;
  const T* pos;
  const T* typ;
  const T* w;        // γ
  const T* b;        // β
  const T* vectors;  // v (N, d)
  const T* scaled;   // v_i / N (N, d)
  const T* b_mean;   // β ⊙ v̄ (d)
  T eps;
};

// ---------------------------------------------------------------------------------------
// Rows.

// Normalizes the instance rows of (g, t), x̂_i into row i - i_base of xhat and rstd_i into
// rstd[i - i_base] (i_base = 0 to keep all N rows, the block's first instance to keep one
// block), and adds Σ_i (v_i/N) ⊙ x̂_i into acc (zeroed by the caller).
template <typename T>
MUX_INLINE void instance_rows(const Front<T>& f, int64_t g, int64_t t, bool keep_all,
                              T* __restrict__ xhat, T* __restrict__ rstd,
                              T* __restrict__ acc) {
  const int64_t d = f.s.d;
  for (int64_t i0 = 0; i0 < f.s.n; i0 += kBlock) {
    const int64_t count = std::min(kBlock, f.s.n - i0);
    T* rows[kBlock];
    T mean[kBlock];
    int64_t slot[kBlock];
    for (int64_t j = 0; j < count; ++j) {
      const int64_t i = i0 + j;
      const T* __restrict__ word = f.word + f.ids(g, i, t) * d;
      const T* __restrict__ pos = f.pos + f.pids(g, i, t) * d;
      const T* __restrict__ typ = f.typ + f.tids(g, i, t) * d;
      slot[j] = keep_all ? i : j;
      rows[j] = xhat + slot[j] * d;
      T* __restrict__ row = rows[j];
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t k = 0; k < d; ++k) {
        row[k] = word[k] + pos[k] + typ[k];
        sum += row[k];
      }
      mean[j] = sum / static_cast<T>(d);
    }
    for (int64_t j = 0; j < count; ++j) {
      const T* __restrict__ row = rows[j];
      const T m = mean[j];
      T var = 0;
#pragma omp simd reduction(+ : var)
      for (int64_t k = 0; k < d; ++k) var += (row[k] - m) * (row[k] - m);
      rstd[slot[j]] = T(1) / std::sqrt(var / static_cast<T>(d) + f.eps);
    }
    for (int64_t j = 0; j < count; ++j) {
      T* __restrict__ row = rows[j];
      const T* __restrict__ scaled = f.scaled + (i0 + j) * d;
      const T m = mean[j];
      const T rs = rstd[slot[j]];
#pragma omp simd
      for (int64_t k = 0; k < d; ++k) {
        row[k] = (row[k] - m) * rs;
        acc[k] += scaled[k] * row[k];
      }
    }
  }
}

// The mixture row of (g, t) from acc: s2 = γ ⊙ acc + β ⊙ v̄ + pos[mpid] + type[mtid],
// normalized into x̂2 (written to xhat2); returns its rstd.
template <typename T>
MUX_INLINE T mixed_row(const Front<T>& f, int64_t g, int64_t t, const T* __restrict__ acc,
                       T* __restrict__ xhat2) {
  const int64_t d = f.s.d;
  const T* __restrict__ pos = f.pos + f.mpids(g, 0, t) * d;
  const T* __restrict__ typ = f.typ + f.mtids(g, 0, t) * d;
  const T* __restrict__ w = f.w;
  const T* __restrict__ b_mean = f.b_mean;
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t k = 0; k < d; ++k) {
    xhat2[k] = w[k] * acc[k] + b_mean[k] + pos[k] + typ[k];
    sum += xhat2[k];
  }
  const T mean = sum / static_cast<T>(d);
  T var = 0;
#pragma omp simd reduction(+ : var)
  for (int64_t k = 0; k < d; ++k) var += (xhat2[k] - mean) * (xhat2[k] - mean);
  const T rstd = T(1) / std::sqrt(var / static_cast<T>(d) + f.eps);
#pragma omp simd
  for (int64_t k = 0; k < d; ++k) xhat2[k] = (xhat2[k] - mean) * rstd;
  return rstd;
}

// x for groups [g0, g1). scratch: (kBlock + 1)·d + kBlock.
template <typename T>
MUX_INLINE void forward_groups(const Front<T>& f, T* __restrict__ out, T* __restrict__ scratch,
                               int64_t g0, int64_t g1) {
  const int64_t d = f.s.d;
  T* xhat = scratch;
  T* acc = scratch + kBlock * d;
  T* rstd = acc + d;
  const T* __restrict__ w = f.w;
  const T* __restrict__ b = f.b;
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t t = 0; t < f.s.length; ++t) {
      std::fill(acc, acc + d, T(0));
      instance_rows(f, g, t, /*keep_all=*/false, xhat, rstd, acc);
      T* __restrict__ x = out + (g * f.s.length + t) * d;
      mixed_row(f, g, t, acc, x);
#pragma omp simd
      for (int64_t k = 0; k < d; ++k) x[k] = x[k] * w[k] + b[k];
    }
  }
}

// The gradients of groups [g0, g1): d/ds1 into ds1 (B', N, L, d) and d/ds2 into ds2 (B', L,
// d), the pre-LayerNorm rows the tables' gradients gather; dγ, dβ and dv added into the
// chunk's partials. scratch: (N + 2)·d + N.
template <typename T>
MUX_INLINE void backward_groups(const Front<T>& f, const T* __restrict__ grad_x,
                                T* __restrict__ ds1, T* __restrict__ ds2, T* __restrict__ dw,
                                T* __restrict__ db, T* __restrict__ dv, T* __restrict__ scratch,
                                int64_t g0, int64_t g1) {
  const int64_t d = f.s.d;
  const int64_t n = f.s.n;
  const int64_t length = f.s.length;
  const T inv_d = T(1) / static_cast<T>(d);
  const T inv_n = T(1) / static_cast<T>(n);
  T* xhat = scratch;  // N rows
  T* acc = xhat + n * d;
  T* xhat2 = acc + d;
  T* rstd = xhat2 + d;  // N
  const T* __restrict__ w = f.w;
  const T* __restrict__ b = f.b;
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t t = 0; t < length; ++t) {
      std::fill(acc, acc + d, T(0));
      instance_rows(f, g, t, /*keep_all=*/true, xhat, rstd, acc);
      const T rstd2 = mixed_row(f, g, t, acc, xhat2);
      const T* __restrict__ gx = grad_x + (g * length + t) * d;
      T* __restrict__ d2 = ds2 + (g * length + t) * d;
      T sum_g = 0;
      T sum_gx = 0;
#pragma omp simd reduction(+ : sum_g, sum_gx)
      for (int64_t k = 0; k < d; ++k) {
        const T gw = gx[k] * w[k];
        sum_g += gw;
        sum_gx += gw * xhat2[k];
        dw[k] += gx[k] * xhat2[k];
        db[k] += gx[k];
      }
#pragma omp simd
      for (int64_t k = 0; k < d; ++k) {
        d2[k] = rstd2 * (gx[k] * w[k] - sum_g * inv_d - xhat2[k] * sum_gx * inv_d);
      }
      for (int64_t i = 0; i < n; ++i) {
        const T* __restrict__ xh = xhat + i * d;
        const T* __restrict__ scaled = f.scaled + i * d;
        T* __restrict__ dvi = dv + i * d;
        T* __restrict__ d1 = ds1 + ((g * n + i) * length + t) * d;
        T sum_e = 0;
        T sum_ex = 0;
#pragma omp simd reduction(+ : sum_e, sum_ex)
        for (int64_t k = 0; k < d; ++k) {
          const T de = scaled[k] * d2[k];  // d/de_i
          dvi[k] += d2[k] * (xh[k] * w[k] + b[k]) * inv_n;
          dw[k] += de * xh[k];
          db[k] += de;
          const T gw = de * w[k];
          sum_e += gw;
          sum_ex += gw * xh[k];
          d1[k] = gw;
        }
        const T rs = rstd[i];
#pragma omp simd
        for (int64_t k = 0; k < d; ++k) {
          d1[k] = rs * (d1[k] - sum_e * inv_d - xh[k] * sum_ex * inv_d);
        }
      }
    }
  }
}

MUX_ROW_CLONES void forward_groups_f32(const Front<float>& f, float* out, float* scratch,
                                       int64_t g0, int64_t g1) {
  forward_groups(f, out, scratch, g0, g1);
}

MUX_ROW_CLONES void backward_groups_f32(const Front<float>& f, const float* grad_x, float* ds1,
                                        float* ds2, float* dw, float* db, float* dv,
                                        float* scratch, int64_t g0, int64_t g1) {
  backward_groups(f, grad_x, ds1, ds2, dw, db, dv, scratch, g0, g1);
}

void run_forward(const Front<float>& f, float* out, float* scratch, int64_t g0, int64_t g1) {
  forward_groups_f32(f, out, scratch, g0, g1);
}

void run_forward(const Front<double>& f, double* out, double* scratch, int64_t g0,
                 int64_t g1) {
  forward_groups(f, out, scratch, g0, g1);
}

void run_backward(const Front<float>& f, const float* grad_x, float* ds1, float* ds2,
                  float* dw, float* db, float* dv, float* scratch, int64_t g0, int64_t g1) {
  backward_groups_f32(f, grad_x, ds1, ds2, dw, db, dv, scratch, g0, g1);
}

void run_backward(const Front<double>& f, const double* grad_x, double* ds1, double* ds2,
                  double* dw, double* db, double* dv, double* scratch, int64_t g0,
                  int64_t g1) {
  backward_groups(f, grad_x, ds1, ds2, dw, db, dv, scratch, g0, g1);
}

// Groups per chunk: about 2^16 instance-row elements (at least one group).
int64_t groups_per_chunk(const MuxSizes& s) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, s.n * s.length * s.d));
}

// ---------------------------------------------------------------------------------------
// Table gradients.

// Gradient rows gathered by one id tensor: row (g, i, t) of `rows` ((B', instances, L, d))
// is added into the table row ids(g, i, t).
template <typename T>
struct Gathered {
  Ids ids;
  int64_t instances;  // N for the instances' ids, 1 for the mixture's
  const T* rows;
};

// Adds the gathered rows of `sources` into grad (a table's zeroed (V, d) gradient): row r
// gets the gathered rows whose id is r, in the sources' order and then row order (each
// thread a block of columns, so the order does not depend on the number of threads).
template <typename T>
void add_gathered(at::Tensor& grad, const MuxSizes& s, const std::vector<Gathered<T>>& sources) {
  const int64_t d = s.d;
  T* out = grad.mutable_data_ptr<T>();
  at::parallel_for(0, d, kColumns, [&](int64_t k0, int64_t k1) {
    for (const Gathered<T>& src : sources) {
      const T* row = src.rows;
      for (int64_t g = 0; g < s.groups; ++g)
        for (int64_t i = 0; i < src.instances; ++i)
          for (int64_t t = 0; t < s.length; ++t, row += d) {
            T* __restrict__ o = out + src.ids(g, i, t) * d;
            const T* __restrict__ x = row;
#pragma omp simd
            for (int64_t k = k0; k < k1; ++k) o[k] += x[k];
          }
    }
  });
}

// ---------------------------------------------------------------------------------------
// The operators: argument checks (one line naming the argument), then the work.

struct Tables {
  const at::Tensor& word;
  const at::Tensor& pos;
  const at::Tensor& typ;
};

Ids check_ids(const char* op, const char* name, const at::Tensor& ids, const MuxSizes& s,
              bool mixed, int64_t rows, const char* table) {
  TORCH_CHECK(ids.device().is_cpu() && ids.scalar_type() == at::kLong, op, name,
              " must be an int64 CPU tensor, got ", ids.scalar_type(), " on ", ids.device());
  const std::vector<int64_t> shape =
      mixed ? std::vector<int64_t>{s.groups, s.length}
            : std::vector<int64_t>{s.groups, s.n, s.length};
  TORCH_CHECK(ids.sizes() == at::IntArrayRef(shape), op, name, " must have shape ",
              at::IntArrayRef(shape), ", got ", ids.sizes());
  const Ids read = mixed ? Ids{ids.const_data_ptr<int64_t>(), ids.stride(0), 0, ids.stride(1)}
                         : Ids{ids.const_data_ptr<int64_t>(), ids.stride(0), ids.stride(1),
                               ids.stride(2)};
  for (int64_t g = 0; g < s.groups; ++g)
    for (int64_t i = 0; i < (mixed ? 1 : s.n); ++i)
      for (int64_t t = 0; t < s.length; ++t) {
        const int64_t id = read(g, i, t);
        TORCH_CHECK(id >= 0 && id < rows, op, name, " values must be in [0, ", rows, ") (", table,
                    " has ", rows, " rows), got ", id);
      }
  return read;
}

// Checks every argument and returns the problem (its `scaled` and `b_mean` are set by
// Mixing).
template <typename T>
Front<T> check_args(const char* op, const at::Tensor& input_ids, const Tables& tables,
                    const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                    const at::Tensor& vectors, const at::Tensor& position_ids,
                    const at::Tensor& token_type_ids, const at::Tensor& mixed_position_ids,
                    const at::Tensor& mixed_token_type_ids, double eps) {
  const at::ScalarType dtype = tables.word.scalar_type();
  check_float_tensor(op, "word_embeddings", tables.word, dtype, 2);
  check_float_tensor(op, "position_embeddings", tables.pos, dtype, 2);
  check_float_tensor(op, "token_type_embeddings", tables.typ, dtype, 2);
  check_float_tensor(op, "ln_weight", ln_weight, dtype, 1);
  check_float_tensor(op, "ln_bias", ln_bias, dtype, 1);
  check_float_tensor(op, "vectors", vectors, dtype, 2);
  TORCH_CHECK(input_ids.dim() == 3, op, "input_ids must have shape (B', N, L), got ",
              input_ids.sizes());
  const MuxSizes s{input_ids.size(0), input_ids.size(1), input_ids.size(2), tables.word.size(1)};
  TORCH_CHECK(s.d > 0, op, "word_embeddings must have d >= 1 columns, got ", tables.word.sizes());
  TORCH_CHECK(tables.pos.size(1) == s.d && tables.typ.size(1) == s.d, op,
              "position_embeddings and token_type_embeddings must have d = ", s.d,
              " columns, got ", tables.pos.sizes(), " and ", tables.typ.sizes());
  TORCH_CHECK(ln_weight.size(0) == s.d && ln_bias.size(0) == s.d, op,
              "ln_weight and ln_bias must have shape (", s.d, "), got ", ln_weight.sizes(),
              " and ", ln_bias.sizes());
  TORCH_CHECK(vectors.size(0) == s.n && vectors.size(1) == s.d, op,
              "vectors must have shape (N, d) = (", s.n, ", ", s.d, "), got ", vectors.sizes());
  TORCH_CHECK(s.n >= 1, op, "input_ids must have N >= 1 instances, got ", input_ids.sizes());
  TORCH_CHECK(eps > 0.0, op, "eps must be positive, got ", eps);
  const int64_t word_rows = tables.word.size(0);
  const int64_t pos_rows = tables.pos.size(0);
  const int64_t typ_rows = tables.typ.size(0);
  Front<T> f{};
  f.s = s;
  f.ids = check_ids(op, "input_ids", input_ids, s, false, word_rows, "word_embeddings");
  f.pids = check_ids(op, "position_ids", position_ids, s, false, pos_rows, "position_embeddings");
  f.tids =
      check_ids(op, "token_type_ids", token_type_ids, s, false, typ_rows, "token_type_embeddings");
  f.mpids = check_ids(op, "mixed_position_ids", mixed_position_ids, s, true, pos_rows,
                      "position_embeddings");
  f.mtids = check_ids(op, "mixed_token_type_ids", mixed_token_type_ids, s, true, typ_rows,
                      "token_type_embeddings");
  f.word = tables.word.const_data_ptr<T>();
  f.pos = tables.pos.const_data_ptr<T>();
  f.typ = tables.typ.const_data_ptr<T>();
  f.w = ln_weight.const_data_ptr<T>();
  f.b = ln_bias.const_data_ptr<T>();
  f.vectors = vectors.const_data_ptr<T>();
  f.eps = static_cast<T>(eps);
  return f;
}

void check_dtype(const char* op, const at::Tensor& word) {
  TORCH_CHECK(word.scalar_type() == at::kFloat || word.scalar_type() == at::kDouble, op,
              "word_embeddings must be float32 or float64 (the cpu backend computes half data "
              "in float32), got ",
              word.scalar_type());
}

// v_i / N (N, d) and β ⊙ v̄ (d) of a problem, for its `scaled` and `b_mean` (computed
// here: a few ATen calls would cost more than the kernel on a small input).
template <typename T>
struct Mixing {
  std::vector<T> scaled;
  std::vector<T> b_mean;

  explicit Mixing(Front<T>& f) : scaled(f.s.n * f.s.d), b_mean(f.s.d, T(0)) {
    const T inv_n = T(1) / static_cast<T>(f.s.n);
    for (int64_t i = 0; i < f.s.n; ++i)
      for (int64_t k = 0; k < f.s.d; ++k) {
        scaled[i * f.s.d + k] = f.vectors[i * f.s.d + k] * inv_n;
        b_mean[k] += scaled[i * f.s.d + k];
      }
    for (int64_t k = 0; k < f.s.d; ++k) b_mean[k] *= f.b[k];
    f.scaled = scaled.data();
    f.b_mean = b_mean.data();
  }
};

at::Tensor embed_mux_fwd(const at::Tensor& input_ids, const at::Tensor& word_embeddings,
                         const at::Tensor& position_embeddings,
                         const at::Tensor& token_type_embeddings, const at::Tensor& ln_weight,
                         const at::Tensor& ln_bias, const at::Tensor& vectors,
                         const at::Tensor& position_ids, const at::Tensor& token_type_ids,
                         const at::Tensor& mixed_position_ids,
                         const at::Tensor& mixed_token_type_ids, double eps) {
  constexpr const char* op = "muxkernels::embed_mux_fwd_cpu: ";
  check_dtype(op, word_embeddings);
  const Tables tables{word_embeddings, position_embeddings, token_type_embeddings};
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(word_embeddings.scalar_type(), "embed_mux_fwd_cpu", [&] {
    Front<scalar_t> f = check_args<scalar_t>(
        op, input_ids, tables, ln_weight, ln_bias, vectors, position_ids, token_type_ids,
        mixed_position_ids, mixed_token_type_ids, eps);
    const Mixing<scalar_t> mixing(f);
    out = at::empty({f.s.groups, f.s.length, f.s.d}, word_embeddings.options());
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, f.s.groups, groups_per_chunk(f.s), [&](int64_t g0, int64_t g1) {
      std::vector<scalar_t> scratch((kBlock + 1) * f.s.d + kBlock);
      run_forward(f, po, scratch.data(), g0, g1);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
embed_mux_bwd(const at::Tensor& grad_x, const at::Tensor& input_ids,
              const at::Tensor& word_embeddings, const at::Tensor& position_embeddings,
              const at::Tensor& token_type_embeddings, const at::Tensor& ln_weight,
              const at::Tensor& ln_bias, const at::Tensor& vectors,
              const at::Tensor& position_ids, const at::Tensor& token_type_ids,
              const at::Tensor& mixed_position_ids, const at::Tensor& mixed_token_type_ids,
              double eps) {
  constexpr const char* op = "muxkernels::embed_mux_bwd_cpu: ";
  check_dtype(op, word_embeddings);
  const Tables tables{word_embeddings, position_embeddings, token_type_embeddings};
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> grads;
  AT_DISPATCH_FLOATING_TYPES(word_embeddings.scalar_type(), "embed_mux_bwd_cpu", [&] {
    Front<scalar_t> f = check_args<scalar_t>(
        op, input_ids, tables, ln_weight, ln_bias, vectors, position_ids, token_type_ids,
        mixed_position_ids, mixed_token_type_ids, eps);
    const MuxSizes& s = f.s;
    const std::vector<int64_t> shape{s.groups, s.length, s.d};
    const at::ScalarType dtype = word_embeddings.scalar_type();
    TORCH_CHECK(grad_x.device().is_cpu() && grad_x.scalar_type() == dtype &&
                    grad_x.sizes() == at::IntArrayRef(shape) && grad_x.is_contiguous(),
                op, "grad_x must be a contiguous ", dtype, " CPU tensor of shape ",
                at::IntArrayRef(shape), ", got ", grad_x.scalar_type(), " ", grad_x.sizes());
    const at::TensorOptions options = word_embeddings.options();
    // The tables' gradients first (see the top of the file).
    at::Tensor d_word = at::zeros(word_embeddings.sizes(), options);
    at::Tensor d_pos = at::zeros(position_embeddings.sizes(), options);
    at::Tensor d_typ = at::zeros(token_type_embeddings.sizes(), options);
    const Mixing<scalar_t> mixing(f);
    const at::Tensor ds1 = at::empty({s.groups, s.n, s.length, s.d}, options);
    const at::Tensor ds2 = at::empty({s.groups, s.length, s.d}, options);
    const int64_t per_chunk = groups_per_chunk(s);
    const int64_t chunks = (s.groups + per_chunk - 1) / per_chunk;
    // chunk c's partial sums of dγ, dβ and dv: (2 + N)·d values at c·(2 + N)·d
    const int64_t stride = (2 + s.n) * s.d;
    std::vector<scalar_t> partials(chunks * stride, scalar_t(0));
    const scalar_t* pg = grad_x.const_data_ptr<scalar_t>();
    scalar_t* p1 = ds1.mutable_data_ptr<scalar_t>();
    scalar_t* p2 = ds2.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      std::vector<scalar_t> scratch((s.n + 2) * s.d + s.n);
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t g0 = c * per_chunk;
        const int64_t g1 = std::min(s.groups, g0 + per_chunk);
        scalar_t* part = partials.data() + c * stride;
        run_backward(f, pg, p1, p2, part, part + s.d, part + 2 * s.d, scratch.data(), g0, g1);
      }
    });
    at::Tensor d_ln_weight = at::empty({s.d}, options);
    at::Tensor d_ln_bias = at::empty({s.d}, options);
    at::Tensor d_vectors = at::empty({s.n, s.d}, options);
    sum_partials(partials, chunks, stride, 0, s.d, d_ln_weight.mutable_data_ptr<scalar_t>());
    sum_partials(partials, chunks, stride, s.d, s.d, d_ln_bias.mutable_data_ptr<scalar_t>());
    sum_partials(partials, chunks, stride, 2 * s.d, s.n * s.d,
                 d_vectors.mutable_data_ptr<scalar_t>());
    const scalar_t* c1 = p1;
    const scalar_t* c2 = p2;
    using G = Gathered<scalar_t>;
    add_gathered<scalar_t>(d_word, s, {G{f.ids, s.n, c1}});
    add_gathered<scalar_t>(d_pos, s, {G{f.pids, s.n, c1}, G{f.mpids, 1, c2}});
    add_gathered<scalar_t>(d_typ, s, {G{f.tids, s.n, c1}, G{f.mtids, 1, c2}});
    grads = {d_word,
             d_pos,
             d_typ,
             d_ln_weight,
             d_ln_bias,
             d_vectors};
  });
  return grads;
}

}  // namespace
}  // namespace muxkernels::cpu

TORCH_LIBRARY_IMPL(muxkernels, CPU, m) {
  m.impl("embed_mux_fwd_cpu", &muxkernels::cpu::embed_mux_fwd);
  m.impl("embed_mux_bwd_cpu", &muxkernels::cpu::embed_mux_bwd);
}
