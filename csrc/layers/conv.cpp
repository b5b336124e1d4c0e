// conv: a convolution with weights shared across positions (see conv.h).
#include "layers/conv.h"

#include "core/error.h"
#include "ops/dense.h"

namespace ccn::net {

ConvLayer::ConvLayer(const LayerConfig& cfg, bool local) : WeightLayer(cfg, 1) {
  ConvGeometry& g = geometry_;
  g.channels = cfg.getInt("channels");
  g.imgSizeY = cfg.getInt("imgSizeY");
  g.imgSizeX = cfg.getInt("imgSizeX");
  g.filterSize = cfg.getInt("filterSize");
  g.numFilters = cfg.getInt("filters");
  g.padding = cfg.getInt("padding", 0);
  g.stride = cfg.getInt("stride", 1);
  g.groups = cfg.getInt("groups", 1);
  g.modulesY = cfg.getInt("modulesY");
  g.modulesX = cfg.getInt("modulesX");
  g.local = local;
  sharedBiases_ = !local && cfg.getBool("sharedBiases", true);
  // The geometry comes resolved from the layer file's parser; here it is only checked.
  try {
    ops::checkGeometry(g);
  } catch (const ValueError& e) {
    cfg.failLayer(e.what());
  }
  if (cfg.getInt("filterChannels", g.filterChannels()) != g.filterChannels())
    cfg.fail("filterChannels", "must be channels / groups = " + std::to_string(g.filterChannels()));
  if (outputs_ != g.hidRows())
    cfg.fail("outputs", "must be filters * modulesY * modulesX = " + std::to_string(g.hidRows()));
}

Shape ConvLayer::biasShape() const {
  return {sharedBiases_ ? int64_t(geometry_.numFilters) : geometry_.hidRows()};
}

void ConvLayer::checkInputs() const {
  requireInputCount(1);
  requireInputRows(0, geometry_.imageRows(), "channels * imgSizeY * imgSizeX");
}

void ConvLayer::fprop(bool) {
  ops::filterActs(inputs[0].acts(), weights[0].store->weights, acts(), geometry_, 0.f, 1.f);
  ops::addBias(bias.store->weights, acts(), 1.f, 1.f);
}

void ConvLayer::bprop() {
  const LayerInput& in = inputs[0];
  if (in.sendsGrad) ops::imgActs(actsGrad(), weights[0].store->weights, in.grad(), geometry_, in.gradScale, 1.f);
  if (weights[0].computesGrad())
    ops::weightActs(in.acts(), actsGrad(), weights[0].store->grad, geometry_, weights[0].gradScale, 1.f);
  if (bias.computesGrad()) ops::biasGrad(actsGrad(), bias.store->grad, bias.gradScale, 1.f);
}

namespace {
std::unique_ptr<Layer> makeConv(const LayerConfig& cfg) { return std::make_unique<ConvLayer>(cfg, false); }
[[maybe_unused]] const bool registered = registerLayerType("conv", makeConv);
}  // namespace

}  // namespace ccn::net
