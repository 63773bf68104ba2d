// Row-major GEMM on raw, strided blocks, through the BLAS that PyTorch links.
#pragma once

#include <cstdint>

namespace muxkernels::cpu {

// C = alpha · op(A) · op(B) + beta · C, row-major, C (m × n), op(A) (m × k), op(B) (k × n);
// op(X) = Xᵀ when trans_x. lda, ldb and ldc are row strides, so A, B and C may be blocks of
// larger matrices. beta = 0 never reads C. Calls the Fortran sgemm_/dgemm_ that PyTorch's
// BLAS (MKL, OpenBLAS) exports, the routine ATen's mm ends in, without the dispatcher
// (about 4 us a call) or a contiguous copy of a block; where that BLAS is not there, or a
// size exceeds its 32-bit integers, ATen's addmm on views of the blocks.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// Whether PyTorch's BLAS is there for gemm to call directly (and not ATen's addmm).
bool blas_linked();

// Lets gemm call that BLAS directly (on, the default) or always ATen's addmm (off, how the
// tests run the fallback where the BLAS is there); returns the previous setting.
bool set_direct_blas(bool on);

}  // namespace muxkernels::cpu
