// Layers of the 2012 release that move or filter pixels, with no weights:
//   href:    mirror left-right: acts[c, y, x] = x_in[c, y, imgSizeX - 1 - x]; the gradient is
//            mirrored back.
//   blur:    a separable Gaussian blur with the dict's normalised taps ("filter", filterSize of
//            them, odd):
//            along x, then along y, pixels outside the image counting as zero; its gradient is
//            the same two passes (a zero-padded symmetric filter is its own transpose).
//   nailbed: subsampling: acts[c, oy, ox] = x_in[c, start + oy*stride, start + ox*stride]; the
//            gradient goes back to the sampled pixels, zero elsewhere.
#include <vector>

#include "core/error.h"
#include "net/layer.h"
#include "ops/image.h"

namespace ccn::net {
namespace {

ImageGeometry inputGeometry(const LayerConfig& cfg) {
  ImageGeometry g;
  g.channels = cfg.getInt("channels");
  g.imgSizeY = cfg.getInt("imgSizeY");
  g.imgSizeX = cfg.getInt("imgSizeX");
  for (const char* key : {"channels", "imgSizeY", "imgSizeX"})
    if (cfg.getInt(key) <= 0) cfg.fail(key, "must be positive, got " + std::to_string(cfg.getInt(key)));
  try {
    ops::checkGeometry(g);
  } catch (const ValueError& e) {
    cfg.failLayer(e.what());
  }
  return g;
}

class ImageLayer : public Layer {
 public:
  explicit ImageLayer(const LayerConfig& cfg) : Layer(cfg), g_(inputGeometry(cfg)) {}

  void checkInputs() const override {
    requireInputCount(1);
    requireInputRows(0, int64_t(g_.channels) * g_.imgSizeY * g_.imgSizeX, "channels * imgSizeY * imgSizeX");
  }

 protected:
  ImageGeometry g_;
};

class ReflectLayer : public ImageLayer {
 public:
  explicit ReflectLayer(const LayerConfig& cfg) : ImageLayer(cfg) {
    if (outputs_ != int64_t(g_.channels) * g_.imgSizeY * g_.imgSizeX) cfg.fail("outputs", "must equal the input's rows");
  }
  void fprop(bool) override { ops::reflectHorizontal(inputs[0].acts(), acts(), g_, 0.f, 1.f); }
  void bprop() override {
    const LayerInput& in = inputs[0];
    if (in.sendsGrad) ops::reflectHorizontal(actsGrad(), in.grad(), g_, in.gradScale, 1.f);
  }
};

class BlurLayer : public ImageLayer {
 public:
  explicit BlurLayer(const LayerConfig& cfg) : ImageLayer(cfg) {
    const int size = cfg.getInt("filterSize");
    if (size <= 0) cfg.fail("filterSize", "must be positive");
    for (double tap : cfg.getFloatList("filter", static_cast<size_t>(size))) taps_.push_back(static_cast<float>(tap));
    if (taps_.empty() || taps_.size() % 2 == 0) cfg.fail("filter", "must hold an odd number of taps");
    if (outputs_ != int64_t(g_.channels) * g_.imgSizeY * g_.imgSizeX) cfg.fail("outputs", "must equal the input's rows");
  }

  void resize(int numCases) override {
    Tensor host = Tensor::empty({int64_t(taps_.size())});
    for (size_t i = 0; i < taps_.size(); ++i) host.data()[i] = taps_[i];
    filter_ = host.to(acts().device());
    tmp_ = Tensor::empty({outputs_, numCases}, acts().device());
  }

  void fprop(bool) override {
    ops::gaussianBlur(inputs[0].acts(), filter_, tmp_, g_, true, 0.f, 1.f);
    ops::gaussianBlur(tmp_, filter_, acts(), g_, false, 0.f, 1.f);
  }
  void bprop() override {
    const LayerInput& in = inputs[0];
    if (!in.sendsGrad) return;
    ops::gaussianBlur(actsGrad(), filter_, tmp_, g_, true, 0.f, 1.f);
    ops::gaussianBlur(tmp_, filter_, in.grad(), g_, false, in.gradScale, 1.f);
  }

 private:
  std::vector<float> taps_;
  Tensor filter_, tmp_;
};

class NailbedLayer : public ImageLayer {
 public:
  explicit NailbedLayer(const LayerConfig& cfg) : ImageLayer(cfg) {
    start_ = cfg.getInt("start");
    stride_ = cfg.getInt("stride");
    outputsY_ = cfg.getInt("outputsY");
    outputsX_ = cfg.getInt("outputsX");
    if (stride_ <= 0) cfg.fail("stride", "must be positive");
    try {
      ops::checkBedOfNails(g_, start_, stride_, outputsY_, outputsX_);
    } catch (const ValueError& e) {
      cfg.failLayer(e.what());
    }
    if (outputs_ != int64_t(g_.channels) * outputsY_ * outputsX_)
      cfg.fail("outputs", "must be channels * outputsY * outputsX");
  }
  void fprop(bool) override {
    ops::bedOfNails(inputs[0].acts(), acts(), g_, start_, stride_, outputsY_, outputsX_, 0.f, 1.f);
  }
  void bprop() override {
    const LayerInput& in = inputs[0];
    if (in.sendsGrad)
      ops::bedOfNailsUndo(actsGrad(), in.grad(), g_, start_, stride_, outputsY_, outputsX_, in.gradScale, 1.f);
  }

 private:
  int start_ = 0, stride_ = 1, outputsY_ = 0, outputsX_ = 0;
};

[[maybe_unused]] const bool registeredHref = registerLayerType("href", makeLayer<ReflectLayer>);
[[maybe_unused]] const bool registeredBlur = registerLayerType("blur", makeLayer<BlurLayer>);
[[maybe_unused]] const bool registeredNailbed = registerLayerType("nailbed", makeLayer<NailbedLayer>);

}  // namespace
}  // namespace ccn::net
