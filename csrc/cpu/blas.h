// SGEMM for the CPU backend: OpenBLAS kernels, threaded by the engine's own thread pool.
//
// OpenBLAS runs single-threaded; sgemm splits C into column (or row) blocks, one per pool
// thread, each computed by one BLAS call. One threading system for the whole engine means
// no oversubscription (OpenBLAS's spinning threads competing with the pool's on the same
// cores), and a fixed split means a fixed result for a given thread count.
#pragma once
#include <cstdint>

namespace ccn::cpu {

// Row-major  C = alpha * op(A) * op(B) + beta * C,  op(X) = X or X^T; C (m, n), op(A) (m, k),
// op(B) (k, n). With beta == 0, C is not read (it may hold NaN). Called from inside a
// parallel_for, it runs on the calling thread alone.
void sgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace ccn::cpu
