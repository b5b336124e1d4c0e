// neuron: an element-wise activation function (relu, tanh[a,b], ...), acts = f(x).
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

  void fprop(bool) override { ops::neuronAct(inputs[0].acts(), acts(), neuron_, 0.f, 1.f); }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (in.sendsGrad) ops::neuronGrad(actsGrad(), in.acts(), acts(), in.grad(), neuron_, in.gradScale, 1.f);
  }

 private:
  Neuron neuron_;
};

[[maybe_unused]] const bool registered = registerLayerType("neuron", makeLayer<NeuronLayer>);

}  // namespace
}  // namespace ccn::net
