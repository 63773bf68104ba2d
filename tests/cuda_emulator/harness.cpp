// extern "C" entry points to the launchers of csrc/, for test_emulated_kernels.py (ctypes),
// built against the translated kernel files and emu.h. Pointers are host pointers (CPU
// tensors); dtypes are muxkernels::DType codes; gather is a muxkernels::Gather code.
#include "emu.h"

#include "demux_gather_bwd.h"
#include "demux_gather_fwd.h"
#include "embed_mux.h"
#include "hadamard_mux.h"
#include "hadamard_mux_bwd.h"

using muxkernels::DType;
using muxkernels::Param;

namespace {

DType dtype(int code) { return static_cast<DType>(code); }

muxkernels::DemuxGatherArgs demux_args(const void* a, int a_dtype, const void* c,
                                       const void* ln_weight, int w_dtype, const void* ln_bias,
                                       int b_dtype, const int64_t* index, const int64_t* sizes,
                                       double eps, int gather, int64_t position, int c_dtype,
                                       int data_dtype) {
  return muxkernels::DemuxGatherArgs{Param{a, dtype(a_dtype)},
                                     Param{c, dtype(c_dtype)},
                                     Param{ln_weight, dtype(w_dtype)},
                                     Param{ln_bias, dtype(b_dtype)},
                                     index,
                                     sizes[0],
                                     sizes[1],
                                     sizes[2],
                                     sizes[3],
                                     sizes[4],
                                     eps,
                                     static_cast<muxkernels::Gather>(gather),
                                     position,
                                     dtype(data_dtype)};
}

}  // namespace

extern "C" {

int emu_violations() { return emu::violations; }

int emu_hadamard_mux_fwd(const void* e, const void* v, void* out, int64_t groups, int64_t n,
                         int64_t len, int64_t d, int e_dtype, int v_dtype) {
  return muxkernels::launch_hadamard_mux_fwd(e, v, out, groups, n, len, d, dtype(e_dtype),
                                             dtype(v_dtype), nullptr);
}

int64_t emu_hadamard_mux_bwd_chunks(int64_t rows, int64_t n) {
  return muxkernels::hadamard_mux_bwd_chunks(rows, n);
}

int emu_hadamard_mux_bwd(const void* dx, const void* e, const void* v, int v_dtype, void* de,
                         void* partial, int64_t groups, int64_t n, int64_t len, int64_t d,
                         int e_dtype) {
  return muxkernels::launch_hadamard_mux_bwd(dx, e, Param{v, dtype(v_dtype)}, de, partial,
                                             groups, n, len, d, dtype(e_dtype), nullptr);
}

// ids: input, position, token type, mixed position, mixed token type; tables: word,
// position, token type; params: ln_weight, ln_bias, vectors; sizes: groups, n, len, d.
int emu_embed_mux_fwd(const int64_t* const* ids, const void* const* tables,
                      const void* const* params, const int* param_dtypes, void* out,
                      const int64_t* sizes, double eps, int table_dtype) {
  const muxkernels::EmbedMuxArgs args{ids[0],
                                      ids[1],
                                      ids[2],
                                      ids[3],
                                      ids[4],
                                      tables[0],
                                      tables[1],
                                      tables[2],
                                      out,
                                      Param{params[0], dtype(param_dtypes[0])},
                                      Param{params[1], dtype(param_dtypes[1])},
                                      Param{params[2], dtype(param_dtypes[2])},
                                      sizes[0],
                                      sizes[1],
                                      sizes[2],
                                      sizes[3],
                                      eps,
                                      dtype(table_dtype)};
  return muxkernels::launch_embed_mux_fwd(args, nullptr);
}

// sizes: groups, a_groups, n, len, d; data_dtype: of u (and grad_u).
int emu_demux_gather_fwd(const void* a, int a_dtype, const void* c, const void* ln_weight,
                         int w_dtype, const void* ln_bias, int b_dtype, const int64_t* index,
                         const int64_t* sizes, double eps, int gather, int64_t position,
                         int c_dtype, int data_dtype, void* out) {
  return muxkernels::launch_demux_gather_fwd(
      demux_args(a, a_dtype, c, ln_weight, w_dtype, ln_bias, b_dtype, index, sizes, eps, gather,
                 position, c_dtype, data_dtype),
      out, nullptr);
}

// plan: out (tiles, splits, blocks, da_tiles); buffers: grad_u, dc, da_partial,
// ln_partial, dpre. Launches nothing when plan_only; -1 when the kernels refuse the call.
int emu_demux_gather_bwd(const void* a, int a_dtype, const void* c, const void* ln_weight,
                         int w_dtype, const void* ln_bias, int b_dtype, const int64_t* index,
                         const int64_t* sizes, double eps, int gather, int64_t position,
                         int c_dtype, int data_dtype, void* const* buffers, int64_t* plan,
                         int plan_only) {
  const muxkernels::DemuxGatherArgs args = demux_args(
      a, a_dtype, c, ln_weight, w_dtype, ln_bias, b_dtype, index, sizes, eps, gather, position,
      c_dtype, data_dtype);
  const muxkernels::DemuxGatherBwdBuffers bufs{
      buffers[0], buffers[1], static_cast<float*>(buffers[2]), static_cast<float*>(buffers[3]),
      static_cast<float*>(buffers[4])};
  muxkernels::DemuxGatherBwdPlan p;
  if (!muxkernels::plan_demux_gather_bwd(args, bufs, &p)) return -1;
  plan[0] = p.tiles;
  plan[1] = p.splits;
  plan[2] = p.blocks;
  plan[3] = p.da_tiles;
  if (plan_only) return 0;
  return muxkernels::launch_demux_gather_bwd(args, bufs, nullptr);
}

}  // extern "C"

// Record-only mode for the compile gate: while on, launchers note their launches instead of
// running them (pointers are then never dereferenced, so any aligned address will do).
extern "C" {

void emu_record(int on) {
  emu::record_only = on != 0;
  emu::records.clear();
}

int emu_record_count() { return static_cast<int>(emu::records.size()); }

// Record i: the kernel's name (NUL-terminated, cut to size bytes) and
// dims = grid x, y, z, block x, y, z, dynamic shared memory bytes.
void emu_record_get(int i, char* name, int size, int64_t* dims) {
  const emu::Record& r = emu::records.at(static_cast<size_t>(i));
  std::snprintf(name, static_cast<size_t>(size), "%s", r.kernel.c_str());
  const int64_t values[7] = {r.grid.x, r.grid.y, r.grid.z, r.block.x, r.block.y, r.block.z,
                             static_cast<int64_t>(r.smem)};
  for (int k = 0; k < 7; ++k) dims[k] = values[k];
}

}  // extern "C"
