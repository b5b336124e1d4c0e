// cost.sum2: the sum of squares of its input, cost = sum x^2; the gradient of the
// objective (-coeff * cost) sent back is -2 * coeff * x.
#include "net/layer.h"
#include "ops/dense.h"

namespace ccn::net {
namespace {

class SumOfSquaresCostLayer : public CostLayer {
 public:
  using CostLayer::CostLayer;

  void checkInputs() const override { requireInputCount(1); }

  void fprop(bool) override {
    result_ = CostResult();
    result_.cost = ops::sumOfSquares(inputs[0].acts());
  }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (in.sendsGrad) ops::add(in.acts(), in.grad(), in.gradScale, -2.f * coeff_);
  }
};

[[maybe_unused]] const bool registered = registerLayerType("cost.sum2", makeLayer<SumOfSquaresCostLayer>);

}  // namespace
}  // namespace ccn::net
