// The kernel lab's common part (see lab.py): the geometry, index helpers, and the C entry
// points each numbered version exports (device memory, one run, a timed run). A version
// defines lab_launch(); everything else is here.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#define LAB_EXPORT extern "C" __attribute__((visibility("default")))

// The engine's ConvGeometry for one batch (ops/conv.h), flattened.
struct LabConv {
  int channels, imgSizeY, imgSizeX, filterSize, numFilters, padding, stride, modulesY, modulesX, groups, numImages;
  __host__ __device__ int filterChannels() const { return channels / groups; }
  __host__ __device__ int filterPixels() const { return filterSize * filterSize; }
};

__device__ __forceinline__ int lab_ceil_div(int a, int b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
__device__ __forceinline__ int lab_floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int lab_ceil_div_host(int64_t a, int64_t b) { return int((a + b - 1) / b); }

// Launches the version's kernel(s): out = op(a, b) for the geometry; lab_supports says
// whether the version handles that geometry.
void lab_launch(const float* a, const float* b, float* out, const LabConv& g);
bool lab_supports(const LabConv& g);

LAB_EXPORT void* lab_alloc(size_t bytes) {
  void* p = nullptr;
  return cudaMalloc(&p, bytes) == cudaSuccess ? p : nullptr;
}
LAB_EXPORT void lab_free(void* p) { cudaFree(p); }
LAB_EXPORT void lab_upload(void* d, const void* h, size_t n) { cudaMemcpy(d, h, n, cudaMemcpyHostToDevice); }
LAB_EXPORT void lab_download(void* h, const void* d, size_t n) { cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost); }

LAB_EXPORT int lab_handles(const int* geometry) {
  LabConv g;
  std::copy(geometry, geometry + 11, &g.channels);
  return lab_supports(g);
}

// 0, or the CUDA error (its message in *message).
LAB_EXPORT int lab_run(const float* a, const float* b, float* out, const int* geometry, const char** message) {
  LabConv g;
  std::copy(geometry, geometry + 11, &g.channels);
  lab_launch(a, b, out, g);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  *message = cudaGetErrorString(e);
  return int(e);
}

#ifdef __CUDACC__
// Median milliseconds of `repeats` runs, each after the L2 cache is flushed (a 256 MiB
// memset), timed with CUDA events.
LAB_EXPORT float lab_time(const float* a, const float* b, float* out, const int* geometry, int repeats) {
  LabConv g;
  std::copy(geometry, geometry + 11, &g.channels);
  void* flush = nullptr;
  const size_t flushBytes = size_t(256) << 20;
  cudaMalloc(&flush, flushBytes);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> ms;
  for (int r = 0; r < repeats; ++r) {
    cudaMemset(flush, r, flushBytes);
    cudaEventRecord(start);
    lab_launch(a, b, out, g);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float t = 0.f;
    cudaEventElapsedTime(&t, start, stop);
    ms.push_back(t);
  }
  cudaFree(flush);
  std::sort(ms.begin(), ms.end());
  return ms.empty() ? -1.f : ms[ms.size() / 2];
}
#endif
