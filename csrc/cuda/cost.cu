// Softmax and cost routines on the GPU.
//   softmax / softmaxGrad / softmaxCrossEntGrad: per case (column), over classes.
//   logregGrad, softmaxLogregGrad, crossEntGrad: element-wise over (numClasses, numCases).
//   logregCost, crossEntCost, sumOfSquares: each block reduces its cases (elements) in a
//     fixed tree, in double, into a small device buffer that is copied back (synchronously)
//     and summed on the host in block order, so the result is deterministic.
// Layout: scores and probabilities (numClasses, numCases), case index fastest; logreg
// labels (numCases) class indices stored as floats; cross-entropy labels like probs.
// Launch: kThreads per block; the per-case kernels give one thread per case (consecutive
// threads read consecutive cases: coalesced), the element-wise ones a grid-stride loop.
// Preconditions (checked by ops::): shapes agree, one device, contiguous, topK >= 1.
// Checked here: logreg labels are integers in [0, numClasses) (the kernels flag the first
// bad case; the host reads the flag back and raises ValueError naming 'labels').
#include <algorithm>
#include <cfloat>
#include <vector>

#include "cuda/kernel_util.cuh"
#include "ops/cost.h"

namespace ccn::cuda {
namespace {

// The sum of v over the block's threads, in a fixed order; every thread gets it.
__device__ double block_sum(double v, double* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) scratch[threadIdx.x] += scratch[threadIdx.x + half];
    __syncthreads();
  }
  double total = scratch[0];
  __syncthreads();  // scratch is reused by the next call
  return total;
}

__device__ double block_min(double v, double* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) scratch[threadIdx.x] = fmin(scratch[threadIdx.x], scratch[threadIdx.x + half]);
    __syncthreads();
  }
  double result = scratch[0];
  __syncthreads();
  return result;
}

__device__ __forceinline__ bool is_class_index(float label, int numClasses) {
  return label >= 0.f && label < float(numClasses) && label == floorf(label);
}

// Per-block results of the cost kernels: cost, error, top-k error, first bad case (or
// kNoBadCase).
constexpr int kCostFields = 4;
constexpr double kNoBadCase = 1e300;

__global__ void softmax_kernel(const float* inputs, float* targets, int numClasses, int numCases, float sT,
                               float sO) {
  int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= numCases) return;
  float largest = -INFINITY;
  for (int k = 0; k < numClasses; ++k) largest = fmaxf(largest, inputs[int64_t(k) * numCases + n]);
  float sum = 0.f;
  for (int k = 0; k < numClasses; ++k) sum += expf(inputs[int64_t(k) * numCases + n] - largest);
  for (int k = 0; k < numClasses; ++k) {
    int64_t i = int64_t(k) * numCases + n;
    store_scaled(targets[i], expf(inputs[i] - largest) / sum, sT, sO);
  }
}

__global__ void softmax_grad_kernel(const float* outGrads, const float* acts, float* targets, int numClasses,
                                    int numCases, float sT, float sO) {
  int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= numCases) return;
  float dot = 0.f;
  for (int k = 0; k < numClasses; ++k) dot += outGrads[int64_t(k) * numCases + n] * acts[int64_t(k) * numCases + n];
  for (int k = 0; k < numClasses; ++k) {
    int64_t i = int64_t(k) * numCases + n;
    store_scaled(targets[i], acts[i] * (outGrads[i] - dot), sT, sO);
  }
}

__global__ void __launch_bounds__(kThreads)
logreg_cost_kernel(const float* labels, const float* probs, int numClasses, int numCases, int topK,
                   double* results) {
  __shared__ double scratch[kThreads];
  int n = blockIdx.x * kThreads + threadIdx.x;
  double cost = 0, error = 0, errorTopK = 0, badCase = kNoBadCase;
  if (n < numCases) {
    float label = labels[n];
    if (is_class_index(label, numClasses)) {
      int l = int(label);
      float p = probs[int64_t(l) * numCases + n];
      int rivals = 0;  // classes other than the label scoring at least as high: ties count against it
      // a NaN or Inf probability makes the case an error (NaN compares false: it would win)
      bool finite = fabsf(p) <= FLT_MAX;
      for (int k = 0; k < numClasses; ++k) {
        float q = probs[int64_t(k) * numCases + n];
        rivals += k != l && q >= p;
        finite = finite && fabsf(q) <= FLT_MAX;
      }
      cost = -log(double(probabilityForLog(p)));
      error = !finite || rivals >= 1;
      errorTopK = !finite || rivals >= topK;
    } else {
      badCase = n;
    }
  }
  double* out = results + blockIdx.x * kCostFields;
  cost = block_sum(cost, scratch);
  error = block_sum(error, scratch);
  errorTopK = block_sum(errorTopK, scratch);
  badCase = block_min(badCase, scratch);
  if (threadIdx.x == 0) {
    out[0] = cost;
    out[1] = error;
    out[2] = errorTopK;
    out[3] = badCase;
  }
}

