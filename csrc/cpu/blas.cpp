#include "cpu/blas.h"

#include <cblas.h>

#include <algorithm>

#include "core/thread_pool.h"

namespace ccn::cpu {
namespace {

// Makes OpenBLAS single-threaded once, before its first use.
struct SingleThreadedBlas {
  SingleThreadedBlas() { scipy_openblas_set_num_threads(1); }
};

void blas_sgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(std::max<int64_t>(lda, 1)), b,
                    blasint(std::max<int64_t>(ldb, 1)), beta, c, blasint(std::max<int64_t>(ldc, 1)));
}

// Blocks narrower than this lose more in packing overhead than threads gain.
constexpr int64_t kMinBlock = 32;

}  // namespace

void sgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  static SingleThreadedBlas once;
  if (m == 0 || n == 0) return;
  const bool work_is_small = m * n * std::max<int64_t>(k, 1) < (int64_t{1} << 18);
  if (work_is_small || num_threads() == 1) {
    blas_sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (n >= m) {  // split the columns of C (and of op(B))
    int64_t blocks = (n + kMinBlock - 1) / kMinBlock;
    parallel_for(blocks, [&](int64_t begin, int64_t end) {
      int64_t j0 = begin * kMinBlock, j1 = std::min(n, end * kMinBlock);
      const float* b_block = transB ? b + j0 * ldb : b + j0;
      blas_sgemm(transA, transB, m, j1 - j0, k, alpha, a, lda, b_block, ldb, beta, c + j0, ldc);
    });
  } else {  // split the rows of C (and of op(A))
    int64_t blocks = (m + kMinBlock - 1) / kMinBlock;
    parallel_for(blocks, [&](int64_t begin, int64_t end) {
      int64_t i0 = begin * kMinBlock, i1 = std::min(m, end * kMinBlock);
      const float* a_block = transA ? a + i0 : a + i0 * lda;
      blas_sgemm(transA, transB, i1 - i0, n, k, alpha, a_block, lda, b, ldb, beta, c + i0 * ldc, ldc);
    });
  }
}

}  // namespace ccn::cpu
