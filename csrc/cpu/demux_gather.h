// The cpu demux core (csrc/cpu/demux_gather.cpp), for the operators built on it.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "cpu/common.h"

namespace muxkernels::cpu {

// u[g,i,t] = LN(gelu(a[g',i] + c[g,t])) by gather; see demux_gather.cpp.
at::Tensor demux_gather_fwd(const at::Tensor& a, const at::Tensor& c,
                            const at::Tensor& ln_weight, const at::Tensor& ln_bias, double eps,
                            c10::string_view gather, const std::optional<at::Tensor>& index,
                            int64_t sequence_position, at::ScalarType out_dtype);

// (da, dc, dγ, dβ) of <grad_u, u>, recomputed from a and c.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> demux_gather_bwd(
    const at::Tensor& grad_u, const at::Tensor& a, const at::Tensor& c,
    const at::Tensor& ln_weight, const at::Tensor& ln_bias, double eps, c10::string_view gather,
    const std::optional<at::Tensor>& index, int64_t sequence_position);

}  // namespace muxkernels::cpu
