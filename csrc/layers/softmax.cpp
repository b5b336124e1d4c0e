// softmax: probabilities over the rows of each case, acts[k] = e^x[k] / sum_j e^x[j].
// When it feeds only a logreg / crossent cost on its device, that cost computes the
// gradient with respect to the softmax's input in one step (fused; more accurate).
#include "net/layer.h"
#include "ops/cost.h"

namespace ccn::net {
namespace {

class SoftmaxLayer : public Layer {
 public:
  using Layer::Layer;

  void checkInputs() const override {
    requireInputCount(1);
    requireInputRows(0, outputs_, "outputs");
  }

  bool attachFusedCost(const CostLayer* cost) override {
    fusedCost_ = cost;
    return true;
  }

  void fprop(bool) override { ops::softmax(inputs[0].acts(), acts(), 0.f, 1.f); }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (!in.sendsGrad) return;
    if (fusedCost_) fusedCost_->fusedInputGrad(acts(), in.grad(), in.gradScale);
    else ops::softmaxGrad(actsGrad(), acts(), in.grad(), in.gradScale, 1.f);
  }

 private:
  const CostLayer* fusedCost_ = nullptr;
};

[[maybe_unused]] const bool registered = registerLayerType("softmax", makeLayer<SoftmaxLayer>);

}  // namespace
}  // namespace ccn::net
