// The CPU and CUDA implementations of muxkernels::demux_gather_{fwd,bwd}_cuda. The operators
// and their schemas (muxkernels/_opdefs.py SCHEMAS) are defined from Python, by
// muxkernels/_extension.py; this file only registers implementations. The CPU one is written
// with ATen ops, so that the operators can be tested and opcheck-ed without a GPU, and the
// CUDA one uses it too for float64, which has no kernel; otherwise the CUDA one calls the
// plain C++ launcher of the kernel on the current stream.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <iterator>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bindings/checks.h"
#include "bindings/gather_layout.h"
#include "demux_gather_bwd.h"
#include "demux_gather_fwd.h"

namespace muxkernels {
namespace {

using TensorQuad = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// ---------------------------------------------------------------------------
// demux_gather_fwd_cuda(Tensor a, Tensor c, Tensor ln_weight, Tensor ln_bias, float eps,
//     str gather, Tensor? index, int sequence_position, ScalarType out_dtype) -> Tensor
// demux_gather_bwd_cuda(Tensor grad_u, <the same but out_dtype>)
//     -> (da, dc, d_ln_weight, d_ln_bias)
//   The data's dtype is out_dtype (the dtype of u and grad_u); a, c and the LayerNorm
//   parameters have it or are float32 (a and c are, for half data).
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

// The sizes an output dimension of a gather can take, named as in GATHER_OUTPUT_DIMS:
// B' ("groups"), N ("instances"), L' ("positions"), d ("width").
enum class GatherSize { kGroups, kInstances, kPositions, kWidth };

// The output dimensions of each gather, indexed by Gather. Filled once, from
// muxkernels._opdefs.GATHER_OUTPUT_DIMS, by set_gather_output_dims when the module loads.
std::array<std::vector<GatherSize>, 3> gather_output_dims;

std::vector<int64_t> gather_shape(const at::Tensor& a, const at::Tensor& c, Gather gather) {
  const int64_t sizes[] = {c.size(0), a.size(1), c.size(1), c.size(2)};  // by GatherSize
  std::vector<int64_t> shape;
  for (const GatherSize dim : gather_output_dims[static_cast<size_t>(gather)]) {
    shape.push_back(sizes[static_cast<size_t>(dim)]);
  }
  return shape;
}

struct DemuxGatherInputs {
  Gather gather;
  at::Tensor index;  // int64 (B', L') for "selected", else undefined
};

// A tensor of the data (dtype `data`) or float32, on c's device, contiguous.
void check_data_or_f32(const char* op, const char* name, const at::Tensor& t,
                       at::ScalarType data, const at::Tensor& c) {
  TORCH_CHECK(t.scalar_type() == data || t.scalar_type() == at::kFloat, op, name,
              " must have the data's dtype (", data, ") or float32, got ", t.scalar_type());
  check_same_device(op, name, t, "c", c);
  check_contiguous(op, name, t);
}

DemuxGatherInputs check_demux_gather_args(const char* op, const at::Tensor& a,
                                          const at::Tensor& c, const at::Tensor& ln_weight,
                                          const at::Tensor& ln_bias, double eps,
                                          c10::string_view gather,
                                          const std::optional<at::Tensor>& index,
                                          int64_t sequence_position, at::ScalarType data,
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
  TORCH_CHECK(is_kernel_float(data), op, "the data's dtype must be float16, bfloat16, float32 "
              "or float64, got ", data);
  check_data(op, "c", c, device_type);
  check_data_or_f32(op, "c", c, data, c);
  check_data_or_f32(op, "a", a, data, c);
  TORCH_CHECK(a.numel() > 0, op, "a must be non-empty, got shape ", a.sizes());
  check_data_or_f32(op, "ln_weight", ln_weight, data, c);
  check_data_or_f32(op, "ln_bias", ln_bias, data, c);
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
                                 int64_t sequence_position, at::ScalarType out_dtype) {
  const at::ScalarType acc = accumulate_dtype(out_dtype);
  const at::Tensor pre = gather_pre(a, c, in, sequence_position, acc);
  return at::layer_norm(at::gelu(pre), {c.size(2)}, ln_weight.to(acc), ln_bias.to(acc), eps)
      .to(out_dtype);
}

DemuxGatherArgs demux_gather_args(const at::Tensor& a, const at::Tensor& c,
                                  const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                  double eps, const DemuxGatherInputs& in,
                                  int64_t sequence_position, at::ScalarType out_dtype) {
  return DemuxGatherArgs{kernel_param(a),
                         kernel_param(c),
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
                         to_kernel_dtype(out_dtype)};
}

void check_demux_d(const char* op, const at::Tensor& c) {
  TORCH_CHECK(c.size(2) <= kMaxDemuxD, op, "d = c.size(2) must be at most ", kMaxDemuxD,
              " for the kernel, got ", c.size(2));
}

at::Tensor demux_gather_fwd_cpu(const at::Tensor& a, const at::Tensor& c,
                                const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                double eps, c10::string_view gather,
                                const std::optional<at::Tensor>& index,
                                int64_t sequence_position, at::ScalarType out_dtype) {
  const DemuxGatherInputs in = check_demux_gather_args(
      "muxkernels::demux_gather_fwd_cuda: ", a, c, ln_weight, ln_bias, eps, gather, index,
      sequence_position, out_dtype, c10::DeviceType::CPU);
  return demux_gather_fwd_aten(a, c, ln_weight, ln_bias, eps, in, sequence_position, out_dtype);
}

at::Tensor demux_gather_fwd_cuda(const at::Tensor& a, const at::Tensor& c,
                                 const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                                 double eps, c10::string_view gather,
                                 const std::optional<at::Tensor>& index,
                                 int64_t sequence_position, at::ScalarType out_dtype) {
  constexpr const char* op = "muxkernels::demux_gather_fwd_cuda: ";
  const DemuxGatherInputs in =
      check_demux_gather_args(op, a, c, ln_weight, ln_bias, eps, gather, index,
                              sequence_position, out_dtype, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard device_guard(c.device());
  check_demux_d(op, c);
  at::Tensor out = at::empty(gather_shape(a, c, in.gather), c.options().dtype(out_dtype));
  const DemuxGatherArgs args =
      demux_gather_args(a, c, ln_weight, ln_bias, eps, in, sequence_position, out_dtype);
  // float64, and rows the kernel's registers do not hold (see demux_gather_fwd.h): ATen.
  if (out_dtype == at::kDouble || !demux_gather_fwd_covers(args, out.const_data_ptr())) {
    return demux_gather_fwd_aten(a, c, ln_weight, ln_bias, eps, in, sequence_position,
                                 out_dtype);
  }
  check_cuda_launch(launch_demux_gather_fwd(args, out.mutable_data_ptr(), current_stream()),
                    kDemuxGatherFwd);
  return out;
}

// grad_u: the gather's output shape, on c's device, contiguous; its dtype is the data's.
void check_grad_u(const char* op, const at::Tensor& grad_u, const at::Tensor& a,
                  const at::Tensor& c, Gather gather) {
  const std::vector<int64_t> shape = gather_shape(a, c, gather);
  TORCH_CHECK(grad_u.sizes() == at::IntArrayRef(shape), op,
              "grad_u must have the gather's output shape ", at::IntArrayRef(shape), ", got ",
              grad_u.sizes());
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
  const at::ScalarType acc = accumulate_dtype(grad_u.scalar_type());
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
  check_grad_u(op, grad_u, a, c, parse_gather(op, gather));
  const DemuxGatherInputs in =
      check_demux_gather_args(op, a, c, ln_weight, ln_bias, eps, gather, index,
                              sequence_position, grad_u.scalar_type(), c10::DeviceType::CPU);
  return demux_gather_bwd_aten(grad_u, a, c, ln_weight, ln_bias, eps, in, sequence_position);
}

TensorQuad demux_gather_bwd_cuda(const at::Tensor& grad_u, const at::Tensor& a,
                                 const at::Tensor& c, const at::Tensor& ln_weight,
                                 const at::Tensor& ln_bias, double eps, c10::string_view gather,
                                 const std::optional<at::Tensor>& index,
                                 int64_t sequence_position) {
  constexpr const char* op = "muxkernels::demux_gather_bwd_cuda: ";
  check_grad_u(op, grad_u, a, c, parse_gather(op, gather));
  const DemuxGatherInputs in =
      check_demux_gather_args(op, a, c, ln_weight, ln_bias, eps, gather, index,
                              sequence_position, grad_u.scalar_type(), c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard device_guard(c.device());
  check_demux_d(op, c);
  const int64_t groups = c.size(0);
  const int64_t n = a.size(1);
  const int64_t d = c.size(2);
  const at::TensorOptions f32 = c.options().dtype(at::kFloat);
  // Positions the sequence gather does not read keep a zero gradient.
  at::Tensor dc = in.gather == Gather::kSequence ? at::zeros_like(c) : at::empty_like(c);
  const DemuxGatherArgs args = demux_gather_args(a, c, ln_weight, ln_bias, eps, in,
                                                 sequence_position, grad_u.scalar_type());
  DemuxGatherBwdBuffers buffers{grad_u.const_data_ptr(), dc.mutable_data_ptr(), nullptr,
                                nullptr, nullptr};
  DemuxGatherBwdPlan plan;
  // float64, and rows the kernel's registers do not hold (see demux_gather_bwd.h): ATen.
  if (grad_u.scalar_type() == at::kDouble || !plan_demux_gather_bwd(args, buffers, &plan)) {
    return demux_gather_bwd_aten(grad_u, a, c, ln_weight, ln_bias, eps, in, sequence_position);
  }
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

void set_gather_output_dims(const std::map<std::string, std::vector<std::string>>& dims) {
  const std::pair<const char*, Gather> gathers[] = {
      {"token", Gather::kToken}, {"sequence", Gather::kSequence}, {"selected", Gather::kSelected}};
  const std::map<std::string, GatherSize> sizes = {{"groups", GatherSize::kGroups},
                                                   {"instances", GatherSize::kInstances},
                                                   {"positions", GatherSize::kPositions},
                                                   {"width", GatherSize::kWidth}};
  if (dims.size() != std::size(gathers)) {
    throw std::invalid_argument(
        "GATHER_OUTPUT_DIMS must name exactly the gathers token, sequence and selected");
  }
  for (const auto& [name, gather] : gathers) {
    const auto entry = dims.find(name);
    if (entry == dims.end()) {
      throw std::invalid_argument(std::string("GATHER_OUTPUT_DIMS lacks the gather ") + name);
    }
    std::vector<GatherSize>& layout = gather_output_dims[static_cast<size_t>(gather)];
    layout.clear();
    for (const std::string& dim : entry->second) {
      const auto size = sizes.find(dim);
      if (size == sizes.end()) {
        throw std::invalid_argument("GATHER_OUTPUT_DIMS[\"" + entry->first +
                                    "\"] names an unknown size \"" + dim +
                                    "\" (known: groups, instances, positions, width)");
      }
      layout.push_back(size->second);
    }
  }
}

}  // namespace muxkernels

TORCH_LIBRARY_IMPL(muxkernels, CPU, m) {
  m.impl("demux_gather_fwd_cuda", &muxkernels::demux_gather_fwd_cpu);
  m.impl("demux_gather_bwd_cuda", &muxkernels::demux_gather_bwd_cpu);
}

TORCH_LIBRARY_IMPL(muxkernels, CUDA, m) {
  m.impl("demux_gather_fwd_cuda", &muxkernels::demux_gather_fwd_cuda);
  m.impl("demux_gather_bwd_cuda", &muxkernels::demux_gather_bwd_cuda);
}
