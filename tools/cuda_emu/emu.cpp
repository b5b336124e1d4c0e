// The CUDA emulator's scheduler (see build.sh): blocks run one after another; the threads of
// a block are ucontext fibers on the launching host thread, switched at __syncthreads(), in a
// new random order in every phase between barriers, so that a missing barrier shows up as a
// wrong result. Launches from several host threads are serialized.
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "cuda_runtime.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace emu {
cudaError_t last_error = cudaSuccess;
namespace {

constexpr size_t kStackBytes = 256 * 1024;

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;  // uninitialized: pages are committed only when touched
  uint3 index;
  bool done = false;
};

std::mutex launch_mutex;
ucontext_t scheduler;
std::vector<Fiber> fibers;
size_t current = 0;
const std::function<void()>* kernel_body = nullptr;
std::mt19937 phase_order(12345);

void fiber_main() {
  (*kernel_body)();
  fibers[current].done = true;
  swapcontext(&fibers[current].context, &scheduler);
}

bool valid_launch(dim3 grid, dim3 block, size_t smem) {
  size_t threads = size_t(block.x) * block.y * block.z;
  return threads >= 1 && threads <= 1024 && block.z <= 64 && grid.x >= 1 && grid.y >= 1 && grid.z >= 1 &&
         grid.y <= 65535 && grid.z <= 65535 && grid.x <= 2147483647u && smem <= 48 * 1024;
}

}  // namespace

void syncthreads() { swapcontext(&fibers[current].context, &scheduler); }

void launch(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body, const char* name) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  if (!valid_launch(grid, block, smem)) {
    std::fprintf(stderr, "cuda_emu: bad launch of %s: grid (%u, %u, %u), block (%u, %u, %u), %zu bytes shared\n",
                 name, grid.x, grid.y, grid.z, block.x, block.y, block.z, smem);
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  const size_t threads = size_t(block.x) * block.y * block.z;
  gridDim = grid;
  blockDim = block;
  kernel_body = &body;
  if (fibers.size() < threads) fibers.resize(threads);
  std::vector<size_t> order(threads);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = uint3{bx, by, bz};
        for (size_t i = 0; i < threads; ++i) {
          Fiber& f = fibers[i];
          if (!f.stack) f.stack.reset(new char[kStackBytes]);
          f.index = uint3{unsigned(i % block.x), unsigned(i / block.x % block.y), unsigned(i / (block.x * block.y))};
          f.done = false;
          getcontext(&f.context);
          f.context.uc_stack.ss_sp = f.stack.get();
          f.context.uc_stack.ss_size = kStackBytes;
          f.context.uc_link = nullptr;
          makecontext(&f.context, fiber_main, 0);
          order[i] = i;
        }
        // Each phase runs every live thread up to its next barrier (or its end).
        for (bool live = true; live;) {
          std::shuffle(order.begin(), order.end(), phase_order);
          live = false;
          for (size_t i : order) {
            if (fibers[i].done) continue;
            current = i;
            threadIdx = fibers[i].index;
            swapcontext(&scheduler, &fibers[i].context);
            live = live || !fibers[i].done;
          }
        }
      }
}

}  // namespace emu
