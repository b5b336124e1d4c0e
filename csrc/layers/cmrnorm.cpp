// cmrnorm: response normalization across channels (a window of `size` maps, or blocks of
// `size` maps when blocked):  acts = x * (minDiv + scale * sum_{maps} x^2)^(-pow)
#include "layers/norm.h"

namespace ccn::net {
namespace {

class CrossMapResponseNormLayer : public NormLayer {
 public:
  using NormLayer::NormLayer;

  void fprop(bool) override {
    ops::responseNormCrossMap(inputs[0].acts(), denoms_, acts(), geometry_, 0.f, 1.f);
  }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (in.sendsGrad)
      ops::responseNormCrossMapUndo(actsGrad(), in.acts(), acts(), denoms_, in.grad(), geometry_, in.gradScale, 1.f);
  }
};

[[maybe_unused]] const bool registered = registerLayerType("cmrnorm", makeLayer<CrossMapResponseNormLayer>);

}  // namespace
}  // namespace ccn::net
