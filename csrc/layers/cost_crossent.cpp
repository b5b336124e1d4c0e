// cost.crossent: cross-entropy against target distributions. inputs = [labels
// (numClasses, numCases), probs (numClasses, numCases)]; cost = sum -labels * log(probs);
// error: argmax probs != argmax labels. Gradient to probs: coeff * labels / probs; fused
// with a softmax: coeff * (labels - probs * sum_k labels[k]).
#include "net/layer.h"

namespace ccn::net {
namespace {

class CrossEntCostLayer : public CostLayer {
 public:
  using CostLayer::CostLayer;

  void checkInputs() const override {
    requireInputCount(2);
    requireInputRows(0, inputs[1].layer->outputs(), "the rows of the probabilities");
  }

  bool backpropagatesTo(int j) const override { return j == 1 && !fused(); }
  const char* fusedProducerType() const override { return "softmax"; }

  void fprop(bool) override { result_ = ops::crossEntCost(inputs[0].acts(), inputs[1].acts()); }

  void bprop() override {
    const LayerInput& probs = inputs[1];
    if (probs.sendsGrad)
      ops::crossEntGrad(inputs[0].acts(), probs.acts(), probs.grad(), coeff_, probs.gradScale, 1.f);
  }

  void fusedInputGrad(const Tensor& probs, Tensor& target, float scaleTargets) const override {
    ops::softmaxCrossEntGrad(inputs[0].acts(), probs, target, coeff_, scaleTargets, 1.f);
  }
};

[[maybe_unused]] const bool registered = registerLayerType("cost.crossent", makeLayer<CrossEntCostLayer>);

}  // namespace
}  // namespace ccn::net
