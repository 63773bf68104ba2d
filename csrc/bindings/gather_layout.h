// The output layout of the demux gathers, which the compiled extension does not define:
// muxkernels._opdefs.GATHER_OUTPUT_DIMS does, and module.cpp hands it to
// set_gather_output_dims when muxkernels._C is imported, before any operator can run.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace muxkernels {

// Sets each gather's output dimensions from {gather: names of its dimensions in order},
// e.g. {"sequence": {"groups", "instances", "width"}}. Throws std::invalid_argument when a
// gather of the kernels is missing or a dimension name is unknown.
void set_gather_output_dims(const std::map<std::string, std::vector<std::string>>& dims);

}  // namespace muxkernels
