// muxkernels::conv_mux_{fwd,bwd}_cpu (schemas: muxkernels/_opdefs.py SCHEMAS): the image
// multiplexer's convolution modes (design §7) on the CPU,
//
//   x[g, o] = Σ_i Σ_c conv(E[g, i, c], rop[i, o, c])      (K×K kernels, K odd, zero padding
//                                                          K/2: x has E's H×W),
//
// for images E (B', N, C, H, W) and kernels rop (N, C_out, C, K, K). The multiplexers have
// a few channels (MNIST: C = C_out = 1), where ATen's convolution vectorizes over output
// channels: 2.5 GMAC/s on the CPU machine (740 µs at B' = 256, N = 2, 20×20; here 260 µs).
// Here each input plane is copied once into a zero border, and each kernel tap adds the
// whole shifted plane in one vectorized loop. The backward gives dE (the same sums with
// the shifts mirrored) and d_rop (one dot product per kernel tap, partial sums per fixed
// chunk of groups added in order, so results do not depend on the number of threads).
//
// Data: float32 or float64, images and kernels in one dtype; contiguous CPU tensors.

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

struct Sizes {
  int64_t groups;  // B'
  int64_t n;       // N
  int64_t c;       // C
  int64_t out;     // C_out
  int64_t h;
  int64_t w;
  int64_t k;  // K

  int64_t plane() const { return h * w; }
  int64_t pad() const { return k / 2; }
  int64_t wide() const { return w + 2 * pad(); }  // a padded row
  int64_t span() const { return h * wide(); }     // an output plane in padded rows
  // a plane with its zero border, and 2·pad zeros after it (the last taps read them)
  int64_t padded() const { return (h + 2 * pad()) * wide() + 2 * pad(); }
  // offset of kernel rop[i, o, ch]
  int64_t kernel(int64_t i, int64_t o, int64_t ch) const {
    return ((i * out + o) * c + ch) * k * k;
  }
};

// Groups per chunk: about 2^16 multiply-adds (at least one group).
int64_t groups_per_chunk(const Sizes& s) {
  const int64_t per_group = s.n * s.c * s.out * s.k * s.k * s.plane();
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, per_group));
}

// In padded rows (wide() apart) a tap's shift is one offset for the whole plane, so each
// tap is one long loop (H·(W + 2p) elements) where row by row it was H loops of W.

// padded = the plane inside a zero border of pad().
template <typename T>
MUX_INLINE void pad_plane(const Sizes& s, const T* __restrict__ plane, T* __restrict__ padded) {
  std::fill(padded, padded + s.padded(), T(0));
  for (int64_t y = 0; y < s.h; ++y) {
    std::copy_n(plane + y * s.w, s.w, padded + (y + s.pad()) * s.wide() + s.pad());
  }
}

// plane[y, x] = rows[y · wide() + x] for x < W (the columns past W are dropped).
template <typename T>
MUX_INLINE void unpad_rows(const Sizes& s, const T* __restrict__ rows, T* __restrict__ plane) {
  for (int64_t y = 0; y < s.h; ++y) std::copy_n(rows + y * s.wide(), s.w, plane + y * s.w);
}

template <typename T>
MUX_INLINE void add_scaled(int64_t count, T weight, const T* __restrict__ from,
                           T* __restrict__ to) {
#pragma omp simd
  for (int64_t m = 0; m < count; ++m) to[m] += weight * from[m];
}

template <typename T>
MUX_INLINE T dot(int64_t count, const T* __restrict__ a, const T* __restrict__ b) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t m = 0; m < count; ++m) sum += a[m] * b[m];
  return sum;
}

