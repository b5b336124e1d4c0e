// Checked entry points of the cost family: shapes, devices and parameters are validated
// here, then the call goes to the backend of the tensors' device. Label values (integer
// class indices in [0, numClasses)) are checked by the backends, which read them anyway.
// Outputs may not alias inputs where a case's result needs its whole input column.
#include "ops/cost.h"

#include "ops/check.h"

namespace ccn::ops {
namespace {

// probs is a (numClasses, numCases) matrix and labels holds one class index per case.
void check_labels_and_probs(const Tensor& labels, const Tensor& probs) {
  check_matrix(probs, "probs", probs.rows(), probs.cols());
  CCN_CHECK(probs.rows() > 0, "argument 'probs' must have at least one class (row), got shape ",
            shape_str(probs.shape()));
  check_numel(labels, "labels", probs.cols());
}

}  // namespace

void softmax(const Tensor& inputs, Tensor& targets, float scaleTargets, float scaleOutput) {
  Device d = common_device({{"inputs", &inputs}, {"targets", &targets}});
  check_matrix(inputs, "inputs", inputs.rows(), inputs.cols());
  check_matrix(targets, "targets", inputs.rows(), inputs.cols());
  check_disjoint(targets, "targets", inputs, "inputs");
  CCN_DISPATCH(d, softmax, inputs, targets, scaleTargets, scaleOutput);
}

void softmaxGrad(const Tensor& outGrads, const Tensor& acts, Tensor& targets, float scaleTargets,
                 float scaleOutput) {
  Device d = common_device({{"outGrads", &outGrads}, {"acts", &acts}, {"targets", &targets}});
  check_matrix(acts, "acts", acts.rows(), acts.cols());
  check_matrix(outGrads, "outGrads", acts.rows(), acts.cols());
  check_matrix(targets, "targets", acts.rows(), acts.cols());
  check_disjoint(targets, "targets", outGrads, "outGrads");
  check_disjoint(targets, "targets", acts, "acts");
  CCN_DISPATCH(d, softmaxGrad, outGrads, acts, targets, scaleTargets, scaleOutput);
}

CostResult logregCost(const Tensor& labels, const Tensor& probs, int topK) {
  Device d = common_device({{"labels", &labels}, {"probs", &probs}});
  check_labels_and_probs(labels, probs);
  check_positive(topK, "topK");
  return CCN_DISPATCH(d, logregCost, labels, probs, topK);
}

void logregGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff, float scaleTargets,
                float scaleOutput) {
  Device d = common_device({{"labels", &labels}, {"probs", &probs}, {"targets", &targets}});
  check_labels_and_probs(labels, probs);
  check_matrix(targets, "targets", probs.rows(), probs.cols());
  check_disjoint(targets, "targets", labels, "labels");
  check_disjoint(targets, "targets", probs, "probs");
  CCN_DISPATCH(d, logregGrad, labels, probs, targets, coeff, scaleTargets, scaleOutput);
}

void softmaxLogregGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff,
                       float scaleTargets, float scaleOutput) {
  Device d = common_device({{"labels", &labels}, {"probs", &probs}, {"targets", &targets}});
  check_labels_and_probs(labels, probs);
  check_matrix(targets, "targets", probs.rows(), probs.cols());
  check_disjoint(targets, "targets", labels, "labels");
  check_disjoint(targets, "targets", probs, "probs");
  CCN_DISPATCH(d, softmaxLogregGrad, labels, probs, targets, coeff, scaleTargets, scaleOutput);
}

CostResult crossEntCost(const Tensor& labels, const Tensor& probs) {
  Device d = common_device({{"labels", &labels}, {"probs", &probs}});
  check_matrix(probs, "probs", probs.rows(), probs.cols());
  check_matrix(labels, "labels", probs.rows(), probs.cols());
  return CCN_DISPATCH(d, crossEntCost, labels, probs);
}

void crossEntGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff, float scaleTargets,
                  float scaleOutput) {
  Device d = common_device({{"labels", &labels}, {"probs", &probs}, {"targets", &targets}});
  check_matrix(probs, "probs", probs.rows(), probs.cols());
  check_matrix(labels, "labels", probs.rows(), probs.cols());
  check_matrix(targets, "targets", probs.rows(), probs.cols());
  CCN_DISPATCH(d, crossEntGrad, labels, probs, targets, coeff, scaleTargets, scaleOutput);
}

void softmaxCrossEntGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff,
                         float scaleTargets, float scaleOutput) {
  Device d = common_device({{"labels", &labels}, {"probs", &probs}, {"targets", &targets}});
  check_matrix(probs, "probs", probs.rows(), probs.cols());
  check_matrix(labels, "labels", probs.rows(), probs.cols());
  check_matrix(targets, "targets", probs.rows(), probs.cols());
  check_disjoint(targets, "targets", labels, "labels");
  check_disjoint(targets, "targets", probs, "probs");
  CCN_DISPATCH(d, softmaxCrossEntGrad, labels, probs, targets, coeff, scaleTargets, scaleOutput);
}

double sumOfSquares(const Tensor& inputs) {
  Device d = common_device({{"inputs", &inputs}});
  check_numel(inputs, "inputs", inputs.numel());
  return CCN_DISPATCH(d, sumOfSquares, inputs);
}

double elementCost(ElementCost kind, const Tensor& labels, const Tensor& outputs) {
  Device d = common_device({{"labels", &labels}, {"outputs", &outputs}});
  check_matrix(outputs, "outputs", outputs.rows(), outputs.cols());
  check_matrix(labels, "labels", outputs.rows(), outputs.cols());
  return CCN_DISPATCH(d, elementCost, kind, labels, outputs);
}

void elementCostGrad(ElementCost kind, const Tensor& labels, const Tensor& outputs, Tensor& targets, float coeff,
                     float scaleTargets, float scaleOutput) {
  Device d = common_device({{"labels", &labels}, {"outputs", &outputs}, {"targets", &targets}});
  check_matrix(outputs, "outputs", outputs.rows(), outputs.cols());
  check_matrix(labels, "labels", outputs.rows(), outputs.cols());
  check_matrix(targets, "targets", outputs.rows(), outputs.cols());
  CCN_DISPATCH(d, elementCostGrad, kind, labels, outputs, targets, coeff, scaleTargets, scaleOutput);
}

}  // namespace ccn::ops
