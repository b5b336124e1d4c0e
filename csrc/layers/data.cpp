// data: the entry of a net. Its activations are a copy of the array data[dataIdx] given
// to fprop, (outputs, numCases).
#include "net/layer.h"

namespace ccn::net {
namespace {

class DataLayer : public Layer {
 public:
  explicit DataLayer(const LayerConfig& cfg) : Layer(cfg), dataIdx_(cfg.getInt("dataIdx")) {
    if (dataIdx_ < 0) cfg.fail("dataIdx", "must be >= 0, got " + std::to_string(dataIdx_));
  }

  int dataIndex() const override { return dataIdx_; }
  void checkInputs() const override { requireInputCount(0); }
  void fprop(bool) override { acts().copy_from(*dataSource); }
  void bprop() override {}

 private:
  int dataIdx_;
};

[[maybe_unused]] const bool registered = registerLayerType("data", makeLayer<DataLayer>);

}  // namespace
}  // namespace ccn::net