// x for groups [g0, g1). scratch: padded() + C_out·span().
template <typename T>
MUX_INLINE void forward_groups(const Sizes& s, const T* images, const T* rop, T* out,
                               T* scratch, int64_t g0, int64_t g1) {
  T* padded = scratch;
  T* sums = scratch + s.padded();  // C_out planes in padded rows
  for (int64_t g = g0; g < g1; ++g) {
    std::fill(sums, sums + s.out * s.span(), T(0));
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t ch = 0; ch < s.c; ++ch) {
        pad_plane(s, images + ((g * s.n + i) * s.c + ch) * s.plane(), padded);
        for (int64_t o = 0; o < s.out; ++o) {
          const T* kernel = rop + s.kernel(i, o, ch);
          for (int64_t ky = 0; ky < s.k; ++ky)
            for (int64_t kx = 0; kx < s.k; ++kx)
              add_scaled(s.span(), kernel[ky * s.k + kx], padded + ky * s.wide() + kx,
                         sums + o * s.span());
        }
      }
    for (int64_t o = 0; o < s.out; ++o) {
      unpad_rows(s, sums + o * s.span(), out + (g * s.out + o) * s.plane());
    }
  }
}

// dE for groups [g0, g1), and d_rop's partial sums added into d_rop (when given).
// scratch: (C_out + 1)·padded() + span().
template <typename T>
MUX_INLINE void backward_groups(const Sizes& s, const T* grad, const T* images, const T* rop,
                                T* d_images, T* d_rop, T* scratch, int64_t g0, int64_t g1) {
  const int64_t p = s.pad();
  T* d_out = scratch;  // C_out padded planes of grad
  T* padded = d_out + s.out * s.padded();
  T* sums = padded + s.padded();
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t o = 0; o < s.out; ++o) {
      pad_plane(s, grad + (g * s.out + o) * s.plane(), d_out + o * s.padded());
    }
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t ch = 0; ch < s.c; ++ch) {
        const int64_t at = ((g * s.n + i) * s.c + ch) * s.plane();
        if (d_rop != nullptr) pad_plane(s, images + at, padded);
        std::fill(sums, sums + s.span(), T(0));
        for (int64_t o = 0; o < s.out; ++o) {
          const T* kernel = rop + s.kernel(i, o, ch);
          const T* d_o = d_out + o * s.padded();
          for (int64_t ky = 0; ky < s.k; ++ky)
            for (int64_t kx = 0; kx < s.k; ++kx) {
              // x[y, x] took E[y + ky - p, x + kx - p]: dE[y, x] takes grad[y + p - ky,
              // x + p - kx]
              add_scaled(s.span(), kernel[ky * s.k + kx],
                         d_o + (2 * p - ky) * s.wide() + (2 * p - kx), sums);
              if (d_rop != nullptr) {
                // grad in padded rows (zero past column W) against E shifted by the tap
                d_rop[s.kernel(i, o, ch) + ky * s.k + kx] +=
                    dot(s.span(), d_o + p * s.wide() + p, padded + ky * s.wide() + kx);
              }
            }
        }
        unpad_rows(s, sums, d_images + at);
      }
  }
}

MUX_ROW_CLONES void forward_groups_f32(const Sizes& s, const float* images, const float* rop,
                                       float* out, float* scratch, int64_t g0, int64_t g1) {
  forward_groups(s, images, rop, out, scratch, g0, g1);
}

MUX_ROW_CLONES void backward_groups_f32(const Sizes& s, const float* grad, const float* images,
                                        const float* rop, float* d_images, float* d_rop,
                                        float* scratch, int64_t g0, int64_t g1) {
  backward_groups(s, grad, images, rop, d_images, d_rop, scratch, g0, g1);
}

void run_forward(const Sizes& s, const float* images, const float* rop, float* out,
                 float* scratch, int64_t g0, int64_t g1) {
  forward_groups_f32(s, images, rop, out, scratch, g0, g1);
}

void run_forward(const Sizes& s, const double* images, const double* rop, double* out,
                 double* scratch, int64_t g0, int64_t g1) {
  forward_groups(s, images, rop, out, scratch, g0, g1);
}

void run_backward(const Sizes& s, const float* grad, const float* images, const float* rop,
                  float* d_images, float* d_rop, float* scratch, int64_t g0, int64_t g1) {
  backward_groups_f32(s, grad, images, rop, d_images, d_rop, scratch, g0, g1);
}

void run_backward(const Sizes& s, const double* grad, const double* images, const double* rop,
                  double* d_images, double* d_rop, double* scratch, int64_t g0, int64_t g1) {
  backward_groups(s, grad, images, rop, d_images, d_rop, scratch, g0, g1);
}

