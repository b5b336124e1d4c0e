// A fixed pool of worker threads for the CPU backend. parallel_for splits [0, n) into
// contiguous chunks, one per thread, always the same way for the same n and thread count,
// so a CPU run is bit-for-bit repeatable (no work stealing, no racing reductions).
#pragma once
#include <cstdint>
#include <functional>

namespace ccn {

// Number of threads parallel_for uses (CCN_NUM_THREADS, else the hardware's count).
int num_threads();
void set_num_threads(int n);

// Calls fn(begin, end) on disjoint chunks covering [0, n). Chunks are at least `grain`
// long. A call made from inside a parallel_for runs serially on the calling thread.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

}  // namespace ccn
