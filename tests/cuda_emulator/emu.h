// A CPU emulation of the CUDA execution model, enough to run the kernels of csrc/ on a
// machine without a GPU and check their indexing, reductions and synchronisation (not
// their speed). Blocks run one after another; each thread of a block is a std::thread;
// __syncthreads is a block barrier and a warp shuffle goes through per-warp slots and a
// warp barrier. Dynamic shared memory starts filled with 0xFF bytes (NaN as floats), so a
// read before a write shows. translate.py rewrites the kernel files for it (launches,
// __shared__, attributes); this header is included first.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline

namespace emu {

struct Warp {
  std::barrier<> bar{32};
  alignas(8) unsigned char slots[32][8];
};

struct Block {
  std::unique_ptr<std::barrier<>> bar;
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<unsigned char> smem;
};

// Record-only mode (the compile gate's launch shapes): launch() notes the kernel, grid,
// block and dynamic shared memory instead of running.
struct Record {
  std::string kernel;
  dim3 grid, block;
  size_t smem;
};
inline bool record_only = false;
inline std::vector<Record> records;

// The name of kernel F with its template arguments, e.g. "muxkernels::{anonymous}::k<float, 4>".
template <auto F>
const char* kernel_name() {
  return __PRETTY_FUNCTION__;
}

inline Block* current_block = nullptr;
inline thread_local dim3 thread_idx, block_idx, block_dim, grid_dim;
inline int violations = 0;  // launches the GPU would refuse

inline unsigned char* dynamic_smem() { return current_block->smem.data(); }

// Runs f in every thread of every block of the grid, blocks one after another (or only
// records the launch, in record-only mode).
template <typename F>
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, const char* kernel, F&& f) {
  if (record_only) {
    records.push_back(Record{kernel, grid, block, smem});
    return;
  }
  const unsigned threads = block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || threads % 32 != 0 || smem > 48 * 1024) {
    std::fprintf(stderr, "emu: refused launch of (%u, %u, %u) threads, %zu bytes\n", block.x,
                 block.y, block.z, smem);
    ++violations;
    return;
  }
  for (unsigned bz = 0; bz < grid.z; ++bz) {
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block state;
        state.bar = std::make_unique<std::barrier<>>(threads);
        for (unsigned w = 0; w < threads / 32; ++w) state.warps.push_back(std::make_unique<Warp>());
        state.smem.assign(smem + 16, 0xFF);
        current_block = &state;
        std::vector<std::thread> pool;
        for (unsigned tz = 0; tz < block.z; ++tz) {
          for (unsigned ty = 0; ty < block.y; ++ty) {
            for (unsigned tx = 0; tx < block.x; ++tx) {
              pool.emplace_back([&, tx, ty, tz] {
                thread_idx = dim3(tx, ty, tz);
                block_idx = dim3(bx, by, bz);
                block_dim = block;
                grid_dim = grid;
                f();
              });
            }
          }
        }
        for (std::thread& t : pool) t.join();
        current_block = nullptr;
      }
    }
  }
}

inline cudaError_t last_error() { return cudaSuccess; }

}  // namespace emu

#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
#define cudaGetLastError() ::emu::last_error()

inline void __syncthreads() { emu::current_block->bar->arrive_and_wait(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
  static_assert(sizeof(T) <= 8, "shuffles of up to 8 bytes");
  const unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  emu::Warp& warp = *emu::current_block->warps[linear / 32];
  const unsigned lane = linear % 32;
  std::memcpy(warp.slots[lane], &v, sizeof(T));
  warp.bar.arrive_and_wait();
  T r;
  std::memcpy(&r, warp.slots[lane ^ static_cast<unsigned>(mask)], sizeof(T));
  warp.bar.arrive_and_wait();
  return r;
}

template <typename T>
inline void __stcs(T* p, T v) {
  *p = v;
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
