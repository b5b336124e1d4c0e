// cmpool: cross-map max pooling: output channel o is the max over input channels
// start + o*stride + [0, size), at each pixel.
//   input (channels * imgSizeY * imgSizeX, numCases) -> acts (outputChannels * imgSizeY * imgSizeX, numCases)
#include "core/error.h"
#include "net/layer.h"
#include "ops/check.h"
#include "ops/pool.h"

namespace ccn::net {
namespace {

class CrossMapPoolLayer : public Layer {
 public:
  explicit CrossMapPoolLayer(const LayerConfig& cfg) : Layer(cfg) {
    CrossMapPoolGeometry& g = geometry_;
    g.channels = cfg.getInt("channels");
    const int imgSizeY = cfg.getInt("imgSizeY"), imgSizeX = cfg.getInt("imgSizeX");
    g.size = cfg.getInt("size");
    g.start = cfg.getInt("start", 0);
    g.stride = cfg.getInt("stride");
    g.outputs = cfg.getInt("outputChannels");
    try {
      ops::check_positive(imgSizeY, "imgSizeY");
      ops::check_positive(imgSizeX, "imgSizeX");
      g.pixels = static_cast<int>(ops::checked_size("cross-map pool", "imgSizeY * imgSizeX", {imgSizeY, imgSizeX}));
      ops::checkGeometry(g);
    } catch (const ValueError& e) {
      cfg.failLayer(e.what());
    }
    int64_t rows = int64_t(g.outputs) * g.pixels;
    if (outputs_ != rows)
      cfg.fail("outputs", "must be outputChannels * imgSizeY * imgSizeX = " + std::to_string(rows));
  }

  void checkInputs() const override {
    requireInputCount(1);
    requireInputRows(0, int64_t(geometry_.channels) * geometry_.pixels, "channels * imgSizeY * imgSizeX");
  }

  void fprop(bool) override { ops::crossMapMaxPool(inputs[0].acts(), acts(), geometry_, 0.f, 1.f); }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (in.sendsGrad)
      ops::crossMapMaxPoolUndo(in.acts(), acts(), actsGrad(), in.grad(), geometry_, in.gradScale, 1.f);
  }

 private:
  CrossMapPoolGeometry geometry_;
};

[[maybe_unused]] const bool registered = registerLayerType("cmpool", makeLayer<CrossMapPoolLayer>);

}  // namespace
}  // namespace ccn::net
