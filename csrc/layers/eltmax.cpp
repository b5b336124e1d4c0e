// eltmax: the element-wise maximum of its inputs; an input's gradient is g where it
// equals the maximum (every tied input gets it), else 0.
#include "net/layer.h"
#include "ops/dense.h"

namespace ccn::net {
namespace {

class EltwiseMaxLayer : public Layer {
 public:
  using Layer::Layer;

  void checkInputs() const override {
    requireInputCountAtLeast(1);
    for (size_t i = 0; i < inputs.size(); ++i) requireInputRows(i, outputs_, "outputs");
  }

  void fprop(bool) override {
    if (inputs.size() == 1) {
      ops::add(inputs[0].acts(), acts(), 0.f, 1.f);
      return;
    }
    ops::eltwiseMax(inputs[0].acts(), inputs[1].acts(), acts(), 0.f, 1.f);
    // element-wise, so the running maximum may be both an operand and the target
    for (size_t i = 2; i < inputs.size(); ++i) ops::eltwiseMax(acts(), inputs[i].acts(), acts(), 0.f, 1.f);
  }

  void bprop() override {
    for (const LayerInput& in : inputs)
      if (in.sendsGrad) ops::eltwiseMaxGrad(actsGrad(), in.acts(), acts(), in.grad(), in.gradScale, 1.f);
  }
};

[[maybe_unused]] const bool registered = registerLayerType("eltmax", makeLayer<EltwiseMaxLayer>);

}  // namespace
}  // namespace ccn::net
