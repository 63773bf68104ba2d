// muxkernels::hadamard_mux_{fwd,bwd}_cpu (schemas: muxkernels/_opdefs.py SCHEMAS): the
// hadamard multiplexer of design §1 on the CPU,
//
//   x[g, t] = (1/N) Σ_i v_i ⊙ E[g, i, t],
//   dE[g, i, t] = (1/N) v_i ⊙ dx[g, t],   dv_i = (1/N) Σ_{g,t} E[g, i, t] ⊙ dx[g, t],
//
// each output row summed over its N instance rows in one pass (E read once), and the
// backward in one pass over E and dx, where ATen's product, mean and their autograd nodes
// take a call (and a (B', N, L, d) temporary) each. dv is reduced per fixed chunk of groups
// and the chunks added in order, so it does not depend on the number of threads.
//
// Data: float32 or float64, E and v in one dtype; contiguous CPU tensors.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "cpu/common.h"

namespace muxkernels::cpu {
namespace {

// Groups per chunk: about 2^16 elements of E (at least one group).
int64_t groups_per_chunk(const MuxSizes& s) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, s.n * s.length * s.d));
}

// x for groups [g0, g1); scaled = v / N.
template <typename T>
MUX_INLINE void forward_groups(const MuxSizes& s, const T* embeddings, const T* scaled, T* out,
                               int64_t g0, int64_t g1) {
  const int64_t d = s.d;
  for (int64_t g = g0; g < g1; ++g)
    for (int64_t t = 0; t < s.length; ++t) {
      T* __restrict__ x = out + (g * s.length + t) * d;
      for (int64_t i = 0; i < s.n; ++i) {
        const T* __restrict__ e = embeddings + ((g * s.n + i) * s.length + t) * d;
        const T* __restrict__ v = scaled + i * d;
        if (i == 0) {
#pragma omp simd
          for (int64_t k = 0; k < d; ++k) x[k] = v[k] * e[k];
        } else {
#pragma omp simd
          for (int64_t k = 0; k < d; ++k) x[k] += v[k] * e[k];
        }
      }
    }
}

// dE for groups [g0, g1), and Σ E ⊙ dx into dv (the chunk's partial, when given).
template <typename T>
MUX_INLINE void backward_groups(const MuxSizes& s, const T* grad, const T* embeddings,
                                const T* scaled, T* d_embeddings, T* dv, int64_t g0,
                                int64_t g1) {
  const int64_t d = s.d;
  for (int64_t g = g0; g < g1; ++g)
    for (int64_t i = 0; i < s.n; ++i) {
      const T* __restrict__ v = scaled + i * d;
      for (int64_t t = 0; t < s.length; ++t) {
        const int64_t row = ((g * s.n + i) * s.length + t) * d;
        const T* __restrict__ dx = grad + (g * s.length + t) * d;
        T* __restrict__ de = d_embeddings + row;
#pragma omp simd
        for (int64_t k = 0; k < d; ++k) de[k] = v[k] * dx[k];
        if (dv != nullptr) {
          const T* __restrict__ e = embeddings + row;
          T* __restrict__ dvi = dv + i * d;
#pragma omp simd
          for (int64_t k = 0; k < d; ++k) dvi[k] += e[k] * dx[k];
        }
      }
    }
}

MUX_ROW_CLONES void forward_groups_f32(const MuxSizes& s, const float* embeddings,
                                       const float* scaled, float* out, int64_t g0,
                                       int64_t g1) {
  forward_groups(s, embeddings, scaled, out, g0, g1);
}

MUX_ROW_CLONES void backward_groups_f32(const MuxSizes& s, const float* grad,
                                        const float* embeddings, const float* scaled,
                                        float* d_embeddings, float* dv, int64_t g0, int64_t g1) {
  backward_groups(s, grad, embeddings, scaled, d_embeddings, dv, g0, g1);
}

void run_forward(const MuxSizes& s, const float* embeddings, const float* scaled, float* out,
                 int64_t g0, int64_t g1) {
  forward_groups_f32(s, embeddings, scaled, out, g0, g1);
}

void run_forward(const MuxSizes& s, const double* embeddings, const double* scaled, double* out,
                 int64_t g0, int64_t g1) {
  forward_groups(s, embeddings, scaled, out, g0, g1);
}

void run_backward(const MuxSizes& s, const float* grad, const float* embeddings,
                  const float* scaled, float* d_embeddings, float* dv, int64_t g0, int64_t g1) {
  backward_groups_f32(s, grad, embeddings, scaled, d_embeddings, dv, g0, g1);
}

void run_backward(const MuxSizes& s, const double* grad, const double* embeddings,
                  const double* scaled, double* d_embeddings, double* dv, int64_t g0,
                  int64_t g1) {
  backward_groups(s, grad, embeddings, scaled, d_embeddings, dv, g0, g1);
}

// ---------------------------------------------------------------------------------------
// The operators: argument checks (one line naming the argument), then the chunks.

