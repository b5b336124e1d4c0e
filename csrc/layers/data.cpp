// data: the entry of a net. Its activations (outputs, numCases) are columns [dataStart,
// dataStart + numCases) of its data array: a batch staged on this layer's device (sliced
// there), or the array given to fprop (copied across devices when it lives elsewhere).
#include "net/layer.h"
#include "ops/dense.h"

namespace ccn::net {
namespace {

class DataLayer : public Layer {
 public:
  explicit DataLayer(const LayerConfig& cfg) : Layer(cfg), dataIdx_(cfg.getInt("dataIdx")) {
    if (dataIdx_ < 0) cfg.fail("dataIdx", "must be >= 0, got " + std::to_string(dataIdx_));
  }

  int dataIndex() const override { return dataIdx_; }
  void checkInputs() const override { requireInputCount(0); }
  void fprop(bool) override {
    Tensor& out = acts();
    if (dataSource->device() == out.device()) {
      ops::copyColumns(*dataSource, dataStart, out, 0, out.cols(), 0.f);
    } else if (dataStart == 0 && dataSource->cols() == out.cols()) {
      out.copy_from(*dataSource);
    } else {  // a replica's column range of an array on another device
      ops::copyColumns(dataSource->to(out.device()), dataStart, out, 0, out.cols(), 0.f);
    }
  }
  void bprop() override {}

 private:
  int dataIdx_;
};

[[maybe_unused]] const bool registered = registerLayerType("data", makeLayer<DataLayer>);

}  // namespace
}  // namespace ccn::net
