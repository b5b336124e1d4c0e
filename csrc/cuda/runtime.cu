// CUDA runtime services for the core: device memory, copies (host<->device and peer),
// streams. Kernels launched by a host thread go to that thread's current stream.
#include <cuda_runtime.h>

#include "cuda/cuda_check.cuh"

namespace ccn::cuda {

namespace {
thread_local void* tls_stream = nullptr;

__global__ void fill_kernel(float* p, float value, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(blockDim.x) * gridDim.x)
    p[i] = value;
}
}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: clear the sticky error, report none
    return 0;
  }
  return n;
}

void* raw_malloc(int device, size_t bytes) {
  CCN_CUDA_CHECK(cudaSetDevice(device));
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::bad_alloc();
  }
  return p;
}

long long free_bytes(int device) {
  size_t free = 0, total = 0;
  if (cudaSetDevice(device) != cudaSuccess || cudaMemGetInfo(&free, &total) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return static_cast<long long>(free);
}

void raw_free(int device, void* ptr) {
  cudaSetDevice(device);
  cudaFree(ptr);
}

void copy(void* dst, int dst_device, const void* src, int src_device, size_t bytes) {
  cudaStream_t s = stream();
  if (dst_device >= 0 && src_device >= 0 && dst_device != src_device) {
    CCN_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, bytes, s));
  } else {
    if (dst_device >= 0) CCN_CUDA_CHECK(cudaSetDevice(dst_device));
    else if (src_device >= 0) CCN_CUDA_CHECK(cudaSetDevice(src_device));
    CCN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
  }
  CCN_CUDA_CHECK(cudaStreamSynchronize(s));
}

void memset_zero(void* ptr, int device, size_t bytes) {
  CCN_CUDA_CHECK(cudaSetDevice(device));
  CCN_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream()));
}

void fill(float* ptr, int device, float value, size_t count) {
  CCN_CUDA_CHECK(cudaSetDevice(device));
  fill_kernel<<<blocks_for(count, 256), 256, 0, stream()>>>(ptr, value, count);
  CCN_CUDA_CHECK_LAUNCH("fill_kernel");
}

void* current_stream() { return tls_stream; }
void set_current_stream(void* s) { tls_stream = s; }

void* create_stream(int device) {
  CCN_CUDA_CHECK(cudaSetDevice(device));
  cudaStream_t s;
  CCN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

void synchronize_stream(void* s) { CCN_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(s))); }

void synchronize_device(int device) {
  CCN_CUDA_CHECK(cudaSetDevice(device));
  CCN_CUDA_CHECK(cudaDeviceSynchronize());
}

void* host_alloc_pinned(size_t bytes) {
  void* p = nullptr;
  if (cudaMallocHost(&p, bytes) != cudaSuccess) {
    cudaGetLastError();
    throw std::bad_alloc();
  }
  return p;
}

void host_free_pinned(void* ptr) { cudaFreeHost(ptr); }

void copy_to_device_async(void* dst, int device, const void* src, size_t bytes, void* s) {
  CCN_CUDA_CHECK(cudaSetDevice(device));
  CCN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(s)));
}

void* create_event(int device) {
  CCN_CUDA_CHECK(cudaSetDevice(device));
  cudaEvent_t e;
  CCN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

void destroy_event(void* e) { cudaEventDestroy(static_cast<cudaEvent_t>(e)); }

void record_event(void* e, void* s) {
  CCN_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(e), static_cast<cudaStream_t>(s)));
}

void synchronize_event(void* e) { CCN_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(e))); }

}  // namespace ccn::cuda
