// cost.logreg: multinomial logistic regression. inputs = [labels (1, numCases) class
// indices, probs (numClasses, numCases)]; cost = sum over cases of -log probs[label],
// with top-1 and top-k error counts. The gradient sent to probs is coeff / probs[label]
// at the label (the objective's sign); fused with a softmax, coeff * ([k == label] - probs).
#include "net/layer.h"

namespace ccn::net {
namespace {

class LogregCostLayer : public CostLayer {
 public:
  explicit LogregCostLayer(const LayerConfig& cfg) : CostLayer(cfg), topK_(cfg.getInt("topk", 1)) {
    if (topK_ <= 0) cfg.fail("topk", "must be positive, got " + std::to_string(topK_));
  }

  void checkInputs() const override {
    requireInputCount(2);
    requireInputRows(0, 1, "the labels' rows");
  }

  bool backpropagatesTo(int j) const override { return j == 1 && !fused(); }
  const char* fusedProducerType() const override { return "softmax"; }

  void fprop(bool) override { result_ = ops::logregCost(inputs[0].acts(), inputs[1].acts(), topK_); }

  void bprop() override {
    const LayerInput& probs = inputs[1];
    if (probs.sendsGrad) ops::logregGrad(inputs[0].acts(), probs.acts(), probs.grad(), coeff_, probs.gradScale, 1.f);
  }

  void fusedInputGrad(const Tensor& probs, Tensor& target, float scaleTargets) const override {
    ops::softmaxLogregGrad(inputs[0].acts(), probs, target, coeff_, scaleTargets, 1.f);
  }

 private:
  int topK_;
};

[[maybe_unused]] const bool registered = registerLayerType("cost.logreg", makeLayer<LogregCostLayer>);

}  // namespace
}  // namespace ccn::net