// ---------------------------------------------------------------------------------------
// The operators: argument checks (one line naming the argument), then the chunks.

Sizes check_args(const char* op, const at::Tensor& images, const at::Tensor& rop) {
  const at::ScalarType dtype = images.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              "images must be float32 or float64, got ", dtype);
  check_float_tensor(op, "images", images, dtype, 5);
  check_float_tensor(op, "rop", rop, dtype, 5);
  const Sizes s{images.size(0), images.size(1), images.size(2), rop.size(1),
                images.size(3), images.size(4), rop.size(3)};
  TORCH_CHECK(rop.size(0) == s.n && rop.size(2) == s.c && rop.size(4) == s.k && s.k % 2 == 1,
              op, "rop must have shape (N, C_out, C, K, K) = (", s.n, ", C_out, ", s.c,
              ", K, K) with K odd, got ", rop.sizes());
  return s;
}

at::Tensor conv_mux_fwd(const at::Tensor& images, const at::Tensor& rop) {
  constexpr const char* op = "muxkernels::conv_mux_fwd_cpu: ";
  const Sizes s = check_args(op, images, rop);
  at::Tensor out = at::empty({s.groups, s.out, s.h, s.w}, images.options());
  AT_DISPATCH_FLOATING_TYPES(images.scalar_type(), "conv_mux_fwd_cpu", [&] {
    const scalar_t* pi = images.const_data_ptr<scalar_t>();
    const scalar_t* pr = rop.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, s.groups, groups_per_chunk(s), [&](int64_t g0, int64_t g1) {
      std::vector<scalar_t> scratch(s.padded() + s.out * s.span());
      run_forward(s, pi, pr, po, scratch.data(), g0, g1);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> conv_mux_bwd(const at::Tensor& grad_out,
                                                const at::Tensor& images, const at::Tensor& rop,
                                                bool rop_grad) {
  constexpr const char* op = "muxkernels::conv_mux_bwd_cpu: ";
  const Sizes s = check_args(op, images, rop);
  const std::vector<int64_t> shape{s.groups, s.out, s.h, s.w};
  TORCH_CHECK(grad_out.device().is_cpu() && grad_out.scalar_type() == images.scalar_type() &&
                  grad_out.sizes() == at::IntArrayRef(shape) && grad_out.is_contiguous(),
              op, "grad_out must be a contiguous ", images.scalar_type(), " CPU tensor of shape ",
              at::IntArrayRef(shape), ", got ", grad_out.scalar_type(), " ", grad_out.sizes());
  const int64_t per_chunk = groups_per_chunk(s);
  const int64_t chunks = (s.groups + per_chunk - 1) / per_chunk;
  at::Tensor d_images = at::empty_like(images);
  // chunk k's partial sums of d_rop
  at::Tensor partials = rop_grad ? at::zeros({chunks, rop.numel()}, rop.options())
                                 : at::empty({0}, rop.options());
  AT_DISPATCH_FLOATING_TYPES(images.scalar_type(), "conv_mux_bwd_cpu", [&] {
    const scalar_t* pg = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* pi = images.const_data_ptr<scalar_t>();
    const scalar_t* pr = rop.const_data_ptr<scalar_t>();
    scalar_t* pd = d_images.mutable_data_ptr<scalar_t>();
    scalar_t* pp = rop_grad ? partials.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
      std::vector<scalar_t> scratch((s.out + 1) * s.padded() + s.span());
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t g0 = k * per_chunk;
        const int64_t g1 = std::min(s.groups, g0 + per_chunk);
        run_backward(s, pg, pi, pr, pd, rop_grad ? pp + k * rop.numel() : nullptr,
                     scratch.data(), g0, g1);
      }
    });
  });
  at::Tensor d_rop = rop_grad ? partials.sum(0).view(rop.sizes()) : at::empty({0}, rop.options());
  return {d_images, d_rop};
}

}  // namespace
}  // namespace muxkernels::cpu

TORCH_LIBRARY_IMPL(muxkernels, CPU, m) {
  m.impl("conv_mux_fwd_cpu", &muxkernels::cpu::conv_mux_fwd);
  m.impl("conv_mux_bwd_cpu", &muxkernels::cpu::conv_mux_bwd);
}
