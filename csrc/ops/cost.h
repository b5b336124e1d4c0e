// Softmax and cost routines. Class scores and probabilities are (numClasses, numCases)
// (case index fastest); labels for logreg are (numCases) class indices stored as floats;
// labels for cross-entropy are (numClasses, numCases) target distributions.
//
// Gradients follow cuda-convnet: cost layers send back coeff times the gradient of the
// *objective* (log-probability, i.e. the negative cost), so that the weight update adds
// it (w += eps * grad). targets = scaleTargets * targets + scaleOutput * result.
#pragma once
#include "core/host_device.h"
#include "core/tensor.h"

namespace ccn {

// Element-wise costs of targets t and outputs y (both (rows, numCases)), summed over elements:
//   BinaryCrossEnt (cost.crossent2): -(t * safelog(y) + (1 - t) * safelog(1 - y)),
//     safelog(x) = log(x) for x > 0, else -50 (the 2012 release's);
//   RobustFlickr (cost.rflickr): log(1 + (y - t)^2).
enum class ElementCost { BinaryCrossEnt, RobustFlickr };

// The least probability a log-probability cost reads: a probability that underflowed to 0
// (a saturated softmax) costs -log(FLT_MIN) = 87.3 per case, not Inf, as Caffe's softmax
// loss. NaN passes through (the NaN guard names it).
constexpr float kLeastLogProbability = 1.17549435e-38f;  // FLT_MIN
CCN_HOST_DEVICE float probabilityForLog(float p) { return p < kLeastLogProbability ? kLeastLogProbability : p; }

struct CostResult {
  double cost = 0;    // summed over cases
  double error = 0;   // number of cases misclassified (top-1)
  double errorTopK = 0;  // number of cases whose label is not among the top k
};

namespace ops {
#include "ops/cost.inc"
}
namespace cpu {
#include "ops/cost.inc"
}
#ifdef CCN_WITH_CUDA
namespace cuda {
#include "ops/cost.inc"
}
#endif

}  // namespace ccn
