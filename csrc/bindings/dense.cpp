// Python bindings of the dense family: gemm, biases, element-wise sum/product/max,
// dropout masks, the momentum weight update, column slices and the non-finite check. Outputs are written in place.
#include "bindings/convert.h"
#include "ops/dense.h"

namespace ccn::bindings {

void bind_dense(py::module_& m) {
  m.def("gemm", [](py::handle a, py::handle b, py::handle c, bool transA, bool transB, float scaleTargets,
                   float scaleOutput) {
    Tensor ta = as_tensor(a, "a"), tb = as_tensor(b, "b"), tc = as_target(c, "c");
    py::gil_scoped_release release;
    ops::gemm(ta, tb, tc, transA, transB, scaleTargets, scaleOutput);
  }, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("trans_a") = false, py::arg("trans_b") = false,
     py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "c = scale_targets * c + scale_output * op(a) @ op(b), op(x) = x.T when trans_x (matrix views)");

  m.def("add_bias", [](py::handle bias, py::handle targets, float scaleTargets, float scaleOutput) {
    Tensor b = as_tensor(bias, "bias"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::addBias(b, t, scaleTargets, scaleOutput);
  }, py::arg("bias"), py::arg("targets"), py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "targets viewed as (R, -1), R = bias.size: targets = scale_targets * targets + scale_output * bias[:, None]");

  m.def("bias_grad", [](py::handle grads, py::handle targets, float scaleTargets, float scaleOutput) {
    Tensor g = as_tensor(grads, "grads"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::biasGrad(g, t, scaleTargets, scaleOutput);
  }, py::arg("grads"), py::arg("targets"), py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "grads viewed as (R, -1), R = targets.size: targets = scale_targets * targets + scale_output * grads.sum(1)");

  m.def("add", [](py::handle a, py::handle targets, float scaleTargets, float scaleOutput) {
    Tensor x = as_tensor(a, "a"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::add(x, t, scaleTargets, scaleOutput);
  }, py::arg("a"), py::arg("targets"), py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "targets = scale_targets * targets + scale_output * a");

  m.def("mult", [](py::handle a, py::handle b, py::handle targets, float scaleTargets, float scaleOutput) {
    Tensor x = as_tensor(a, "a"), y = as_tensor(b, "b"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::mult(x, y, t, scaleTargets, scaleOutput);
  }, py::arg("a"), py::arg("b"), py::arg("targets"), py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "targets = scale_targets * targets + scale_output * a * b");

  m.def("eltwise_max", [](py::handle a, py::handle b, py::handle targets, float scaleTargets, float scaleOutput) {
    Tensor x = as_tensor(a, "a"), y = as_tensor(b, "b"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::eltwiseMax(x, y, t, scaleTargets, scaleOutput);
  }, py::arg("a"), py::arg("b"), py::arg("targets"), py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "targets = scale_targets * targets + scale_output * maximum(a, b)");

  m.def("eltwise_max_grad", [](py::handle outGrads, py::handle inputs, py::handle acts, py::handle targets,
                               float scaleTargets, float scaleOutput) {
    Tensor g = as_tensor(outGrads, "out_grads"), x = as_tensor(inputs, "inputs"), y = as_tensor(acts, "acts");
    Tensor t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::eltwiseMaxGrad(g, x, y, t, scaleTargets, scaleOutput);
  }, py::arg("out_grads"), py::arg("inputs"), py::arg("acts"), py::arg("targets"), py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f,
     "targets = scale_targets * targets + scale_output * where(inputs == acts, out_grads, 0)");

  m.def("dropout_mask", [](py::handle mask, float keep, uint64_t seed, uint64_t offset, int64_t rowStride) {
    Tensor t = as_target(mask, "mask");
    py::gil_scoped_release release;
    ops::dropoutMask(t, keep, seed, offset, rowStride < 0 ? (t.numel() ? t.cols() : 0) : rowStride);
  }, py::arg("mask"), py::arg("keep"), py::arg("seed"), py::arg("offset") = 0, py::arg("row_stride") = -1,
     "mask[r, c] = 1 / keep if philox_uniform(seed, offset + r * row_stride + c) < keep else 0 (matrix view; "
     "row_stride -1: the mask's columns)");

  m.def("momentum_update", [](py::handle weights, py::handle grads, py::handle inc, float epsOverCases, float mom,
                              float wcEps) {
    Tensor w = as_target(weights, "weights"), g = as_tensor(grads, "grads"), v = as_target(inc, "inc");
    py::gil_scoped_release release;
    ops::momentumUpdate(w, g, v, epsOverCases, mom, wcEps);
  }, py::arg("weights"), py::arg("grads"), py::arg("inc"), py::arg("eps_over_cases"), py::arg("mom"),
     py::arg("wc_eps"), "inc = mom * inc + eps_over_cases * grads - wc_eps * weights; weights += inc (in place)");

  m.def("copy_columns", [](py::handle src, int64_t srcStart, py::handle targets, int64_t targetStart, int64_t count,
                           float scaleTargets) {
    Tensor s = as_tensor(src, "src"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::copyColumns(s, srcStart, t, targetStart, count, scaleTargets);
  }, py::arg("src"), py::arg("src_start"), py::arg("targets"), py::arg("target_start"), py::arg("count"),
     py::arg("scale_targets") = 0.f,
     "targets[:, t:t+count] = scale_targets * targets[:, t:t+count] + src[:, s:s+count] (matrix views)");

  m.def("flag_non_finite", [](py::handle t, py::handle flags, int64_t index) {
    Tensor x = as_tensor(t, "t"), f = as_target(flags, "flags");
    py::gil_scoped_release release;
    ops::flagNonFinite(x, f, index);
  }, py::arg("t"), py::arg("flags"), py::arg("index"),
     "flags[index] = 1 when t holds a NaN or Inf; flags is left as it is otherwise");
}

}  // namespace ccn::bindings
