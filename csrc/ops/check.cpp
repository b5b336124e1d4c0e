#include "ops/check.h"

#include <cstdint>

namespace ccn::ops {

static void check_defined(const Tensor& t, const char* name) {
  CCN_CHECK(t.defined(), "argument '", name, "' is not a tensor");
  CCN_CHECK(t.is_contiguous(), "argument '", name, "' must be contiguous (row-major), got shape ",
            shape_str(t.shape()), " with strides ", shape_str(t.strides()));
}

void check_matrix(const Tensor& t, const char* name, int64_t rows, int64_t cols) {
  check_defined(t, name);
  CCN_CHECK(t.ndim() >= 1 && t.cols() == cols && t.rows() == rows, "argument '", name,
            "' must have shape (", rows, ", ", cols, ") (or any shape whose last dimension is ",
            cols, " and whose other dimensions multiply to ", rows, "), got ", shape_str(t.shape()));
}

void check_numel(const Tensor& t, const char* name, int64_t count) {
  check_defined(t, name);
  CCN_CHECK(t.numel() == count, "argument '", name, "' must have ", count, " elements, got shape ",
            shape_str(t.shape()));
}

Device common_device(std::initializer_list<NamedTensor> tensors) {
  const NamedTensor* first = nullptr;
  for (const NamedTensor& nt : tensors) {
    CCN_CHECK(nt.second->defined(), "argument '", nt.first, "' is not a tensor");
    if (!first) {
      first = &nt;
      continue;
    }
    CCN_CHECK_TYPE(nt.second->device() == first->second->device(), "argument '", nt.first, "' is on ",
                   nt.second->device().str(), " but '", first->first, "' is on ",
                   first->second->device().str());
  }
  return first ? first->second->device() : Device::cpu();
}

void check_positive(int64_t value, const char* name) {
  CCN_CHECK(value > 0, "parameter '", name, "' must be positive, got ", value);
}

int64_t checked_size(const char* op, const char* what, std::initializer_list<int64_t> factors) {
  int64_t product = 1;
  bool wrapped = false;
  double approx = 1;  // the value to name when the exact product does not fit int64
  for (int64_t f : factors) {
    CCN_CHECK(f >= 0, op, ": ", what, " has a negative factor ", f);
    approx *= double(f);
    wrapped = __builtin_mul_overflow(product, f, &product) || wrapped;
  }
  if (approx == 0) return 0;
  CCN_CHECK(!wrapped, op, ": ", what, " = about ", approx, " is too large (more than 2^31 - 1)");
  CCN_CHECK(product <= kMaxIndex, op, ": ", what, " = ", product, " is too large (more than 2^31 - 1)");
  return product;
}

void check_coordinates(const char* op, const char* what, std::initializer_list<int64_t> terms) {
  int64_t sum = 0;
  for (int64_t t : terms) sum += t;  // each term is an int's magnitude: no int64 overflow
  CCN_CHECK(sum <= kMaxIndex, op, ": ", what, " = ", sum,
            " is too large (window coordinates must fit in 32 bits)");
}

void check_disjoint(const Tensor& out, const char* out_name, const Tensor& in, const char* in_name) {
  // Compared as integers: the two ranges may belong to unrelated allocations.
  auto out_begin = reinterpret_cast<uintptr_t>(out.data());
  auto in_begin = reinterpret_cast<uintptr_t>(in.data());
  uintptr_t out_end = out_begin + out.numel() * sizeof(float), in_end = in_begin + in.numel() * sizeof(float);
  bool overlap = out.numel() > 0 && in.numel() > 0 && out_begin < in_end && in_begin < out_end;
  CCN_CHECK(!overlap, "argument '", out_name, "' must not share memory with '", in_name, "'");
}

}  // namespace ccn::ops
