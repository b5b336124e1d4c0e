// dropout (inverted): in training, acts = x * mask with mask = 1/keep with probability
// keep, else 0, drawn from the Net's Philox stream at the position the Net reserves for
// this fprop; at test time acts = x. The gradient is g * mask (g at test time).
// dropout2 (cuda-convnet2's): the same draws, but kept units pass unscaled in training
// (acts = x * keep * mask, i.e. x or 0) and at test time acts = keep * x.
// enable = false (cuda-convnet2) uses the test-time rule in training too.
// hs (the 2012 release) is dropout2.
#include "net/layer.h"
#include "ops/dense.h"

namespace ccn::net {
namespace {

template <bool ScaleAtTest>
class DropoutLayer : public Layer {
 public:
  explicit DropoutLayer(const LayerConfig& cfg) : Layer(cfg) {
    setKeep(cfg.getFloat("keep"), [&](const std::string& m) { cfg.fail("keep", m); });
    enable_ = cfg.getBool("enable", true);
  }

  void checkInputs() const override {
    requireInputCount(1);
    requireInputRows(0, outputs_, "outputs");
  }

  bool setParam(const std::string& key, double value) override {
    if (key == "enable") {
      enable_ = value != 0.0;
      return true;
    }
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
    train_ = train && enable_;
    if (!train_) {
      ops::add(inputs[0].acts(), acts(), 0.f, testScale());
      return;
    }
    ops::dropoutMask(mask_, keep_, seed_, offset_, rowStride_);
    ops::mult(inputs[0].acts(), mask_, acts(), 0.f, testScale());
  }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (!in.sendsGrad) return;
    if (train_) ops::mult(actsGrad(), mask_, in.grad(), in.gradScale, testScale());
    else ops::add(actsGrad(), in.grad(), in.gradScale, testScale());
  }

 private:
  template <typename Fail>
  void setKeep(double keep, Fail fail) {
    if (!(keep > 0.0 && keep <= 1.0)) fail("must be in (0, 1], got " + std::to_string(keep));
    keep_ = static_cast<float>(keep);
  }

  // dropout2 multiplies by keep at test time, and by keep * (1/keep) = 1 for kept units in training.
  float testScale() const { return ScaleAtTest ? keep_ : 1.f; }

  float keep_ = 1.f;
  bool enable_ = true;
  Tensor mask_;
  uint64_t seed_ = 0, offset_ = 0;
  int64_t rowStride_ = 0;
  bool train_ = false;
};

[[maybe_unused]] const bool registered = registerLayerType("dropout", makeLayer<DropoutLayer<false>>);
[[maybe_unused]] const bool registered2 = registerLayerType("dropout2", makeLayer<DropoutLayer<true>>);
// hs (the 2012 release's "hidden sex" layer) is dropout2 under its first name.
[[maybe_unused]] const bool registeredHs = registerLayerType("hs", makeLayer<DropoutLayer<true>>);

}  // namespace
}  // namespace ccn::net
