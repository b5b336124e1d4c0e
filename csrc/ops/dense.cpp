// Checked entry points of the dense family: shapes, devices and parameters are validated
// here, then the call goes to the backend of the tensors' device.
#include "ops/dense.h"

#include <limits>

#include "ops/check.h"

namespace ccn::ops {
namespace {

// `t` is defined and contiguous, of any shape.
void check_tensor(const Tensor& t, const char* name) { check_numel(t, name, t.numel()); }

// BLAS takes int32 sizes.
void check_blas_size(int64_t value, const char* what) {
  CCN_CHECK(value <= std::numeric_limits<int32_t>::max(), "gemm: ", what, " (", value,
            ") is too large for a 32-bit BLAS");
}

}  // namespace

void gemm(const Tensor& a, const Tensor& b, Tensor& c, bool transA, bool transB, float scaleTargets,
          float scaleOutput) {
  Device d = common_device({{"a", &a}, {"b", &b}, {"c", &c}});
  check_matrix(a, "a", a.rows(), a.cols());
  check_matrix(b, "b", b.rows(), b.cols());
  int64_t m = transA ? a.cols() : a.rows();
  int64_t k = transA ? a.rows() : a.cols();
  int64_t bk = transB ? b.cols() : b.rows();
  int64_t n = transB ? b.rows() : b.cols();
  CCN_CHECK(k == bk, "gemm: inner dimensions differ: op(a) is (", m, ", ", k, ") and op(b) is (", bk, ", ", n,
            ") (trans_a=", transA, ", trans_b=", transB, ")");
  check_matrix(c, "c", m, n);
  check_blas_size(m, "rows of c");
  check_blas_size(n, "columns of c");
  check_blas_size(k, "the inner dimension");
  check_disjoint(c, "c", a, "a");
  check_disjoint(c, "c", b, "b");
  CCN_DISPATCH(d, gemm, a, b, c, transA, transB, scaleTargets, scaleOutput);
}

void addBias(const Tensor& bias, Tensor& targets, float scaleTargets, float scaleOutput) {
  Device d = common_device({{"bias", &bias}, {"targets", &targets}});
  check_tensor(bias, "bias");
  check_tensor(targets, "targets");
  CCN_CHECK(bias.numel() > 0, "argument 'bias' is empty");
  CCN_CHECK(targets.numel() % bias.numel() == 0, "argument 'targets' (shape ", shape_str(targets.shape()),
            ") must have a multiple of bias.numel() = ", bias.numel(), " elements");
  check_disjoint(targets, "targets", bias, "bias");
  CCN_DISPATCH(d, addBias, bias, targets, scaleTargets, scaleOutput);
}

void biasGrad(const Tensor& grads, Tensor& targets, float scaleTargets, float scaleOutput) {
  Device d = common_device({{"grads", &grads}, {"targets", &targets}});
  check_tensor(grads, "grads");
  check_tensor(targets, "targets");
  CCN_CHECK(targets.numel() > 0, "argument 'targets' is empty");
  CCN_CHECK(grads.numel() % targets.numel() == 0, "argument 'grads' (shape ", shape_str(grads.shape()),
            ") must have a multiple of targets.numel() = ", targets.numel(), " elements");
  check_disjoint(targets, "targets", grads, "grads");
  CCN_DISPATCH(d, biasGrad, grads, targets, scaleTargets, scaleOutput);
}

void add(const Tensor& a, Tensor& targets, float scaleTargets, float scaleOutput) {
  Device d = common_device({{"a", &a}, {"targets", &targets}});
  check_tensor(a, "a");
  check_numel(targets, "targets", a.numel());
  CCN_DISPATCH(d, add, a, targets, scaleTargets, scaleOutput);
}

void mult(const Tensor& a, const Tensor& b, Tensor& targets, float scaleTargets, float scaleOutput) {
  Device d = common_device({{"a", &a}, {"b", &b}, {"targets", &targets}});
  check_tensor(a, "a");
  check_numel(b, "b", a.numel());
  check_numel(targets, "targets", a.numel());
  CCN_DISPATCH(d, mult, a, b, targets, scaleTargets, scaleOutput);
}

void eltwiseMax(const Tensor& a, const Tensor& b, Tensor& targets, float scaleTargets, float scaleOutput) {
  Device d = common_device({{"a", &a}, {"b", &b}, {"targets", &targets}});
  check_tensor(a, "a");
  check_numel(b, "b", a.numel());
  check_numel(targets, "targets", a.numel());
  CCN_DISPATCH(d, eltwiseMax, a, b, targets, scaleTargets, scaleOutput);
}

void eltwiseMaxGrad(const Tensor& outGrads, const Tensor& inputs, const Tensor& acts, Tensor& targets,
                    float scaleTargets, float scaleOutput) {
  Device d = common_device({{"outGrads", &outGrads}, {"inputs", &inputs}, {"acts", &acts}, {"targets", &targets}});
  check_tensor(outGrads, "outGrads");
  check_numel(inputs, "inputs", outGrads.numel());
  check_numel(acts, "acts", outGrads.numel());
  check_numel(targets, "targets", outGrads.numel());
  CCN_DISPATCH(d, eltwiseMaxGrad, outGrads, inputs, acts, targets, scaleTargets, scaleOutput);
}

void dropoutMask(Tensor& mask, float keep, uint64_t seed, uint64_t offset, int64_t rowStride) {
  Device d = common_device({{"mask", &mask}});
  check_tensor(mask, "mask");
  CCN_CHECK(keep > 0.f && keep <= 1.f, "parameter 'keep' must be in (0, 1], got ", keep);
  CCN_CHECK(mask.numel() == 0 || rowStride >= mask.cols(), "parameter 'row_stride' (", rowStride,
            ") must be at least the mask's columns (", mask.cols(), ")");
  CCN_DISPATCH(d, dropoutMask, mask, keep, seed, offset, rowStride);
}

void momentumUpdate(Tensor& weights, const Tensor& grads, Tensor& inc, float epsOverCases, float mom,
                    float wcEps) {
  Device d = common_device({{"weights", &weights}, {"grads", &grads}, {"inc", &inc}});
  check_tensor(weights, "weights");
  check_numel(grads, "grads", weights.numel());
  check_numel(inc, "inc", weights.numel());
  check_disjoint(inc, "inc", weights, "weights");
  check_disjoint(inc, "inc", grads, "grads");
  check_disjoint(weights, "weights", grads, "grads");
  CCN_DISPATCH(d, momentumUpdate, weights, grads, inc, epsOverCases, mom, wcEps);
}

void copyColumns(const Tensor& src, int64_t srcStart, Tensor& targets, int64_t targetStart, int64_t count,
                 float scaleTargets) {
  Device d = common_device({{"src", &src}, {"targets", &targets}});
  check_matrix(src, "src", src.rows(), src.cols());
  check_matrix(targets, "targets", src.rows(), targets.cols());
  CCN_CHECK(count > 0 && srcStart >= 0 && srcStart + count <= src.cols(), "copyColumns: columns [", srcStart, ", ",
            srcStart + count, ") are not within the ", src.cols(), " columns of src");
  CCN_CHECK(targetStart >= 0 && targetStart + count <= targets.cols(), "copyColumns: columns [", targetStart, ", ",
            targetStart + count, ") are not within the ", targets.cols(), " columns of targets");
  check_disjoint(targets, "targets", src, "src");
  CCN_DISPATCH(d, copyColumns, src, srcStart, targets, targetStart, count, scaleTargets);
}

void flagNonFinite(const Tensor& t, Tensor& flags, int64_t index) {
  Device d = common_device({{"t", &t}, {"flags", &flags}});
  check_tensor(t, "t");
  check_tensor(flags, "flags");
  CCN_CHECK(index >= 0 && index < flags.numel(), "flagNonFinite: index ", index, " is outside flags (",
            flags.numel(), " elements)");
  check_disjoint(flags, "flags", t, "t");
  if (t.numel() == 0) return;
  CCN_DISPATCH(d, flagNonFinite, t, flags, index);
}

}  // namespace ccn::ops
