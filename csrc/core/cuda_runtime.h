// The few CUDA runtime services the core needs (memory, copies, device count, streams),
// implemented in csrc/cuda/runtime.cu. Only compiled in when CCN_WITH_CUDA is defined.
#pragma once
#include <cstddef>

namespace ccn::cuda {

int device_count();
void* raw_malloc(int device, size_t bytes);
// Free device memory (cudaMemGetInfo); -1 when it cannot be asked.
long long free_bytes(int device);
void raw_free(int device, void* ptr);
// Copies between host and device or between two devices (peer copy), then waits for it.
void copy(void* dst, int dst_device, const void* src, int src_device, size_t bytes);
void memset_zero(void* ptr, int device, size_t bytes);
void fill(float* ptr, int device, float value, size_t count);

// The stream that kernels launched by this host thread go to (one per logical device;
// the net's worker thread for a device sets it). nullptr means the default stream.
void* current_stream();
void set_current_stream(void* stream);
void* create_stream(int device);
void synchronize_stream(void* stream);
// Waits for all work on a device.
void synchronize_device(int device);

// Page-locked host memory: host-to-device copies from it run asynchronously.
void* host_alloc_pinned(size_t bytes);
void host_free_pinned(void* ptr);
// Starts a copy of `bytes` from pinned host memory to `device` on `stream`; returns at once.
void copy_to_device_async(void* dst, int device, const void* src, size_t bytes, void* stream);
// Events mark a point in a stream's work.
void* create_event(int device);
void destroy_event(void* event);
void record_event(void* event, void* stream);
// Blocks the calling host thread until the work before the event's record is done.
void synchronize_event(void* event);

}  // namespace ccn::cuda
