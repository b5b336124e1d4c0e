// CPU softmax and cost routines on (numClasses, numCases) matrices, case index fastest.
// Per-case (column) work walks the rows of a block of cases with the case loop innermost,
// so memory is read contiguously. Costs are summed in double over fixed blocks of cases,
// then over the blocks in order: the result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "cpu/scale.h"
#include "ops/cost.h"

namespace ccn::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;        // elements per chunk below which threading does not pay
constexpr int64_t kCasesPerBlock = 256;    // cases per partial sum of a cost
constexpr int64_t kElementsPerBlock = 1 << 16;  // elements per partial sum of sumOfSquares

// Class indices from float labels; a label that is not an integer in [0, numClasses) is a
// ValueError naming it.
std::vector<int> read_labels(const Tensor& labels, int64_t numClasses) {
  const float* l = labels.data();
  std::vector<int> classes(labels.numel());
  for (int64_t n = 0; n < labels.numel(); ++n) {
    float v = l[n];
    CCN_CHECK(v >= 0.f && v < static_cast<float>(numClasses) && v == std::floor(v), "argument 'labels': entry ",
              n, " is ", v, ", not a class index (an integer in [0, ", numClasses, "))");
    classes[n] = static_cast<int>(v);
  }
  return classes;
}

// Sums the CostResult block_sum(block) over `blocks` fixed blocks, computed in parallel, added in order.
template <typename BlockSum>
CostResult sum_blocks(int64_t blocks, const BlockSum& block_sum) {
  std::vector<CostResult> partial(blocks);
  parallel_for(blocks, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) partial[b] = block_sum(b);
  });
  CostResult total;
  for (const CostResult& p : partial) {
    total.cost += p.cost;
    total.error += p.error;
    total.errorTopK += p.errorTopK;
  }
  return total;
}

// Grain (in rows or cases) so that a chunk holds about kGrain elements.
int64_t grain_for(int64_t elementsPerItem) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(elementsPerItem, 1));
}

}  // namespace

void softmax(const Tensor& inputs, Tensor& targets, float scaleTargets, float scaleOutput) {
  const int64_t classes = inputs.rows(), cases = inputs.cols();
  const float* x = inputs.data();
  float* t = targets.data();
  parallel_for(cases, [&](int64_t begin, int64_t end) {
    const int64_t width = end - begin;
    // Subtracting the column maximum keeps exp from overflowing.
    std::vector<float> colMax(width, -std::numeric_limits<float>::infinity());
    std::vector<double> colSum(width, 0.0);
    for (int64_t k = 0; k < classes; ++k) {
      const float* row = x + k * cases + begin;
      for (int64_t j = 0; j < width; ++j) colMax[j] = std::max(colMax[j], row[j]);
    }
    for (int64_t k = 0; k < classes; ++k) {
      const float* row = x + k * cases + begin;
      for (int64_t j = 0; j < width; ++j) colSum[j] += std::exp(row[j] - colMax[j]);
    }
    std::vector<float> invSum(width);
    for (int64_t j = 0; j < width; ++j) invSum[j] = static_cast<float>(1.0 / colSum[j]);
    for (int64_t k = 0; k < classes; ++k) {
      const float* row = x + k * cases + begin;
      float* out = t + k * cases + begin;
      for (int64_t j = 0; j < width; ++j)
        store_scaled(out[j], std::exp(row[j] - colMax[j]) * invSum[j], scaleTargets, scaleOutput);
    }
  }, grain_for(classes));
}

void softmaxGrad(const Tensor& outGrads, const Tensor& acts, Tensor& targets, float scaleTargets,
                 float scaleOutput) {
  const int64_t classes = acts.rows(), cases = acts.cols();
  const float* g = outGrads.data();
  const float* y = acts.data();
  float* t = targets.data();
  parallel_for(cases, [&](int64_t begin, int64_t end) {
    const int64_t width = end - begin;
    std::vector<double> dot(width, 0.0);  // sum_k outGrads[k] * acts[k], per case
    for (int64_t k = 0; k < classes; ++k) {
      const int64_t row = k * cases + begin;
      for (int64_t j = 0; j < width; ++j) dot[j] += static_cast<double>(g[row + j]) * y[row + j];
    }
    for (int64_t k = 0; k < classes; ++k) {
      const int64_t row = k * cases + begin;
      for (int64_t j = 0; j < width; ++j)
        store_scaled(t[row + j], y[row + j] * (g[row + j] - static_cast<float>(dot[j])), scaleTargets,
                     scaleOutput);
    }
  }, grain_for(classes));
}

