// Element-wise costs of the 2012 release, for multi-label outputs (inputs = [labels, outputs],
// both (rows, numCases)): cost.crossent2, the binary cross-entropy of logistic outputs y
// against targets t, -(t log y + (1-t) log(1-y)); cost.rflickr, the robust cost
// log(1 + (y-t)^2). The cost is summed over every element; no error is counted (0). The
// gradient sent back is coeff times the exact gradient of the objective (minus the cost)
// with respect to the outputs; crossent2 fed by a logistic neuron (alone, on its device)
// gives that neuron's input coeff * (t - y) directly, as the 2012 release did, which stays
// exact where the logistic saturates to 0 or 1.
#include "net/layer.h"
#include "ops/cost.h"
#include "ops/dense.h"

namespace ccn::net {
namespace {

template <ElementCost Kind>
class ElementCostLayer : public CostLayer {
 public:
  using CostLayer::CostLayer;

  void checkInputs() const override {
    requireInputCount(2);
    requireInputRows(0, inputs[1].layer->outputs(), "the outputs' rows (the labels of every output)");
  }

  bool backpropagatesTo(int j) const override { return j == 1 && !fused(); }
  const char* fusedProducerType() const override {
    return Kind == ElementCost::BinaryCrossEnt ? "neuron" : nullptr;  // a logistic one (it checks)
  }

  void fusedInputGrad(const Tensor& outputs, Tensor& target, float scaleTargets) const override {
    ops::add(inputs[0].acts(), target, scaleTargets, coeff_);  // coeff * t
    ops::add(outputs, target, 1.f, -coeff_);                   // - coeff * y
  }

  void fprop(bool) override {
    result_ = CostResult();
    result_.cost = ops::elementCost(Kind, inputs[0].acts(), inputs[1].acts());
  }

  void bprop() override {
    const LayerInput& out = inputs[1];
    if (out.sendsGrad)
      ops::elementCostGrad(Kind, inputs[0].acts(), out.acts(), out.grad(), coeff_, out.gradScale, 1.f);
  }
};

[[maybe_unused]] const bool registeredCrossEnt2 =
    registerLayerType("cost.crossent2", makeLayer<ElementCostLayer<ElementCost::BinaryCrossEnt>>);
[[maybe_unused]] const bool registeredFlickr =
    registerLayerType("cost.rflickr", makeLayer<ElementCostLayer<ElementCost::RobustFlickr>>);

}  // namespace
}  // namespace ccn::net
