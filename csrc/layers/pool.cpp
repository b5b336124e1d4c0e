// pool: local max / avg / maxabs pooling over square windows of each channel.
//   input (channels * imgSizeY * imgSizeX, numCases) -> acts (channels * outputsY * outputsX, numCases)
#include "core/error.h"
#include "net/layer.h"
#include "ops/pool.h"

namespace ccn::net {
namespace {

class PoolLayer : public Layer {
 public:
  explicit PoolLayer(const LayerConfig& cfg) : Layer(cfg) {
    std::string kind = cfg.getString("pool");
    if (kind == "max") kind_ = PoolKind::Max;
    else if (kind == "avg") kind_ = PoolKind::Avg;
    else if (kind == "maxabs") kind_ = PoolKind::MaxAbs;
    else cfg.fail("pool", "must be max, avg or maxabs, got '" + kind + "'");
    PoolGeometry& g = geometry_;
    g.channels = cfg.getInt("channels");
    g.imgSizeY = cfg.getInt("imgSizeY");
    g.imgSizeX = cfg.getInt("imgSizeX");
    g.sizeX = cfg.getInt("sizeX");
    g.start = cfg.getInt("start", 0);
    g.stride = cfg.getInt("stride");
    g.outputsY = cfg.getInt("outputsY");
    g.outputsX = cfg.getInt("outputsX");
    try {
      ops::checkGeometry(g);
    } catch (const ValueError& e) {
      cfg.failLayer(e.what());
    }
    int64_t rows = int64_t(g.channels) * g.outputsY * g.outputsX;
    if (outputs_ != rows) cfg.fail("outputs", "must be channels * outputsY * outputsX = " + std::to_string(rows));
  }

  void checkInputs() const override {
    requireInputCount(1);
    requireInputRows(0, int64_t(geometry_.channels) * geometry_.imgSizeY * geometry_.imgSizeX,
                     "channels * imgSizeY * imgSizeX");
  }

  void fprop(bool) override { ops::localPool(inputs[0].acts(), acts(), geometry_, kind_, 0.f, 1.f); }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (!in.sendsGrad) return;
    if (kind_ == PoolKind::Avg) ops::localAvgUndo(actsGrad(), in.grad(), geometry_, in.gradScale, 1.f);
    else ops::localMaxUndo(in.acts(), acts(), actsGrad(), in.grad(), geometry_, in.gradScale, 1.f);
  }

 private:
  PoolGeometry geometry_;
  PoolKind kind_ = PoolKind::Max;
};

[[maybe_unused]] const bool registered = registerLayerType("pool", makeLayer<PoolLayer>);

}  // namespace
}  // namespace ccn::net
