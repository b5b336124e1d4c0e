// CPU dense routines. gemm goes to OpenBLAS (row-major matrix views); the element-wise
// routines are one threaded pass over contiguous chunks; biasGrad sums each row of the
// (R, numel / R) gradient view on a single thread, left to right, so it is repeatable.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "core/philox.h"
#include "core/thread_pool.h"
#include "cpu/blas.h"
#include "cpu/scale.h"

#include "ops/dense.h"

namespace ccn::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per chunk below which threading does not pay

// Calls op(i) for every element index, threaded over contiguous chunks.
template <typename Op>
void for_each_element(int64_t n, const Op& op) {
  parallel_for(n, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) op(i);
  }, kGrain);
}

}  // namespace

void gemm(const Tensor& a, const Tensor& b, Tensor& c, bool transA, bool transB, float scaleTargets,
          float scaleOutput) {
  const int64_t k = transA ? a.rows() : a.cols();
  // With beta == 0 BLAS does not read C, so a NaN-filled target is overwritten cleanly.
  sgemm(transA, transB, c.rows(), c.cols(), k, scaleOutput, a.data(), a.cols(), b.data(), b.cols(), scaleTargets,
        c.data(), c.cols());
}

void addBias(const Tensor& bias, Tensor& targets, float scaleTargets, float scaleOutput) {
  const int64_t rows = bias.numel(), cols = targets.numel() / rows;
  const float* b = bias.data();
  float* t = targets.data();
  parallel_for(rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* row = t + r * cols;
      for (int64_t j = 0; j < cols; ++j) store_scaled(row[j], b[r], scaleTargets, scaleOutput);
    }
  }, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)));
}

void biasGrad(const Tensor& grads, Tensor& targets, float scaleTargets, float scaleOutput) {
  const int64_t rows = targets.numel(), cols = grads.numel() / rows;
  const float* g = grads.data();
  float* t = targets.data();
  parallel_for(rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = g + r * cols;
      double sum = 0;  // double: rows of untied or shared conv biases can be long
      for (int64_t j = 0; j < cols; ++j) sum += row[j];
      store_scaled(t[r], static_cast<float>(sum), scaleTargets, scaleOutput);
    }
  }, std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)));
}

void add(const Tensor& a, Tensor& targets, float scaleTargets, float scaleOutput) {
  const float* x = a.data();
  float* t = targets.data();
  for_each_element(a.numel(), [&](int64_t i) { store_scaled(t[i], x[i], scaleTargets, scaleOutput); });
}

void mult(const Tensor& a, const Tensor& b, Tensor& targets, float scaleTargets, float scaleOutput) {
  const float* x = a.data();
  const float* y = b.data();
  float* t = targets.data();
  for_each_element(a.numel(), [&](int64_t i) { store_scaled(t[i], x[i] * y[i], scaleTargets, scaleOutput); });
}

void eltwiseMax(const Tensor& a, const Tensor& b, Tensor& targets, float scaleTargets, float scaleOutput) {
  const float* x = a.data();
  const float* y = b.data();
  float* t = targets.data();
  for_each_element(a.numel(),
                   [&](int64_t i) { store_scaled(t[i], x[i] > y[i] ? x[i] : y[i], scaleTargets, scaleOutput); });
}

void eltwiseMaxGrad(const Tensor& outGrads, const Tensor& inputs, const Tensor& acts, Tensor& targets,
                    float scaleTargets, float scaleOutput) {
  const float* g = outGrads.data();
  const float* x = inputs.data();
  const float* y = acts.data();
  float* t = targets.data();
  for_each_element(outGrads.numel(),
                   [&](int64_t i) { store_scaled(t[i], x[i] == y[i] ? g[i] : 0.f, scaleTargets, scaleOutput); });
}

void dropoutMask(Tensor& mask, float keep, uint64_t seed, uint64_t offset, int64_t rowStride) {
  const float kept = 1.f / keep;
  const int64_t cols = mask.numel() ? mask.cols() : 1;
  float* m = mask.data();
  for_each_element(mask.numel(), [&](int64_t i) {
    const uint64_t number = offset + static_cast<uint64_t>(i / cols * rowStride + i % cols);
    m[i] = philox_uniform(seed, number) < keep ? kept : 0.f;
  });
}

void momentumUpdate(Tensor& weights, const Tensor& grads, Tensor& inc, float epsOverCases, float mom,
                    float wcEps) {
  float* w = weights.data();
  const float* g = grads.data();
  float* v = inc.data();
  for_each_element(weights.numel(), [&](int64_t i) {
    v[i] = mom * v[i] + epsOverCases * g[i] - wcEps * w[i];
    w[i] += v[i];
  });
}

void copyColumns(const Tensor& src, int64_t srcStart, Tensor& targets, int64_t targetStart, int64_t count,
                 float scaleTargets) {
  const int64_t rows = src.rows(), from = src.cols(), to = targets.cols();
  const float* s = src.data() + srcStart;
  float* t = targets.data() + targetStart;
  if (scaleTargets == 0.f) {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(t + r * to, s + r * from, sizeof(float) * count);
    return;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < count; ++j) t[r * to + j] = scaleTargets * t[r * to + j] + s[r * from + j];
}

void flagNonFinite(const Tensor& t, Tensor& flags, int64_t index) {
  const float* x = t.data();
  std::atomic<bool> found{false};
  for_each_element(t.numel(), [&](int64_t i) {
    if (!std::isfinite(x[i])) found.store(true, std::memory_order_relaxed);
  });
  if (found.load()) flags.data()[index] = 1.f;
}

}  // namespace ccn::cpu
