// CPU neurons: one pass over the elements, threaded over contiguous chunks.
#include <cmath>
#include <type_traits>

#include "core/thread_pool.h"
#include "cpu/scale.h"
#include "ops/neuron.h"

namespace ccn::cpu {
namespace {

template <NeuronType kType>
inline float activate(float x, const Neuron& n) {
  switch (kType) {
    case NeuronType::Ident: return x;
    case NeuronType::Relu: return x > 0.f ? x : 0.f;
    case NeuronType::Logistic: return 1.f / (1.f + std::exp(-x));
    case NeuronType::Tanh: return n.a * std::tanh(n.b * x);
    case NeuronType::Abs: return std::fabs(x);
    case NeuronType::Square: return x * x;
    case NeuronType::Sqrt: return std::sqrt(x);
    // log(1 + e^x) without overflow for large x
    case NeuronType::SoftRelu: return x > 0.f ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
    case NeuronType::BRelu: return x < 0.f ? 0.f : (x > n.a ? n.a : x);
    case NeuronType::Linear: return n.a * x + n.b;
    case NeuronType::AbsTanh: return n.a * std::fabs(std::tanh(n.b * x));
  }
  return x;
}

// f'(x), from the input x and the output y = f(x).
template <NeuronType kType>
inline float derivative(float x, float y, const Neuron& n) {
  switch (kType) {
    case NeuronType::Ident: return 1.f;
    case NeuronType::Relu: return x > 0.f ? 1.f : 0.f;
    case NeuronType::Logistic: return y * (1.f - y);
    case NeuronType::Tanh: {
      float t = std::tanh(n.b * x);
      return n.a * n.b * (1.f - t * t);
    }
    case NeuronType::Abs: return x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f);
    case NeuronType::Square: return 2.f * x;
    case NeuronType::Sqrt: return 0.5f / y;
    case NeuronType::SoftRelu: return 1.f / (1.f + std::exp(-x));
    case NeuronType::BRelu: return x > 0.f && x < n.a ? 1.f : 0.f;
    case NeuronType::Linear: return n.a;
    case NeuronType::AbsTanh: {
      float t = std::tanh(n.b * x);
      float sign = x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f);
      return n.a * n.b * (1.f - t * t) * sign;
    }
  }
  return 1.f;
}

constexpr int64_t kGrain = 1 << 14;  // elements per chunk below which threading does not pay

// Calls fn(std::integral_constant<NeuronType, T>) for the neuron's type, so that the loops
// inside fn are compiled once per type with no switch per element.
template <class Fn>
void with_neuron_type(NeuronType type, Fn&& fn) {
  using T = NeuronType;
  switch (type) {
    case T::Ident: return fn(std::integral_constant<T, T::Ident>{});
    case T::Relu: return fn(std::integral_constant<T, T::Relu>{});
    case T::Logistic: return fn(std::integral_constant<T, T::Logistic>{});
    case T::Tanh: return fn(std::integral_constant<T, T::Tanh>{});
    case T::Abs: return fn(std::integral_constant<T, T::Abs>{});
    case T::Square: return fn(std::integral_constant<T, T::Square>{});
    case T::Sqrt: return fn(std::integral_constant<T, T::Sqrt>{});
    case T::SoftRelu: return fn(std::integral_constant<T, T::SoftRelu>{});
    case T::BRelu: return fn(std::integral_constant<T, T::BRelu>{});
    case T::Linear: return fn(std::integral_constant<T, T::Linear>{});
    case T::AbsTanh: return fn(std::integral_constant<T, T::AbsTanh>{});
  }
}

}  // namespace

void neuronAct(const Tensor& inputs, Tensor& targets, const Neuron& neuron, float scaleTargets,
               float scaleOutput) {
  const float* x = inputs.data();
  float* t = targets.data();
  with_neuron_type(neuron.type, [&](auto type) {
    parallel_for(inputs.numel(), [&](int64_t begin, int64_t end) {
      store_scaled_row(t + begin, end - begin, scaleTargets, scaleOutput,
                       [&](int64_t k) { return activate<decltype(type)::value>(x[begin + k], neuron); });
    }, kGrain);
  });
}

void neuronGrad(const Tensor& outGrads, const Tensor& inputs, const Tensor& acts, Tensor& targets,
                const Neuron& neuron, float scaleTargets, float scaleOutput) {
  const float* g = outGrads.data();
  const float* x = inputs.data();
  const float* y = acts.data();
  float* t = targets.data();
  with_neuron_type(neuron.type, [&](auto type) {
    parallel_for(outGrads.numel(), [&](int64_t begin, int64_t end) {
      store_scaled_row(t + begin, end - begin, scaleTargets, scaleOutput, [&](int64_t k) {
        int64_t i = begin + k;
        return g[i] * derivative<decltype(type)::value>(x[i], y[i], neuron);
      });
    }, kGrain);
  });
}

}  // namespace ccn::cpu