__global__ void __launch_bounds__(kThreads)
cross_ent_cost_kernel(const float* labels, const float* probs, int numClasses, int numCases, double* results) {
  __shared__ double scratch[kThreads];
  int n = blockIdx.x * kThreads + threadIdx.x;
  double cost = 0, error = 0;
  if (n < numCases) {
    int bestProb = 0, bestLabel = 0;  // first index of the largest value, like argmax
    for (int k = 0; k < numClasses; ++k) {
      int64_t i = int64_t(k) * numCases + n;
      if (labels[i] != 0.f) cost -= double(labels[i]) * log(double(probabilityForLog(probs[i])));  // 0 * log 0 counts as 0
      if (probs[i] > probs[int64_t(bestProb) * numCases + n]) bestProb = k;
      if (labels[i] > labels[int64_t(bestLabel) * numCases + n]) bestLabel = k;
    }
    error = bestProb != bestLabel;
  }
  double* out = results + blockIdx.x * kCostFields;
  cost = block_sum(cost, scratch);
  error = block_sum(error, scratch);
  if (threadIdx.x == 0) {
    out[0] = cost;
    out[1] = error;
    out[2] = error;  // top-k is top-1 for cross-entropy
    out[3] = kNoBadCase;
  }
}

// Also flags the first case whose label is not a class index in *badCase (kept at its
// initial value when there is none).
__global__ void logreg_grad_kernel(const float* labels, const float* probs, float* targets, int64_t total,
                                   int numClasses, int numCases, float coeff, bool withSoftmax, int* badCase,
                                   float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    if (i < numCases && !is_class_index(labels[i], numClasses)) atomicMin(badCase, int(i));
    float isLabel = float(i / numCases) == labels[i % numCases] ? 1.f : 0.f;
    float grad = withSoftmax ? isLabel - probs[i] : isLabel / probs[i];
    store_scaled(targets[i], coeff * grad, sT, sO);
  }
}

__global__ void cross_ent_grad_kernel(const float* labels, const float* probs, float* targets, int64_t total,
                                      float coeff, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) store_scaled(targets[i], coeff * labels[i] / probs[i], sT, sO);
}

__global__ void softmax_cross_ent_grad_kernel(const float* labels, const float* probs, float* targets,
                                              int numClasses, int numCases, float coeff, float sT, float sO) {
  int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= numCases) return;
  float labelSum = 0.f;
  for (int k = 0; k < numClasses; ++k) labelSum += labels[int64_t(k) * numCases + n];
  for (int k = 0; k < numClasses; ++k) {
    int64_t i = int64_t(k) * numCases + n;
    store_scaled(targets[i], coeff * (labels[i] - probs[i] * labelSum), sT, sO);
  }
}

