// fc: fully connected, any number of inputs, one weight matrix each:
//   acts (outputs, numCases) = sum_i W_i^T x_i + b,   W_i (outputs of input i, outputs), b (outputs,)
// Gradients: x_i <- W_i g;  W_i <- x_i g^T (summed over cases);  b <- row sums of g.
#include "net/layer.h"
#include "ops/dense.h"

namespace ccn::net {
namespace {

class FcLayer : public WeightLayer {
 public:
  explicit FcLayer(const LayerConfig& cfg) : WeightLayer(cfg, cfg.getStringList("inputs").size()) {}

  Shape weightShape(size_t i) const override { return {inputs[i].layer->outputs(), outputs_}; }
  Shape biasShape() const override { return {outputs_}; }
  void checkInputs() const override { requireInputCountAtLeast(1); }

  void fprop(bool) override {
    for (size_t i = 0; i < inputs.size(); ++i)
      ops::gemm(weights[i].store->weights, inputs[i].acts(), acts(), true, false, i == 0 ? 0.f : 1.f, 1.f);
    ops::addBias(bias.store->weights, acts(), 1.f, 1.f);
  }

  void bprop() override {
    for (size_t i = 0; i < inputs.size(); ++i) {
      const LayerInput& in = inputs[i];
      if (in.sendsGrad) ops::gemm(weights[i].store->weights, actsGrad(), in.grad(), false, false, in.gradScale, 1.f);
      if (weights[i].computesGrad())
        ops::gemm(in.acts(), actsGrad(), weights[i].store->grad, false, true, weights[i].gradScale, 1.f);
    }
    if (bias.computesGrad()) ops::biasGrad(actsGrad(), bias.store->grad, bias.gradScale, 1.f);
  }
};

[[maybe_unused]] const bool registered = registerLayerType("fc", makeLayer<FcLayer>);

}  // namespace
}  // namespace ccn::net
