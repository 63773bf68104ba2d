// muxkernels::lowrank_ortho_mux_{fwd,bwd}_cpu (schemas: muxkernels/_opdefs.py SCHEMAS): the
// low-rank matrix multiplexer of design §1 on the CPU, with c = d // N, W = N·c, S_i the
// columns [i·c, (i+1)·c) and s = N^(-1/2):
//
//   z[g, t, S_i] = E[g, i, t] · H[:, S_i]       x[g, t] = s · z[g, t] · U[:, :W]ᵀ
//   dz = s · dx · U[:, :W]                      dE[g, i, t] = dz[g, t, S_i] · H[:, S_i]ᵀ
//   dU[:, :W] = s · Σ_{g,t} dx[g, t]ᵀ z[g, t]   dH[:, S_i] = Σ_{g,t} E[g, i, t]ᵀ dz[g, t, S_i]
//
// (dU and dH are zero in the columns past W; z is recomputed in the backward). Each product
// is a BLAS GEMM on blocks of E, U, H, z and dE read and written in place (csrc/cpu/blas.h),
// where the ATen form copies E into instance-major order and z back, and pays the
// dispatcher for each of its calls. The sums over groups (dH) run in group order.
//
// Data: float32 or float64, E, U and H in one dtype; E contiguous, U and H with contiguous
// rows or columns (any other layout is copied).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>

#include "cpu/blas.h"
#include "cpu/common.h"

namespace muxkernels::cpu {
namespace {

struct Sizes : MuxSizes {
  int64_t c;  // d // N, the columns of U and H per instance
  int64_t width() const { return n * c; }
  int64_t rows() const { return groups * length; }
};

// A block of a factor as a gemm operand: data, row stride, and whether gemm reads it
// transposed.
template <typename T>
struct Operand {
  const T* data;
  int64_t ld;
  bool trans;
};

// The block m[r0:, c0:] of a (d, d) factor as an operand (its transpose if `transpose`).
// A column-major factor (``lowrank_factors`` returns transposes) is the row-major storage
// of its transpose, so its blocks are read with the opposite flag and no copy.
template <typename T>
Operand<T> factor_block(const at::Tensor& m, int64_t r0, int64_t c0, bool transpose) {
  const T* data = m.const_data_ptr<T>();
  if (m.stride(1) == 1) return {data + r0 * m.stride(0) + c0, m.stride(0), transpose};
  return {data + r0 + c0 * m.stride(1), m.stride(1), !transpose};
}

// (g, i) blocks per task of at::parallel_for: about 2^18 multiply-adds (at least one block).
int64_t blocks_per_task(const Sizes& s) {
  return std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, s.length * s.d * s.c));
}

// z[g, :, S_i] = E[g, i] · H[:, S_i] for every block (g, i); z is (B'·L, W).
template <typename T>
void instance_projections(const Sizes& s, const T* embeddings, const at::Tensor& h, T* z) {
  const int64_t w = s.width();
  at::parallel_for(0, s.groups * s.n, blocks_per_task(s), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t g = b / s.n, i = b % s.n;
      const Operand<T> hi = factor_block<T>(h, 0, i * s.c, false);
      gemm<T>(false, hi.trans, s.length, s.c, s.d, T(1), embeddings + b * s.length * s.d, s.d,
              hi.data, hi.ld, T(0), z + g * s.length * w + i * s.c, w);
    }
  });
}

// A (d, d) factor with contiguous rows or columns: the factor itself, or its contiguous copy.
at::Tensor check_factor(const char* op, const char* name, const at::Tensor& t,
                        at::ScalarType dtype, int64_t d) {
  check_cpu_dtype(op, name, t, dtype);
  TORCH_CHECK(t.dim() == 2 && t.size(0) == d && t.size(1) == d, op, name,
              " must have shape (d, d) = (", d, ", ", d, "), got ", t.sizes());
  const bool rows = t.stride(1) == 1 && t.stride(0) >= d;
  const bool columns = t.stride(0) == 1 && t.stride(1) >= d;
  return rows || columns ? t : t.contiguous();
}

struct Args {
  Sizes sizes;
  at::Tensor u, h;
};

Args check_args(const char* op, const at::Tensor& embeddings, const at::Tensor& u,
                const at::Tensor& h) {
  const at::ScalarType dtype = embeddings.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              "embeddings must be float32 or float64, got ", dtype);
  check_float_tensor(op, "embeddings", embeddings, dtype, 4);
  const int64_t n = embeddings.size(1), d = embeddings.size(3);
  TORCH_CHECK(n >= 1 && d >= n, op, "low-rank transforms need 1 <= N <= d, got N=", n,
              " and d=", d);
  return {{{embeddings.size(0), n, embeddings.size(2), d}, d / n},
          check_factor(op, "u", u, dtype, d),
          check_factor(op, "h", h, dtype, d)};
}

}  // namespace

