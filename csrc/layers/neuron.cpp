// neuron: an element-wise activation function (relu, tanh[a,b], ...), acts = f(x). A logistic
// neuron feeding only a cost.crossent2 on its device takes its gradient from that cost,
// coeff * (t - y) (fused: exact where the logistic saturates).
#include "core/error.h"
#include "net/layer.h"
#include "ops/neuron.h"

namespace ccn::net {
namespace {

class NeuronLayer : public Layer {
 public:
  explicit NeuronLayer(const LayerConfig& cfg) : Layer(cfg) {
    try {
      neuron_ = Neuron::parse(cfg.getString("neuron"));
    } catch (const ValueError& e) {
      cfg.fail("neuron", e.what());
    }
  }

  void checkInputs() const override {
    requireInputCount(1);
    requireInputRows(0, outputs_, "outputs");
  }

  bool attachFusedCost(const CostLayer* cost) override {
    if (neuron_.type != NeuronType::Logistic) return false;
    fusedCost_ = cost;
    return true;
  }

  void fprop(bool) override { ops::neuronAct(inputs[0].acts(), acts(), neuron_, 0.f, 1.f); }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (!in.sendsGrad) return;
    if (fusedCost_) fusedCost_->fusedInputGrad(acts(), in.grad(), in.gradScale);
    else ops::neuronGrad(actsGrad(), in.acts(), acts(), in.grad(), neuron_, in.gradScale, 1.f);
  }

 private:
  Neuron neuron_;
  const CostLayer* fusedCost_ = nullptr;
};

[[maybe_unused]] const bool registered = registerLayerType("neuron", makeLayer<NeuronLayer>);

}  // namespace
}  // namespace ccn::net