MuxSizes check_args(const char* op, const at::Tensor& embeddings, const at::Tensor& vectors) {
  const at::ScalarType dtype = embeddings.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              "embeddings must be float32 or float64, got ", dtype);
  check_float_tensor(op, "embeddings", embeddings, dtype, 4);
  check_float_tensor(op, "vectors", vectors, dtype, 2);
  const MuxSizes s{embeddings.size(0), embeddings.size(1), embeddings.size(2), embeddings.size(3)};
  TORCH_CHECK(s.n >= 1 && vectors.size(0) == s.n && vectors.size(1) == s.d, op,
              "vectors must have shape (N, d) = (", s.n, ", ", s.d, "), N >= 1, got ",
              vectors.sizes());
  return s;
}

// v / N, in the data's dtype.
template <typename T>
std::vector<T> scaled_vectors(const MuxSizes& s, const at::Tensor& vectors) {
  std::vector<T> scaled(s.n * s.d);
  const T* v = vectors.const_data_ptr<T>();
  const T inv_n = T(1) / static_cast<T>(s.n);
  for (int64_t k = 0; k < s.n * s.d; ++k) scaled[k] = v[k] * inv_n;
  return scaled;
}

at::Tensor hadamard_mux_fwd(const at::Tensor& embeddings, const at::Tensor& vectors) {
  constexpr const char* op = "muxkernels::hadamard_mux_fwd_cpu: ";
  const MuxSizes s = check_args(op, embeddings, vectors);
  at::Tensor out = at::empty({s.groups, s.length, s.d}, embeddings.options());
  AT_DISPATCH_FLOATING_TYPES(embeddings.scalar_type(), "hadamard_mux_fwd_cpu", [&] {
    const std::vector<scalar_t> scaled = scaled_vectors<scalar_t>(s, vectors);
    const scalar_t* pe = embeddings.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, s.groups, groups_per_chunk(s), [&](int64_t g0, int64_t g1) {
      run_forward(s, pe, scaled.data(), po, g0, g1);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> hadamard_mux_bwd(const at::Tensor& grad_out,
                                                    const at::Tensor& embeddings,
                                                    const at::Tensor& vectors,
                                                    bool vectors_grad) {
  constexpr const char* op = "muxkernels::hadamard_mux_bwd_cpu: ";
  const MuxSizes s = check_args(op, embeddings, vectors);
  const std::vector<int64_t> shape{s.groups, s.length, s.d};
  TORCH_CHECK(grad_out.device().is_cpu() && grad_out.scalar_type() == embeddings.scalar_type() &&
                  grad_out.sizes() == at::IntArrayRef(shape) && grad_out.is_contiguous(),
              op, "grad_out must be a contiguous ", embeddings.scalar_type(),
              " CPU tensor of shape ", at::IntArrayRef(shape), ", got ", grad_out.scalar_type(),
              " ", grad_out.sizes());
  const int64_t per_chunk = groups_per_chunk(s);
  const int64_t chunks = (s.groups + per_chunk - 1) / per_chunk;
  at::Tensor d_embeddings = at::empty_like(embeddings);
  at::Tensor d_vectors = vectors_grad ? at::empty_like(vectors) : at::empty({0}, vectors.options());
  AT_DISPATCH_FLOATING_TYPES(embeddings.scalar_type(), "hadamard_mux_bwd_cpu", [&] {
    const std::vector<scalar_t> scaled = scaled_vectors<scalar_t>(s, vectors);
    // chunk k's partial Σ E ⊙ dx, (N, d) at k·N·d
    std::vector<scalar_t> partials(vectors_grad ? chunks * s.n * s.d : 0, scalar_t(0));
    const scalar_t* pg = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* pe = embeddings.const_data_ptr<scalar_t>();
    scalar_t* pd = d_embeddings.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t g0 = k * per_chunk;
        const int64_t g1 = std::min(s.groups, g0 + per_chunk);
        scalar_t* dv = vectors_grad ? partials.data() + k * s.n * s.d : nullptr;
        run_backward(s, pg, pe, scaled.data(), pd, dv, g0, g1);
      }
    });
    if (vectors_grad) {
      scalar_t* out = d_vectors.mutable_data_ptr<scalar_t>();
      sum_partials(partials, chunks, s.n * s.d, 0, s.n * s.d, out);
      const auto inv_n = scalar_t(1) / static_cast<scalar_t>(s.n);
      for (int64_t j = 0; j < s.n * s.d; ++j) out[j] *= inv_n;
    }
  });
  return {d_embeddings, d_vectors};
}

}  // namespace
}  // namespace muxkernels::cpu

TORCH_LIBRARY_IMPL(muxkernels, CPU, m) {
  m.impl("hadamard_mux_fwd_cpu", &muxkernels::cpu::hadamard_mux_fwd);
  m.impl("hadamard_mux_bwd_cpu", &muxkernels::cpu::hadamard_mux_bwd);
}
