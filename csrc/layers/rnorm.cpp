// rnorm: local response normalization over a spatial window of each channel:
//   acts = x * (minDiv + scale * sum_{window} x^2)^(-pow)   (see norm.h, ops/norm.h)
#include "layers/norm.h"

namespace ccn::net {
namespace {

class ResponseNormLayer : public NormLayer {
 public:
  using NormLayer::NormLayer;

  void fprop(bool) override { ops::responseNorm(inputs[0].acts(), denoms_, acts(), geometry_, 0.f, 1.f); }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (in.sendsGrad)
      ops::responseNormUndo(actsGrad(), in.acts(), acts(), denoms_, in.grad(), geometry_, in.gradScale, 1.f);
  }
};

[[maybe_unused]] const bool registered = registerLayerType("rnorm", makeLayer<ResponseNormLayer>);

}  // namespace
}  // namespace ccn::net
