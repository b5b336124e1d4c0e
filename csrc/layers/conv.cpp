// conv: a convolution with weights shared across positions (see conv.h).
#include "layers/conv.h"

#include "core/error.h"
#include "ops/dense.h"

namespace ccn::net {

namespace {
size_t inputCount(const LayerConfig& cfg) { return cfg.has("inputs") ? cfg.getStringList("inputs").size() : 1; }

constexpr int kRequired = -1;

// Key `key` for each of n inputs: a list with one entry per input, or one int for all
// (fallback when absent, unless kRequired).
std::vector<int> perInput(const LayerConfig& cfg, const char* key, size_t n, int fallback) {
  return fallback == kRequired ? cfg.getIntList(key, n) : cfg.getIntList(key, n, fallback);
}
}  // namespace

ConvLayer::ConvLayer(const LayerConfig& cfg, bool local) : WeightLayer(cfg, inputCount(cfg)) {
  const size_t n = inputCount(cfg);
  std::vector<int> channels = perInput(cfg, "channels", n, kRequired), sizeY = perInput(cfg, "imgSizeY", n, kRequired),
                   sizeX = perInput(cfg, "imgSizeX", n, kRequired), filterSize = perInput(cfg, "filterSize", n, kRequired),
                   padding = perInput(cfg, "padding", n, 0), stride = perInput(cfg, "stride", n, 1),
                   groups = perInput(cfg, "groups", n, 1);
  sharedBiases_ = !local && cfg.getBool("sharedBiases", true);
  for (size_t i = 0; i < n; ++i) {
    ConvGeometry g;
    g.channels = channels[i];
    g.imgSizeY = sizeY[i];
    g.imgSizeX = sizeX[i];
    g.filterSize = filterSize[i];
    g.numFilters = cfg.getInt("filters");
    g.padding = padding[i];
    g.stride = stride[i];
    g.groups = groups[i];
    g.modulesY = cfg.getInt("modulesY");
    g.modulesX = cfg.getInt("modulesX");
    g.local = local;
    const std::string at = n > 1 ? " (input " + std::to_string(i) + ")" : "";
    // The geometry comes resolved from the layer file's parser; here it is only checked.
    try {
      ops::checkGeometry(g);
    } catch (const ValueError& e) {
      cfg.failLayer(e.what() + at);
    }
    if (perInput(cfg, "filterChannels", n, g.filterChannels())[i] != g.filterChannels())
      cfg.fail("filterChannels", "must be channels / groups = " + std::to_string(g.filterChannels()) + at);
    if (outputs_ != g.hidRows())
      cfg.fail("outputs", "must be filters * modulesY * modulesX = " + std::to_string(g.hidRows()));
    geometries_.push_back(g);
  }
}

Shape ConvLayer::biasShape() const {
  return {sharedBiases_ ? int64_t(geometries_[0].numFilters) : geometries_[0].hidRows()};
}

void ConvLayer::checkInputs() const {
  requireInputCount(geometries_.size());
  for (size_t i = 0; i < geometries_.size(); ++i)
    requireInputRows(i, geometries_[i].imageRows(), "channels * imgSizeY * imgSizeX");
}

void ConvLayer::fprop(bool) {
  for (size_t i = 0; i < geometries_.size(); ++i)
    ops::filterActs(inputs[i].acts(), weights[i].store->weights, acts(), geometries_[i], i == 0 ? 0.f : 1.f, 1.f);
  ops::addBias(bias.store->weights, acts(), 1.f, 1.f);
}

void ConvLayer::bprop() {
  for (size_t i = 0; i < geometries_.size(); ++i) {
    const LayerInput& in = inputs[i];
    if (in.sendsGrad)
      ops::imgActs(actsGrad(), weights[i].store->weights, in.grad(), geometries_[i], in.gradScale, 1.f);
    if (weights[i].computesGrad())
      ops::weightActs(in.acts(), actsGrad(), weights[i].store->grad, geometries_[i], weights[i].gradScale, 1.f);
  }
  if (bias.computesGrad()) ops::biasGrad(actsGrad(), bias.store->grad, bias.gradScale, 1.f);
}

namespace {
std::unique_ptr<Layer> makeConv(const LayerConfig& cfg) { return std::make_unique<ConvLayer>(cfg, false); }
[[maybe_unused]] const bool registered = registerLayerType("conv", makeConv);
}  // namespace

}  // namespace ccn::net
