// dropout (inverted): in training, acts = x * mask with mask = 1/keep with probability
// keep, else 0, drawn from the Net's Philox stream at the position the Net reserves for
// this fprop; at test time acts = x. The gradient is g * mask (g at test time).
#include "net/layer.h"
#include "ops/dense.h"

namespace ccn::net {
namespace {

class DropoutLayer : public Layer {
 public:
  explicit DropoutLayer(const LayerConfig& cfg) : Layer(cfg) {
    setKeep(cfg.getFloat("keep"), [&](const std::string& m) { cfg.fail("keep", m); });
  }

  void checkInputs() const override {
    requireInputCount(1);
    requireInputRows(0, outputs_, "outputs");
  }

  bool setParam(const std::string& key, double value) override {
    if (key != "keep") return false;
    setKeep(value, [&](const std::string& m) { fail("keep " + m); });
    return true;
  }

  void resize(int numCases) override { mask_ = Tensor::empty({outputs_, numCases}, acts().device()); }

  // Numbers [counter, counter + outputs * total): element (o, case) of the whole minibatch
  // takes number counter + o * total + case; this replica's cases start at cases.first.
  void reserveRandom(uint64_t seed, uint64_t& counter, const CaseSlice& cases) override {
    seed_ = seed;
    offset_ = counter + static_cast<uint64_t>(cases.first);
    rowStride_ = cases.total;
    counter += static_cast<uint64_t>(outputs_) * static_cast<uint64_t>(cases.total);
  }

  void fprop(bool train) override {
    train_ = train;
    if (!train) {
      ops::add(inputs[0].acts(), acts(), 0.f, 1.f);
      return;
    }
    ops::dropoutMask(mask_, keep_, seed_, offset_, rowStride_);
    ops::mult(inputs[0].acts(), mask_, acts(), 0.f, 1.f);
  }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (!in.sendsGrad) return;
    if (train_) ops::mult(actsGrad(), mask_, in.grad(), in.gradScale, 1.f);
    else ops::add(actsGrad(), in.grad(), in.gradScale, 1.f);
  }

 private:
  template <typename Fail>
  void setKeep(double keep, Fail fail) {
    if (!(keep > 0.0 && keep <= 1.0)) fail("must be in (0, 1], got " + std::to_string(keep));
    keep_ = static_cast<float>(keep);
  }

  float keep_ = 1.f;
  Tensor mask_;
  uint64_t seed_ = 0, offset_ = 0;
  int64_t rowStride_ = 0;
  bool train_ = false;
};

[[maybe_unused]] const bool registered = registerLayerType("dropout", makeLayer<DropoutLayer>);

}  // namespace
}  // namespace ccn::net
