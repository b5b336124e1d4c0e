#include "core/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>

#include "core/error.h"
#ifdef CCN_WITH_CUDA
#include "core/cuda_runtime.h"
#endif

namespace ccn {
namespace {

// Sizes are rounded up so that blocks of nearly equal size share a free list.
size_t round_size(size_t bytes) {
  const size_t kQuantum = 512;
  return (bytes + kQuantum - 1) / kQuantum * kQuantum;
}

struct Pool {
  std::mutex mutex;
  std::multimap<size_t, void*> free_blocks;  // rounded size -> block
  AllocatorStats stats;
};

std::mutex pools_mutex;
std::unordered_map<int, Pool*> pools;  // key: -1 for the CPU, else the CUDA ordinal

int pool_key(Device d) { return d.is_cpu() ? -1 : d.index; }

Pool& pool_for(Device d) {
  std::lock_guard<std::mutex> lock(pools_mutex);
  Pool*& p = pools[pool_key(d)];
  if (!p) p = new Pool();  // lives for the whole process
  return *p;
}

void* system_alloc(Device d, size_t bytes) {
  if (d.is_cpu()) {
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    return p;
  }
#ifdef CCN_WITH_CUDA
  return cuda::raw_malloc(d.index, bytes);
#else
  CCN_FAIL("this build has no CUDA backend: cannot allocate on ", d.str());
#endif
}

void system_free(int key, void* p) {
  if (key < 0) {
    std::free(p);
    return;
  }
#ifdef CCN_WITH_CUDA
  cuda::raw_free(key, p);
#endif
}

}  // namespace

void* device_alloc(Device device, size_t bytes) {
  size_t size = round_size(bytes);
  Pool& pool = pool_for(device);
  std::lock_guard<std::mutex> lock(pool.mutex);
  void* block = nullptr;
  auto it = pool.free_blocks.find(size);
  if (it != pool.free_blocks.end()) {
    block = it->second;
    pool.free_blocks.erase(it);
    pool.stats.bytes_cached -= size;
  } else {
    try {
      block = system_alloc(device, size);
    } catch (...) {
      // Out of memory: give the cached blocks back and try once more.
      for (auto& kv : pool.free_blocks) system_free(pool_key(device), kv.second);
      pool.free_blocks.clear();
      pool.stats.bytes_cached = 0;
      block = system_alloc(device, size);
    }
  }
  pool.stats.bytes_in_use += size;
  if (pool.stats.bytes_in_use > pool.stats.peak_bytes_in_use) pool.stats.peak_bytes_in_use = pool.stats.bytes_in_use;
  return block;
}

void device_free(Device device, void* ptr, size_t bytes) {
  size_t size = round_size(bytes);
  Pool& pool = pool_for(device);
  std::lock_guard<std::mutex> lock(pool.mutex);
  pool.free_blocks.emplace(size, ptr);
  pool.stats.bytes_in_use -= size;
  pool.stats.bytes_cached += size;
}

size_t release_cached_memory() {
  std::lock_guard<std::mutex> lock(pools_mutex);
  size_t released = 0;
  for (auto& kv : pools) {
    Pool& pool = *kv.second;
    std::lock_guard<std::mutex> pool_lock(pool.mutex);
    for (auto& block : pool.free_blocks) {
      system_free(kv.first, block.second);
      released += block.first;
    }
    pool.free_blocks.clear();
    pool.stats.bytes_cached = 0;
  }
  return released;
}

AllocatorStats allocator_stats(Device device) {
  Pool& pool = pool_for(device);
  std::lock_guard<std::mutex> lock(pool.mutex);
  return pool.stats;
}

void reset_peak_stats(Device device) {
  Pool& pool = pool_for(device);
  std::lock_guard<std::mutex> lock(pool.mutex);
  pool.stats.peak_bytes_in_use = pool.stats.bytes_in_use;
}

}  // namespace ccn
