// Dense and element-wise routines: the GEMM behind fully-connected layers, biases,
// element-wise sums / products / max, dropout masks and the weight update.
// Matrices are the tensors' matrix views (rows = product of all dims but the last,
// cols = last dim), row-major. targets = scaleTargets * targets + scaleOutput * result.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace ccn {

namespace ops {
#include "ops/dense.inc"
}
namespace cpu {
#include "ops/dense.inc"
}
#ifdef CCN_WITH_CUDA
namespace cuda {
#include "ops/dense.inc"
}
#endif

}  // namespace ccn
