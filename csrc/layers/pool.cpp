// pool: local max / avg / maxabs pooling over square windows of each channel.
//   input (channels * imgSizeY * imgSizeX, numCases) -> acts (channels * outputsY * outputsX, numCases)
// avg with sum = true (cuda-convnet2's key): the window's sum over its in-image pixels, made
// as the average times the window's pixel count (the gradient likewise).
#include <algorithm>

#include "core/error.h"
#include "net/layer.h"
#include "ops/dense.h"
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
    sum_ = cfg.getBool("sum", false);
    if (sum_ && kind_ != PoolKind::Avg) cfg.fail("sum", "applies to pool=avg only");
  }

  void resize(int numCases) override {
    if (!sum_) return;
    const PoolGeometry& g = geometry_;
    auto count = [&](int o, int imgSize) {  // in-image pixels of window o along one axis
      const int lo = g.start + o * g.stride, hi = lo + g.sizeX;
      return std::min(hi, imgSize) - std::max(lo, 0);
    };
    Tensor host = Tensor::empty({outputs_, numCases});
    for (int c = 0; c < g.channels; ++c)
      for (int oy = 0; oy < g.outputsY; ++oy)
        for (int ox = 0; ox < g.outputsX; ++ox) {
          const float pixels = static_cast<float>(count(oy, g.imgSizeY) * count(ox, g.imgSizeX));
          float* row = host.data() + ((int64_t(c) * g.outputsY + oy) * g.outputsX + ox) * numCases;
          std::fill(row, row + numCases, pixels);
        }
    counts_ = host.to(acts().device());
    tmp_ = Tensor::empty({outputs_, numCases}, acts().device());
  }

  void checkInputs() const override {
    requireInputCount(1);
    requireInputRows(0, int64_t(geometry_.channels) * geometry_.imgSizeY * geometry_.imgSizeX,
                     "channels * imgSizeY * imgSizeX");
  }

  void fprop(bool) override {
    if (!sum_) {
      ops::localPool(inputs[0].acts(), acts(), geometry_, kind_, 0.f, 1.f);
      return;
    }
    ops::localPool(inputs[0].acts(), tmp_, geometry_, kind_, 0.f, 1.f);
    ops::mult(tmp_, counts_, acts(), 0.f, 1.f);
  }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (!in.sendsGrad) return;
    if (sum_) {
      ops::mult(actsGrad(), counts_, tmp_, 0.f, 1.f);
      ops::localAvgUndo(tmp_, in.grad(), geometry_, in.gradScale, 1.f);
    } else if (kind_ == PoolKind::Avg) ops::localAvgUndo(actsGrad(), in.grad(), geometry_, in.gradScale, 1.f);
    else ops::localMaxUndo(in.acts(), acts(), actsGrad(), in.grad(), geometry_, in.gradScale, 1.f);
  }

 private:
  PoolGeometry geometry_;
  PoolKind kind_ = PoolKind::Max;
  bool sum_ = false;
  Tensor counts_, tmp_;  // sum: each output's window pixel count (every case), and a scratch
};

[[maybe_unused]] const bool registered = registerLayerType("pool", makeLayer<PoolLayer>);

}  // namespace
}  // namespace ccn::net
