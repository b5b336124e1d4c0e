// concat: stacks its inputs' rows: acts = [x_0; x_1; ...] (flat output). Because acts are
// (rows, numCases) row-major, input i's rows are one contiguous block of acts, which the
// layer addresses through views made once per batch size.
#include "net/layer.h"
#include "ops/dense.h"

namespace ccn::net {
namespace {

class ConcatLayer : public Layer {
 public:
  using Layer::Layer;

  void checkInputs() const override {
    requireInputCountAtLeast(1);
    int64_t rows = 0;
    for (const LayerInput& in : inputs) rows += in.layer->outputs();
    if (rows != outputs_)
      fail("outputs is " + std::to_string(outputs_) + " but the inputs have " + std::to_string(rows) + " rows in all");
  }

  void resize(int numCases) override {
    actsBlocks_.clear();
    gradBlocks_.clear();
    int64_t offset = 0;
    for (const LayerInput& in : inputs) {
      Shape shape{in.layer->outputs(), numCases};
      actsBlocks_.push_back(block(acts(), offset, shape));
      gradBlocks_.push_back(actsGrad().defined() ? block(actsGrad(), offset, shape) : Tensor());
      offset += in.layer->outputs() * int64_t(numCases);
    }
  }

  void fprop(bool) override {
    for (size_t i = 0; i < inputs.size(); ++i) ops::add(inputs[i].acts(), actsBlocks_[i], 0.f, 1.f);
  }

  void bprop() override {
    for (size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i].sendsGrad) ops::add(gradBlocks_[i], inputs[i].grad(), inputs[i].gradScale, 1.f);
  }

 private:
  // A view of `shape` over whole's elements from `offset` on (whole outlives the view).
  static Tensor block(const Tensor& whole, int64_t offset, const Shape& shape) {
    return Tensor::wrap(whole.data() + offset, shape, contiguous_strides(shape), whole.device(), nullptr);
  }

  std::vector<Tensor> actsBlocks_, gradBlocks_;
};

[[maybe_unused]] const bool registered = registerLayerType("concat", makeLayer<ConcatLayer>);
// pass (cuda-convnet2's pass-through, which also moves activations between devices) is a concat.
[[maybe_unused]] const bool registeredPass = registerLayerType("pass", makeLayer<ConcatLayer>);

}  // namespace
}  // namespace ccn::net