__global__ void __launch_bounds__(kThreads)
sum_of_squares_kernel(const float* x, int64_t n, double* partials) {
  __shared__ double scratch[kThreads];
  double sum = 0;
  CCN_GRID_STRIDE_LOOP(i, n) sum += double(x[i]) * double(x[i]);
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

__device__ inline double safe_log(double x) { return x > 0.0 ? log(x) : -50.0; }

__device__ inline double element_cost(ElementCost kind, double t, double y) {
  if (kind == ElementCost::BinaryCrossEnt) return -(t * safe_log(y) + (1.0 - t) * safe_log(1.0 - y));
  const double d = y - t;
  return log1p(d * d);
}

__global__ void __launch_bounds__(kThreads)
element_cost_kernel(ElementCost kind, const float* labels, const float* outputs, int64_t n, double* partials) {
  __shared__ double scratch[kThreads];
  double sum = 0;
  CCN_GRID_STRIDE_LOOP(i, n) sum += element_cost(kind, labels[i], outputs[i]);
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

__global__ void element_cost_grad_kernel(ElementCost kind, const float* labels, const float* outputs, float* targets,
                                         int64_t total, float coeff, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const float t = labels[i], y = outputs[i];
    float g;
    if (kind == ElementCost::BinaryCrossEnt) {
      g = t / y - (1.f - t) / (1.f - y);
    } else {
      const float d = y - t;
      g = -2.f * d / (1.f + d * d);
    }
    store_scaled(targets[i], coeff * g, sT, sO);
  }
}

// A device buffer of `count` doubles (from the caching allocator) and its host copy.
struct ReductionBuffer {
  Tensor storage;
  explicit ReductionBuffer(const Tensor& like, int64_t count)
      : storage(Tensor::empty({2 * count}, like.device())) {}
  double* device_ptr() const { return reinterpret_cast<double*>(storage.data()); }
  std::vector<double> to_host() const {
    std::vector<double> host(storage.numel() / 2);
    copy_bytes(host.data(), Device::cpu(), storage.data(), storage.device(), host.size() * sizeof(double));
    return host;
  }
};

CostResult sum_cost_blocks(const std::vector<double>& blocks) {
  CostResult r;
  for (size_t b = 0; b < blocks.size(); b += kCostFields) {
    r.cost += blocks[b];
    r.error += blocks[b + 1];
    r.errorTopK += blocks[b + 2];
  }
  return r;
}

void check_case_count(int64_t numCases, int64_t total) {
  CCN_CHECK(numCases <= INT32_MAX && total / numCases <= INT32_MAX, "cost: ", total,
            " elements exceed the kernels' 32-bit class and case counts");
}

void raise_bad_label(int64_t badCase, const Tensor& labels, int64_t numClasses) {
  float label = 0.f;
  copy_bytes(&label, Device::cpu(), labels.data() + badCase, labels.device(), sizeof(float));
  CCN_CHECK(false, "argument 'labels': case ", badCase, " has label ", label,
            ", expected an integer class index in [0, ", numClasses, ")");
}

void logreg_grad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff, bool withSoftmax,
                 float scaleTargets, float scaleOutput) {
  int64_t total = probs.numel();
  if (total == 0) return;
  check_case_count(probs.cols(), total);
  set_device(targets);
  constexpr int kNoBadLabel = 0x7f7f7f7f;  // every byte 0x7f: set by one memset
  Tensor flag = Tensor::empty({1}, probs.device());
  int* badCase = reinterpret_cast<int*>(flag.data());
  CCN_CUDA_CHECK(cudaMemsetAsync(badCase, 0x7f, sizeof(int), stream()));
  logreg_grad_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      labels.data(), probs.data(), targets.data(), total, int(probs.rows()), int(probs.cols()), coeff, withSoftmax,
      badCase, scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("logreg_grad_kernel");
  int firstBad = 0;
  copy_bytes(&firstBad, Device::cpu(), badCase, probs.device(), sizeof(int));
  if (firstBad != kNoBadLabel) raise_bad_label(firstBad, labels, probs.rows());
}

}  // namespace

void softmax(const Tensor& inputs, Tensor& targets, float scaleTargets, float scaleOutput) {
  int64_t numCases = inputs.cols();
  if (inputs.numel() == 0) return;
  check_case_count(numCases, inputs.numel());
  set_device(targets);
  softmax_kernel<<<ceil_div_host(numCases, kThreads), kThreads, 0, stream()>>>(
      inputs.data(), targets.data(), int(inputs.rows()), int(numCases), scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("softmax_kernel");
}

void softmaxGrad(const Tensor& outGrads, const Tensor& acts, Tensor& targets, float scaleTargets,
                 float scaleOutput) {
  int64_t numCases = acts.cols();
  if (acts.numel() == 0) return;
  check_case_count(numCases, acts.numel());
  set_device(targets);
  softmax_grad_kernel<<<ceil_div_host(numCases, kThreads), kThreads, 0, stream()>>>(
      outGrads.data(), acts.data(), targets.data(), int(acts.rows()), int(numCases), scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("softmax_grad_kernel");
}

CostResult logregCost(const Tensor& labels, const Tensor& probs, int topK) {
  int64_t numCases = probs.cols(), numClasses = probs.rows();
  if (numCases == 0) return CostResult{};
  check_case_count(numCases, probs.numel());
  set_device(probs);
  int blocks = ceil_div_host(numCases, kThreads);
  ReductionBuffer buffer(probs, int64_t(blocks) * kCostFields);
  logreg_cost_kernel<<<blocks, kThreads, 0, stream()>>>(labels.data(), probs.data(), int(numClasses),
                                                        int(numCases), topK, buffer.device_ptr());
  CCN_CUDA_CHECK_LAUNCH("logreg_cost_kernel");
  std::vector<double> results = buffer.to_host();
  for (int b = 0; b < blocks; ++b) {
    double badCase = results[size_t(b) * kCostFields + 3];
    if (badCase != kNoBadCase) raise_bad_label(int64_t(badCase), labels, numClasses);
  }
  return sum_cost_blocks(results);
}

void logregGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff, float scaleTargets,
                float scaleOutput) {
  logreg_grad(labels, probs, targets, coeff, false, scaleTargets, scaleOutput);
}

void softmaxLogregGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff,
                       float scaleTargets, float scaleOutput) {
  logreg_grad(labels, probs, targets, coeff, true, scaleTargets, scaleOutput);
}

