// Caching allocator, one pool per device. Freed blocks are kept in per-size free lists and
// handed out again, so a training loop reaches a steady state with no calls to the
// system allocator (malloc / cudaMalloc) per batch.
#pragma once
#include <cstddef>
#include <memory>

#include "core/device.h"

namespace ccn {

// Returns a block of at least `bytes` bytes (64-byte aligned) on `device`.
void* device_alloc(Device device, size_t bytes);
// Returns a block obtained from device_alloc to its pool.
void device_free(Device device, void* ptr, size_t bytes);
// Gives every cached (unused) block back to the system. Returns the bytes released.
size_t release_cached_memory();

struct AllocatorStats {
  size_t bytes_in_use = 0;       // handed out and not yet freed
  size_t peak_bytes_in_use = 0;  // high-water mark of bytes_in_use
  size_t bytes_cached = 0;       // held in free lists
};
AllocatorStats allocator_stats(Device device);
void reset_peak_stats(Device device);

}  // namespace ccn
