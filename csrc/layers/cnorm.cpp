// cnorm: contrast normalization: m = x - mean_{window} x,
//   acts = x * (minDiv + scale * sum_{window} m^2)^(-pow)   (see ops/norm.h)
#include "layers/norm.h"

namespace ccn::net {
namespace {

class ContrastNormLayer : public NormLayer {
 public:
  using NormLayer::NormLayer;

  void resize(int numCases) override {
    NormLayer::resize(numCases);
    meanDiffs_ = Tensor::empty({outputs_, numCases}, acts().device());
  }

  void fprop(bool) override {
    ops::contrastNorm(inputs[0].acts(), meanDiffs_, denoms_, acts(), geometry_, 0.f, 1.f);
  }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (in.sendsGrad)
      ops::contrastNormUndo(actsGrad(), in.acts(), meanDiffs_, acts(), denoms_, in.grad(), geometry_, in.gradScale,
                            1.f);
  }

 private:
  Tensor meanDiffs_;
};

[[maybe_unused]] const bool registered = registerLayerType("cnorm", makeLayer<ContrastNormLayer>);

}  // namespace
}  // namespace ccn::net
