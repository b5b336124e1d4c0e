// Error checks for CUDA calls and kernel launches: a failure becomes a C++ exception
// (RuntimeError in Python) naming the call, never a silent wrong result.
#pragma once
#include <cuda_runtime.h>

#include "core/error.h"
#include "core/cuda_runtime.h"
#include "core/tensor.h"

#define CCN_CUDA_CHECK(call)                                                                   \
  do {                                                                                         \
    cudaError_t ccn_err_ = (call);                                                             \
    if (ccn_err_ != cudaSuccess)                                                               \
      CCN_FAIL("CUDA error in ", #call, " (", __FILE__, ":", __LINE__, "): ", cudaGetErrorString(ccn_err_)); \
  } while (0)

// After a kernel launch: reports a bad launch configuration at once.
#define CCN_CUDA_CHECK_LAUNCH(kernel_name)                                                     \
  do {                                                                                         \
    cudaError_t ccn_err_ = cudaGetLastError();                                                 \
    if (ccn_err_ != cudaSuccess)                                                               \
      CCN_FAIL("CUDA kernel ", kernel_name, " failed to launch: ", cudaGetErrorString(ccn_err_)); \
  } while (0)

namespace ccn::cuda {

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

// Blocks for a grid-stride loop over n elements.
inline unsigned blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

// Makes the tensors' device current for this host thread.
inline void set_device(const Tensor& t) { CCN_CUDA_CHECK(cudaSetDevice(t.device().index)); }

// targets = scaleTargets * targets + scaleOutput * value; with scaleTargets == 0 the old
// target is not read, so a poisoned (NaN) target is overwritten.
__device__ __forceinline__ void store_scaled(float& target, float value, float scaleTargets, float scaleOutput) {
  target = scaleTargets == 0.f ? scaleOutput * value : scaleTargets * target + scaleOutput * value;
}

}  // namespace ccn::cuda
