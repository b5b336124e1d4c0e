// Element-wise neurons (activation functions), cuda-convnet's set:
//   ident x | relu max(x,0) | logistic 1/(1+e^-x) | tanh a*tanh(b*x) | abs |x| | square x^2
//   sqrt sqrt(x) | softrelu log(1+e^x) | brelu min(max(x,0),a) | linear a*x+b
//   abstanh a*|tanh(b*x)|
// Any shape; inputs and targets have the same element count.
// targets = scaleTargets * targets + scaleOutput * result.
#pragma once
#include <string>

#include "core/tensor.h"

namespace ccn {

enum class NeuronType { Ident, Relu, Logistic, Tanh, Abs, Square, Sqrt, SoftRelu, BRelu, Linear, AbsTanh };

struct Neuron {
  NeuronType type = NeuronType::Ident;
  float a = 1.f, b = 1.f;
  // Parses cuda-convnet's names: "relu", "tanh[a,b]", "brelu[a]", "linear[a,b]", ...
  static Neuron parse(const std::string& text);
};

namespace ops {
#include "ops/neuron.inc"
}
namespace cpu {
#include "ops/neuron.inc"
}
#ifdef CCN_WITH_CUDA
namespace cuda {
#include "ops/neuron.inc"
}
#endif

}  // namespace ccn
