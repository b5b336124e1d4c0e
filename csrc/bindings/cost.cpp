// Python bindings of the cost family: softmax, logistic-regression and cross-entropy costs
// and their gradients, sum of squares. Scores/probabilities are (num_classes, num_cases).
#include <tuple>

#include "bindings/convert.h"
#include "ops/cost.h"

namespace ccn::bindings {

void bind_cost(py::module_& m) {
  m.def("softmax", [](py::handle inputs, py::handle targets, float scaleTargets, float scaleOutput) {
    Tensor x = as_tensor(inputs, "inputs"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::softmax(x, t, scaleTargets, scaleOutput);
  }, py::arg("inputs"), py::arg("targets"), py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "softmax over classes (rows) of each case (column)");

  m.def("softmax_grad", [](py::handle outGrads, py::handle acts, py::handle targets, float scaleTargets,
                           float scaleOutput) {
    Tensor g = as_tensor(outGrads, "out_grads"), y = as_tensor(acts, "acts"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::softmaxGrad(g, y, t, scaleTargets, scaleOutput);
  }, py::arg("out_grads"), py::arg("acts"), py::arg("targets"), py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f, "acts * (out_grads - sum_k out_grads[k] * acts[k]), per case");

  m.def("logreg_cost", [](py::handle labels, py::handle probs, int64_t topK) {
    int k = as_int(topK, "top_k");
    Tensor l = as_tensor(labels, "labels"), p = as_tensor(probs, "probs");
    CostResult r;
    {
      py::gil_scoped_release release;
      r = ops::logregCost(l, p, k);
    }
    return std::make_tuple(r.cost, r.error, r.errorTopK);
  }, py::arg("labels"), py::arg("probs"), py::arg("top_k") = 1,
     "(sum of -log probs[label], top-1 errors, top-k errors); ties count against the label");

  m.def("logreg_grad", [](py::handle labels, py::handle probs, py::handle targets, float coeff, float scaleTargets,
                          float scaleOutput) {
    Tensor l = as_tensor(labels, "labels"), p = as_tensor(probs, "probs"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::logregGrad(l, p, t, coeff, scaleTargets, scaleOutput);
  }, py::arg("labels"), py::arg("probs"), py::arg("targets"), py::arg("coeff") = 1.f, py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f, "coeff * [k == label] / probs[k] (gradient of the log-probability)");

  m.def("softmax_logreg_grad", [](py::handle labels, py::handle probs, py::handle targets, float coeff,
                                  float scaleTargets, float scaleOutput) {
    Tensor l = as_tensor(labels, "labels"), p = as_tensor(probs, "probs"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::softmaxLogregGrad(l, p, t, coeff, scaleTargets, scaleOutput);
  }, py::arg("labels"), py::arg("probs"), py::arg("targets"), py::arg("coeff") = 1.f, py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f, "coeff * ([k == label] - probs[k]), with respect to the softmax's input");

  m.def("cross_ent_cost", [](py::handle labels, py::handle probs) {
    Tensor l = as_tensor(labels, "labels"), p = as_tensor(probs, "probs");
    CostResult r;
    {
      py::gil_scoped_release release;
      r = ops::crossEntCost(l, p);
    }
    return std::make_tuple(r.cost, r.error);
  }, py::arg("labels"), py::arg("probs"), "(sum of -labels * log(probs), cases with argmax(probs) != argmax(labels))");

  m.def("cross_ent_grad", [](py::handle labels, py::handle probs, py::handle targets, float coeff,
                             float scaleTargets, float scaleOutput) {
    Tensor l = as_tensor(labels, "labels"), p = as_tensor(probs, "probs"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::crossEntGrad(l, p, t, coeff, scaleTargets, scaleOutput);
  }, py::arg("labels"), py::arg("probs"), py::arg("targets"), py::arg("coeff") = 1.f, py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f, "coeff * labels / probs");

  m.def("softmax_cross_ent_grad", [](py::handle labels, py::handle probs, py::handle targets, float coeff,
                                     float scaleTargets, float scaleOutput) {
    Tensor l = as_tensor(labels, "labels"), p = as_tensor(probs, "probs"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::softmaxCrossEntGrad(l, p, t, coeff, scaleTargets, scaleOutput);
  }, py::arg("labels"), py::arg("probs"), py::arg("targets"), py::arg("coeff") = 1.f, py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f, "coeff * (labels - probs * sum_k labels[k]), with respect to the softmax's input");

  m.def("sum_of_squares", [](py::handle inputs) {
    Tensor x = as_tensor(inputs, "inputs");
    py::gil_scoped_release release;
    return ops::sumOfSquares(x);
  }, py::arg("inputs"), "sum of inputs ** 2 (in double)");
}

}  // namespace ccn::bindings
