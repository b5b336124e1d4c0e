// Host-side precondition checks shared by every op, and the device dispatch.
// Each op's entry point (csrc/ops/<family>.cpp) checks its arguments here, so the CPU
// and CUDA backends can assume well-formed input, and a bad call from Python becomes a
// ValueError / TypeError that names the argument.
#pragma once
#include <initializer_list>
#include <utility>

#include "core/error.h"
#include "core/tensor.h"

namespace ccn::ops {

using NamedTensor = std::pair<const char*, const Tensor*>;

// `t` must be a defined, contiguous tensor whose matrix view is (rows, cols).
void check_matrix(const Tensor& t, const char* name, int64_t rows, int64_t cols);
// `t` must be a defined, contiguous tensor with exactly `count` elements.
void check_numel(const Tensor& t, const char* name, int64_t count);
// All tensors live on one device; returns it.
Device common_device(std::initializer_list<NamedTensor> tensors);
// A positive integer parameter.
void check_positive(int64_t value, const char* name);
// The largest count or coordinate the backends handle as int (CPU window arithmetic, the
// CUDA kernels' 32-bit indices).
constexpr int64_t kMaxIndex = 2147483647;  // 2^31 - 1
// The product of non-negative sizes, refused unless it is at most kMaxIndex: a ValueError
// "<op>: <what> = <value> is too large (more than 2^31 - 1)". Multiplied step by step
// with an overflow check, so no choice of factors wraps int64 into a small product.
int64_t checked_size(const char* op, const char* what, std::initializer_list<int64_t> factors);
// A sum of non-negative magnitudes (extents, window sizes, |offsets|, strides) that bounds
// every window coordinate a routine computes in int: refused unless at most kMaxIndex.
void check_coordinates(const char* op, const char* what, std::initializer_list<int64_t> terms);
// The output `out` must not share memory with the input `in` (for routines that read an
// input element after writing some output element, where aliasing would corrupt the result).
void check_disjoint(const Tensor& out, const char* out_name, const Tensor& in, const char* in_name);

}  // namespace ccn::ops

// Calls cpu::fn or cuda::fn with the same arguments, by device.
#ifdef CCN_WITH_CUDA
#define CCN_DISPATCH(device, fn, ...) \
  ((device).is_cuda() ? ::ccn::cuda::fn(__VA_ARGS__) : ::ccn::cpu::fn(__VA_ARGS__))
#else
#define CCN_DISPATCH(device, fn, ...)                                                  \
  ((device).is_cuda() ? throw ::ccn::TypeError("this build of ccn has no CUDA backend") \
                      : ::ccn::cpu::fn(__VA_ARGS__))
#endif