at::Tensor lowrank_ortho_mux_fwd(const at::Tensor& embeddings, const at::Tensor& u_arg,
                                 const at::Tensor& h_arg) {
  constexpr const char* op = "muxkernels::lowrank_ortho_mux_fwd_cpu: ";
  const auto [s, u, h] = check_args(op, embeddings, u_arg, h_arg);
  at::Tensor out = at::empty({s.groups, s.length, s.d}, embeddings.options());
  at::Tensor z = at::empty({s.rows(), s.width()}, embeddings.options());
  AT_DISPATCH_FLOATING_TYPES(embeddings.scalar_type(), "lowrank_ortho_mux_fwd_cpu", [&] {
    const scalar_t scale = scalar_t(1) / std::sqrt(static_cast<scalar_t>(s.n));
    scalar_t* zp = z.mutable_data_ptr<scalar_t>();
    instance_projections(s, embeddings.const_data_ptr<scalar_t>(), h, zp);
    const Operand<scalar_t> ut = factor_block<scalar_t>(u, 0, 0, true);  // U[:, :W]ᵀ
    gemm<scalar_t>(false, ut.trans, s.rows(), s.d, s.width(), scale, zp, s.width(), ut.data,
                   ut.ld, scalar_t(0), out.mutable_data_ptr<scalar_t>(), s.d);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lowrank_ortho_mux_bwd(
    const at::Tensor& grad_out, const at::Tensor& embeddings, const at::Tensor& u_arg,
    const at::Tensor& h_arg, bool factors_grad) {
  constexpr const char* op = "muxkernels::lowrank_ortho_mux_bwd_cpu: ";
  const auto [s, u, h] = check_args(op, embeddings, u_arg, h_arg);
  check_float_tensor(op, "grad_out", grad_out, embeddings.scalar_type(), 3);
  TORCH_CHECK(grad_out.size(0) == s.groups && grad_out.size(1) == s.length &&
                  grad_out.size(2) == s.d,
              op, "grad_out must have shape (B', L, d) = (", s.groups, ", ", s.length, ", ",
              s.d, "), got ", grad_out.sizes());
  const int64_t w = s.width();
  at::Tensor d_embeddings = at::empty_like(embeddings);
  at::Tensor dz = at::empty({s.rows(), w}, embeddings.options());
  // the columns past W get no gradient (nor any, without rows): zeros there, every other
  // element written below
  auto factor_grad = [&](const at::Tensor& like) {
    if (!factors_grad) return like.new_empty({0});
    return at::empty({s.d, s.d}, like.options()).zero_();
  };
  at::Tensor d_u = factor_grad(u), d_h = factor_grad(h);
  AT_DISPATCH_FLOATING_TYPES(embeddings.scalar_type(), "lowrank_ortho_mux_bwd_cpu", [&] {
    using T = scalar_t;
    const T scale = T(1) / std::sqrt(static_cast<T>(s.n));
    const T* dx = grad_out.const_data_ptr<T>();
    const T* e = embeddings.const_data_ptr<T>();
    T* dzp = dz.mutable_data_ptr<T>();
    const Operand<T> uw = factor_block<T>(u, 0, 0, false);  // U[:, :W]
    gemm<T>(false, uw.trans, s.rows(), w, s.d, scale, dx, s.d, uw.data, uw.ld, T(0), dzp, w);
    T* de = d_embeddings.mutable_data_ptr<T>();
    at::parallel_for(0, s.groups * s.n, blocks_per_task(s), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t g = b / s.n, i = b % s.n;
        const Operand<T> hit = factor_block<T>(h, 0, i * s.c, true);  // H[:, S_i]ᵀ
        gemm<T>(false, hit.trans, s.length, s.d, s.c, T(1), dzp + g * s.length * w + i * s.c,
                w, hit.data, hit.ld, T(0), de + b * s.length * s.d, s.d);
      }
    });
    if (!factors_grad) return;
    at::Tensor z = at::empty({s.rows(), w}, embeddings.options());
    T* zp = z.mutable_data_ptr<T>();
    instance_projections(s, e, h, zp);
    gemm<T>(true, false, s.d, w, s.rows(), scale, dx, s.d, zp, w, T(0),
            d_u.mutable_data_ptr<T>(), s.d);
    T* dh = d_h.mutable_data_ptr<T>();
    at::parallel_for(0, s.n, 1, [&](int64_t i0, int64_t i1) {  // one column block a task
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t g = 0; g < s.groups; ++g)
          gemm<T>(true, false, s.d, s.c, s.length, T(1), e + (g * s.n + i) * s.length * s.d,
                  s.d, dzp + g * s.length * w + i * s.c, w, g == 0 ? T(0) : T(1), dh + i * s.c,
                  s.d);
    });
  });
  return {d_embeddings, d_u, d_h};
}

}  // namespace muxkernels::cpu

TORCH_LIBRARY_IMPL(muxkernels, CPU, m) {
  m.impl("lowrank_ortho_mux_fwd_cpu", &muxkernels::cpu::lowrank_ortho_mux_fwd);
  m.impl("lowrank_ortho_mux_bwd_cpu", &muxkernels::cpu::lowrank_ortho_mux_bwd);
}
