// Per-thread, per-stream scratch buffers for kernels that need temporaries (weightActs'
// partial sums, contrastNormUndo's intermediate gradient). A buffer only grows; before an
// old, smaller one goes back to the allocator (where another stream could take it), the
// stream that used it is drained.
#include <map>
#include <utility>

#include "cuda/kernel_util.cuh"

namespace ccn::cuda {

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

}  // namespace ccn::cuda