CostResult logregCost(const Tensor& labels, const Tensor& probs, int topK) {
  const int64_t classes = probs.rows(), cases = probs.cols();
  const std::vector<int> label = read_labels(labels, classes);
  const float* p = probs.data();
  return sum_blocks((cases + kCasesPerBlock - 1) / kCasesPerBlock, [&](int64_t block) {
    const int64_t begin = block * kCasesPerBlock, end = std::min(cases, begin + kCasesPerBlock);
    const int64_t width = end - begin;
    // For each case: how many other classes score at least as high as the label (ties
    // count against the label). It is in the top k iff fewer than k do.
    std::vector<float> labelProb(width);
    std::vector<int64_t> rivals(width, 0);
    // A NaN or Inf probability makes the case an error (a NaN compares false: it would win).
    std::vector<char> finite(width, 1);
    for (int64_t j = 0; j < width; ++j) labelProb[j] = p[label[begin + j] * cases + begin + j];
    for (int64_t k = 0; k < classes; ++k) {
      const float* row = p + k * cases + begin;
      for (int64_t j = 0; j < width; ++j) {
        rivals[j] += row[j] >= labelProb[j] && k != label[begin + j];
        finite[j] &= std::isfinite(row[j]);
      }
    }
    CostResult r;
    for (int64_t j = 0; j < width; ++j) {
      r.cost -= std::log(static_cast<double>(probabilityForLog(labelProb[j])));
      r.error += !finite[j] || rivals[j] >= 1;
      r.errorTopK += !finite[j] || rivals[j] >= topK;
    }
    return r;
  });
}

void logregGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff, float scaleTargets,
                float scaleOutput) {
  const int64_t classes = probs.rows(), cases = probs.cols();
  const std::vector<int> label = read_labels(labels, classes);
  const float* p = probs.data();
  float* t = targets.data();
  parallel_for(classes, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k)
      for (int64_t n = 0; n < cases; ++n) {
        const int64_t i = k * cases + n;
        store_scaled(t[i], label[n] == k ? coeff / p[i] : 0.f, scaleTargets, scaleOutput);
      }
  }, grain_for(cases));
}

void softmaxLogregGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff,
                       float scaleTargets, float scaleOutput) {
  const int64_t classes = probs.rows(), cases = probs.cols();
  const std::vector<int> label = read_labels(labels, classes);
  const float* p = probs.data();
  float* t = targets.data();
  parallel_for(classes, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k)
      for (int64_t n = 0; n < cases; ++n) {
        const int64_t i = k * cases + n;
        store_scaled(t[i], coeff * ((label[n] == k ? 1.f : 0.f) - p[i]), scaleTargets, scaleOutput);
      }
  }, grain_for(cases));
}

CostResult crossEntCost(const Tensor& labels, const Tensor& probs) {
  const int64_t classes = probs.rows(), cases = probs.cols();
  const float* l = labels.data();
  const float* p = probs.data();
  return sum_blocks((cases + kCasesPerBlock - 1) / kCasesPerBlock, [&](int64_t block) {
    const int64_t begin = block * kCasesPerBlock, end = std::min(cases, begin + kCasesPerBlock);
    const int64_t width = end - begin;
    // Running argmax (first maximum) of probs and of labels, per case.
    std::vector<int64_t> probArg(width, 0), labelArg(width, 0);
    CostResult r;
    for (int64_t k = 0; k < classes; ++k) {
      const int64_t row = k * cases + begin;
      for (int64_t j = 0; j < width; ++j) {
        const float label = l[row + j], prob = p[row + j];
        // A zero target contributes nothing, even where the probability is zero.
        if (label != 0.f) r.cost -= label * std::log(static_cast<double>(probabilityForLog(prob)));
        if (prob > p[probArg[j] * cases + begin + j]) probArg[j] = k;
        if (label > l[labelArg[j] * cases + begin + j]) labelArg[j] = k;
      }
    }
    for (int64_t j = 0; j < width; ++j) r.error += probArg[j] != labelArg[j];
    r.errorTopK = r.error;
    return r;
  });
}

void crossEntGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff, float scaleTargets,
                  float scaleOutput) {
  const float* l = labels.data();
  const float* p = probs.data();
  float* t = targets.data();
  parallel_for(probs.numel(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) store_scaled(t[i], coeff * l[i] / p[i], scaleTargets, scaleOutput);
  }, kGrain);
}

void softmaxCrossEntGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff,
                         float scaleTargets, float scaleOutput) {
  const int64_t classes = probs.rows(), cases = probs.cols();
  const float* l = labels.data();
  const float* p = probs.data();
  float* t = targets.data();
  parallel_for(cases, [&](int64_t begin, int64_t end) {
    const int64_t width = end - begin;
    std::vector<double> labelSum(width, 0.0);  // sum_k labels[k], per case
    for (int64_t k = 0; k < classes; ++k) {
      const float* row = l + k * cases + begin;
      for (int64_t j = 0; j < width; ++j) labelSum[j] += row[j];
    }
    for (int64_t k = 0; k < classes; ++k) {
      const int64_t row = k * cases + begin;
      for (int64_t j = 0; j < width; ++j)
        store_scaled(t[row + j], coeff * (l[row + j] - p[row + j] * static_cast<float>(labelSum[j])),
                     scaleTargets, scaleOutput);
    }
  }, grain_for(classes));
}

double sumOfSquares(const Tensor& inputs) {
  const int64_t n = inputs.numel();
  const float* x = inputs.data();
  std::vector<double> partial((n + kElementsPerBlock - 1) / kElementsPerBlock, 0.0);
  parallel_for(static_cast<int64_t>(partial.size()), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t first = b * kElementsPerBlock, last = std::min(n, first + kElementsPerBlock);
      for (int64_t i = first; i < last; ++i) partial[b] += static_cast<double>(x[i]) * x[i];
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

namespace {
inline double safelog(double x) { return x > 0.0 ? std::log(x) : -50.0; }

inline double element_cost(ElementCost kind, double t, double y) {
  if (kind == ElementCost::BinaryCrossEnt) return -(t * safelog(y) + (1.0 - t) * safelog(1.0 - y));
  const double d = y - t;
  return std::log1p(d * d);
}

inline float element_grad(ElementCost kind, float t, float y) {
  if (kind == ElementCost::BinaryCrossEnt) return t / y - (1.f - t) / (1.f - y);
  const float d = y - t;
  return -2.f * d / (1.f + d * d);
}
}  // namespace

double elementCost(ElementCost kind, const Tensor& labels, const Tensor& outputs) {
  const int64_t n = outputs.numel();
  const float* l = labels.data();
  const float* y = outputs.data();
  std::vector<double> partial((n + kElementsPerBlock - 1) / kElementsPerBlock, 0.0);
  parallel_for(static_cast<int64_t>(partial.size()), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t first = b * kElementsPerBlock, last = std::min(n, first + kElementsPerBlock);
      for (int64_t i = first; i < last; ++i) partial[b] += element_cost(kind, l[i], y[i]);
    }
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

void elementCostGrad(ElementCost kind, const Tensor& labels, const Tensor& outputs, Tensor& targets, float coeff,
                     float scaleTargets, float scaleOutput) {
  const float* l = labels.data();
  const float* y = outputs.data();
  float* t = targets.data();
  parallel_for(outputs.numel(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      store_scaled(t[i], coeff * element_grad(kind, l[i], y[i]), scaleTargets, scaleOutput);
  }, kGrain);
}

}  // namespace ccn::cpu
