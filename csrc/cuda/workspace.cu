// Per-thread, per-stream scratch buffers for kernels that need temporaries (weightActs' and
// gemm's partial sums, contrastNormUndo's intermediate gradient). A buffer only grows; before
// an old, smaller one goes back to the allocator (where another stream could take it), the
// stream that used it is drained. Also the ordered sum of such partial sums (one thread per
// output element, grid-stride loop).
#include <map>
#include <utility>

#include "cuda/kernel_util.cuh"

namespace ccn::cuda {
namespace {

__global__ void sum_chunks_kernel(const float* partials, int chunks, float* targets, int64_t size, float sT,
                                  float sO) {
  CCN_GRID_STRIDE_LOOP(i, size) {
    float sum = 0.f;
    for (int c = 0; c < chunks; ++c) sum += partials[c * size + i];
    store_scaled(targets[i], sum, sT, sO);
  }
}

}  // namespace

float* workspace(const Device& device, int64_t count) {
  thread_local std::map<std::pair<int, cudaStream_t>, Tensor> buffers;
  Tensor& buffer = buffers[{device.index, stream()}];
  if (!buffer.defined() || buffer.numel() < count) {
    if (buffer.defined()) CCN_CUDA_CHECK(cudaStreamSynchronize(stream()));
    buffer = Tensor();
    buffer = Tensor::empty({count}, device);
  }
  return buffer.data();
}

void sum_chunks(const float* partials, int chunks, float* targets, int64_t size, float scaleTargets,
                float scaleOutput) {
  if (size == 0) return;
  sum_chunks_kernel<<<blocks_for(size, kThreads), kThreads, 0, stream()>>>(partials, chunks, targets, size,
                                                                           scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("sum_chunks_kernel");
}

}  // namespace ccn::cuda
