// The Python module muxkernels._C. Loading its shared library runs the TORCH_LIBRARY_IMPL
// blocks of the other files in csrc/bindings/, which register the CPU and CUDA
// implementations of the muxkernels::<name>_cuda operators. The operators themselves
// (their schemas, muxkernels/_opdefs.py SCHEMAS) and their fake implementations are
// defined from Python, by muxkernels/_extension.py, after the import.
//
// Initialising the module reads the one fact of the operator contract the implementations
// need beyond their schemas, the gathers' output layout (muxkernels._opdefs
// GATHER_OUTPUT_DIMS); a table the implementations cannot use makes the import fail with an
// ImportError that says why.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <string>
#include <vector>

#include "bindings/gather_layout.h"

PYBIND11_MODULE(_C, module) {
  module.doc() = "muxkernels compiled operator implementations (registered on import)";
  const pybind11::object dims =
      pybind11::module_::import("muxkernels._opdefs").attr("GATHER_OUTPUT_DIMS");
  muxkernels::set_gather_output_dims(
      dims.cast<std::map<std::string, std::vector<std::string>>>());
}