CostResult crossEntCost(const Tensor& labels, const Tensor& probs) {
  int64_t numCases = probs.cols();
  if (numCases == 0) return CostResult{};
  check_case_count(numCases, probs.numel());
  set_device(probs);
  int blocks = ceil_div_host(numCases, kThreads);
  ReductionBuffer buffer(probs, int64_t(blocks) * kCostFields);
  cross_ent_cost_kernel<<<blocks, kThreads, 0, stream()>>>(labels.data(), probs.data(), int(probs.rows()),
                                                           int(numCases), buffer.device_ptr());
  CCN_CUDA_CHECK_LAUNCH("cross_ent_cost_kernel");
  return sum_cost_blocks(buffer.to_host());
}

void crossEntGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff, float scaleTargets,
                  float scaleOutput) {
  int64_t total = probs.numel();
  if (total == 0) return;
  set_device(targets);
  cross_ent_grad_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      labels.data(), probs.data(), targets.data(), total, coeff, scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("cross_ent_grad_kernel");
}

void softmaxCrossEntGrad(const Tensor& labels, const Tensor& probs, Tensor& targets, float coeff,
                         float scaleTargets, float scaleOutput) {
  int64_t numCases = probs.cols();
  if (probs.numel() == 0) return;
  check_case_count(numCases, probs.numel());
  set_device(targets);
  softmax_cross_ent_grad_kernel<<<ceil_div_host(numCases, kThreads), kThreads, 0, stream()>>>(
      labels.data(), probs.data(), targets.data(), int(probs.rows()), int(numCases), coeff, scaleTargets,
      scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("softmax_cross_ent_grad_kernel");
}

double sumOfSquares(const Tensor& inputs) {
  int64_t n = inputs.numel();
  if (n == 0) return 0.0;
  set_device(inputs);
  // The block count depends on n only, so the summation order (and the result) is fixed.
  int blocks = static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 1024));
  ReductionBuffer buffer(inputs, blocks);
  sum_of_squares_kernel<<<blocks, kThreads, 0, stream()>>>(inputs.data(), n, buffer.device_ptr());
  CCN_CUDA_CHECK_LAUNCH("sum_of_squares_kernel");
  double total = 0;
  for (double partial : buffer.to_host()) total += partial;
  return total;
}

double elementCost(ElementCost kind, const Tensor& labels, const Tensor& outputs) {
  int64_t n = outputs.numel();
  if (n == 0) return 0.0;
  set_device(outputs);
  // The block count depends on n only, so the summation order (and the result) is fixed.
  int blocks = static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 1024));
  ReductionBuffer buffer(outputs, blocks);
  element_cost_kernel<<<blocks, kThreads, 0, stream()>>>(kind, labels.data(), outputs.data(), n, buffer.device_ptr());
  CCN_CUDA_CHECK_LAUNCH("element_cost_kernel");
  double total = 0;
  for (double partial : buffer.to_host()) total += partial;
  return total;
}

void elementCostGrad(ElementCost kind, const Tensor& labels, const Tensor& outputs, Tensor& targets, float coeff,
                     float scaleTargets, float scaleOutput) {
  int64_t total = outputs.numel();
  if (total == 0) return;
  set_device(targets);
  element_cost_grad_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      kind, labels.data(), outputs.data(), targets.data(), total, coeff, scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("element_cost_grad_kernel");
}

}  // namespace ccn::cuda
