// Helpers shared by the CUDA kernel files: index arithmetic and the host-side checks of
// the kernels' own limits (int32 indexing, grid dimensions).
#pragma once
#include <cstdint>

#include "cuda/cuda_check.cuh"

namespace ccn::cuda {

// Threads per block of the element-wise and gather kernels.
constexpr int kThreads = 256;

// Kernels with structured indexing (conv, pool, norm, image) use 32-bit indices: every
// tensor they touch must have fewer than 2^31 elements.
inline void check_int_indexable(const Tensor& t, const char* name) {
  CCN_CHECK(t.numel() <= INT32_MAX, "argument '", name, "' has ", t.numel(),
            " elements; the CUDA kernels index at most 2^31 - 1");
}

// gridDim.y and gridDim.z are limited to 65535.
inline void check_grid_yz(int64_t blocks, const char* what) {
  CCN_CHECK(blocks >= 1 && blocks <= 65535, what, " needs ", blocks,
            " thread blocks in a grid dimension limited to 65535");
}

// A scratch buffer of at least `count` floats on `device`, owned by the calling host thread
// and the current stream: kernels that use it are ordered on that stream, so it can be
// reused by the next routine without waiting. Valid until the next call from this thread.
float* workspace(const Device& device, int64_t count);

// targets[i] = scaleTargets * targets[i] + scaleOutput * sum over c < chunks of partials[c * size + i],
// chunks added in order: the second pass of the kernels that split a reduction into
// independent chunks (weightActs, split-K gemm) and stay deterministic.
void sum_chunks(const float* partials, int chunks, float* targets, int64_t size, float scaleTargets,
                float scaleOutput);

inline int ceil_div_host(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

// Floor and ceiling of a / b for b > 0 and any sign of a (C++ division truncates).
__device__ __forceinline__ int floor_div(int a, int b) { return a >= 0 ? a / b : -((b - 1 - a) / b); }
__device__ __forceinline__ int ceil_div(int a, int b) { return -floor_div(-a, b); }

// Coordinates of element i of a (channels, sizeY, sizeX, numImages) tensor, in 32-bit
// arithmetic (64-bit division is several times slower on the GPU).
struct Coords {
  int c, y, x, n;
};
__device__ __forceinline__ Coords unravel(int i, int sizeY, int sizeX, int numImages) {
  Coords at;
  at.n = i % numImages;
  i /= numImages;
  at.x = i % sizeX;
  i /= sizeX;
  at.y = i % sizeY;
  at.c = i / sizeY;
  return at;
}

// The grid-stride loop over n elements of every element-wise kernel.
#define CCN_GRID_STRIDE_LOOP(i, n)                                                          \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(blockDim.x) * gridDim.x)

}  // namespace ccn::cuda
