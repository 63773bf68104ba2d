// The Python module muxkernels._C_cpu. Loading its shared library runs the TORCH_LIBRARY_IMPL
// blocks of the other files in csrc/cpu/, which register the CPU implementations of the
// muxkernels::<name>_cpu operators; the operators themselves (their schemas,
// muxkernels/_opdefs.py SCHEMAS) and their fakes are defined from Python, by
// muxkernels/_cpu/_compiled.py, after the import.

#include <pybind11/pybind11.h>

#include "cpu/blas.h"

PYBIND11_MODULE(_C_cpu, module) {
  module.doc() = "muxkernels compiled CPU operator implementations (registered on import)";
  module.def("blas_linked", &muxkernels::cpu::blas_linked,
             "Whether the kernels' GEMMs call PyTorch's BLAS (sgemm_/dgemm_) directly");
  module.def("set_direct_blas", &muxkernels::cpu::set_direct_blas,
             "Direct BLAS calls on (default) or off (ATen's addmm, as without that BLAS); "
             "returns the previous setting");
}
