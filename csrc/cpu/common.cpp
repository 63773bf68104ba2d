// The argument checks the cpu kernels share (csrc/cpu/common.h).

#include "cpu/common.h"

namespace muxkernels::cpu {

void check_cpu_dtype(const char* op, const char* name, const at::Tensor& t,
                     at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), op, name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, op, name, " must have the data's dtype ", dtype,
              " (float32 or float64), got ", t.scalar_type());
}

void check_float_tensor(const char* op, const char* name, const at::Tensor& t,
                        at::ScalarType dtype, int64_t rank) {
  check_cpu_dtype(op, name, t, dtype);
  TORCH_CHECK(t.dim() == rank, op, name, " must have rank ", rank, ", got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), op, name, " must be contiguous");
}

}  // namespace muxkernels::cpu
