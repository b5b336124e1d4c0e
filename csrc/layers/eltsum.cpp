// eltsum: a weighted element-wise sum of its inputs, acts = sum_i coeffs[i] * x_i;
// input i's gradient is coeffs[i] * g.
#include "net/layer.h"
#include "ops/dense.h"

namespace ccn::net {
namespace {

class EltwiseSumLayer : public Layer {
 public:
  explicit EltwiseSumLayer(const LayerConfig& cfg) : Layer(cfg) {
    std::vector<double> coeffs = cfg.getFloatList("coeffs", inputNames_.size(), 1.0);
    coeffs_.assign(coeffs.begin(), coeffs.end());
  }

  void checkInputs() const override {
    requireInputCountAtLeast(1);
    for (size_t i = 0; i < inputs.size(); ++i) requireInputRows(i, outputs_, "outputs");
  }

  void fprop(bool) override {
    for (size_t i = 0; i < inputs.size(); ++i) ops::add(inputs[i].acts(), acts(), i == 0 ? 0.f : 1.f, coeffs_[i]);
  }

  void bprop() override {
    for (size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i].sendsGrad) ops::add(actsGrad(), inputs[i].grad(), inputs[i].gradScale, coeffs_[i]);
  }

 private:
  std::vector<float> coeffs_;
};

[[maybe_unused]] const bool registered = registerLayerType("eltsum", makeLayer<EltwiseSumLayer>);

}  // namespace
}  // namespace ccn::net
