// Neurons on the GPU: one thread per element, grid-stride loop.
//   neuronAct:  targets = sT * targets + sO * f(x)
//   neuronGrad: targets = sT * targets + sO * outGrads * f'(x, f(x))
// Layout: any (element-wise over numel). Launch: 256 threads per block, blocks_for(n).
// Preconditions (checked by ops::neuron*): same element count, same device, contiguous.
#include "cuda/cuda_check.cuh"
#include "ops/neuron.h"

namespace ccn::cuda {
namespace {

__device__ __forceinline__ float activate(float x, NeuronType type, float a, float b) {
  switch (type) {
    case NeuronType::Ident: return x;
    case NeuronType::Relu: return x > 0.f ? x : 0.f;
    case NeuronType::Logistic: return 1.f / (1.f + expf(-x));
    case NeuronType::Tanh: return a * tanhf(b * x);
    case NeuronType::Abs: return fabsf(x);
    case NeuronType::Square: return x * x;
    case NeuronType::Sqrt: return sqrtf(x);
    case NeuronType::SoftRelu: return x > 0.f ? x + log1pf(expf(-x)) : log1pf(expf(x));
    case NeuronType::BRelu: return x < 0.f ? 0.f : (x > a ? a : x);
    case NeuronType::Linear: return a * x + b;
    case NeuronType::AbsTanh: return a * fabsf(tanhf(b * x));
  }
  return x;
}

__device__ __forceinline__ float derivative(float x, float y, NeuronType type, float a, float b) {
  switch (type) {
    case NeuronType::Ident: return 1.f;
    case NeuronType::Relu: return x > 0.f ? 1.f : 0.f;
    case NeuronType::Logistic: return y * (1.f - y);
    case NeuronType::Tanh: { float t = tanhf(b * x); return a * b * (1.f - t * t); }
    case NeuronType::Abs: return x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f);
    case NeuronType::Square: return 2.f * x;
    case NeuronType::Sqrt: return 0.5f / y;
    case NeuronType::SoftRelu: return 1.f / (1.f + expf(-x));
    case NeuronType::BRelu: return x > 0.f && x < a ? 1.f : 0.f;
    case NeuronType::Linear: return a;
    case NeuronType::AbsTanh: {
      float t = tanhf(b * x);
      return a * b * (1.f - t * t) * (x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f));
    }
  }
  return 1.f;
}

__global__ void neuron_act_kernel(const float* x, float* t, int64_t n, NeuronType type, float a, float b,
                                  float sT, float sO) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    store_scaled(t[i], activate(x[i], type, a, b), sT, sO);
}

__global__ void neuron_grad_kernel(const float* g, const float* x, const float* y, float* t, int64_t n,
                                   NeuronType type, float a, float b, float sT, float sO) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(blockDim.x) * gridDim.x)
    store_scaled(t[i], g[i] * derivative(x[i], y[i], type, a, b), sT, sO);
}

}  // namespace

void neuronAct(const Tensor& inputs, Tensor& targets, const Neuron& neuron, float scaleTargets, float scaleOutput) {
  int64_t n = inputs.numel();
  if (n == 0) return;
  set_device(targets);
  neuron_act_kernel<<<blocks_for(n, 256), 256, 0, stream()>>>(inputs.data(), targets.data(), n, neuron.type,
                                                               neuron.a, neuron.b, scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("neuron_act_kernel");
}

void neuronGrad(const Tensor& outGrads, const Tensor& inputs, const Tensor& acts, Tensor& targets,
                const Neuron& neuron, float scaleTargets, float scaleOutput) {
  int64_t n = outGrads.numel();
  if (n == 0) return;
  set_device(targets);
  neuron_grad_kernel<<<blocks_for(n, 256), 256, 0, stream()>>>(outGrads.data(), inputs.data(), acts.data(),
                                                                targets.data(), n, neuron.type, neuron.a,
                                                                neuron.b, scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("neuron_grad_kernel");
}

}  // namespace ccn::cuda
