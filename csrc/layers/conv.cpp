// conv: a convolution with weights shared across positions (see conv.h).
#include "layers/conv.h"

#include "core/error.h"
#include "ops/dense.h"

namespace ccn::net {

namespace {
size_t inputCount(const LayerConfig& cfg) { return cfg.has("inputs") ? cfg.getStringList("inputs").size() : 1; }

constexpr int kRequired = -1;

std::string at_input(size_t i, size_t n) { return n > 1 ? " (input " + std::to_string(i) + ")" : ""; }

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
  filterConns_ = cfg.getIntLists("filterConns", n);
  inputChannels_ = channels;
  for (size_t i = 0; i < n; ++i) {
    ConvGeometry g;
    g.channels = channels[i];
    const std::vector<int>& conns = filterConns_[i];
    if (!conns.empty()) {  // the convolution runs on the gathered image
      for (int c : conns)
        if (c < 0 || c >= channels[i])
          cfg.fail("filterConns", "channel " + std::to_string(c) + " outside 0.." + std::to_string(channels[i] - 1));
      if (conns.size() % groups[i] != 0)
        cfg.fail("filterConns", "length " + std::to_string(conns.size()) + " is not a multiple of groups");
      std::vector<bool> seen(channels[i], false);
      for (int c : conns) seen[c] = true;
      for (int c = 0; c < channels[i]; ++c)
        if (!seen[c]) cfg.fail("filterConns", "no group sees channel " + std::to_string(c) + at_input(i, n));
      g.channels = static_cast<int>(conns.size());
    }
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
      cfg.fail("filterChannels", "must be " + std::string(conns.empty() ? "channels" : "len(filterConns)") +
                                     " / groups = " + std::to_string(g.filterChannels()) + at);
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
    requireInputRows(i, int64_t(inputChannels_[i]) * geometries_[i].imgSizeY * geometries_[i].imgSizeX,
                     "channels * imgSizeY * imgSizeX");
}

namespace {
// Channel plane c of an image tensor (channels, ..., numCases): a view of its rows.
Tensor plane(const Tensor& image, int c, int64_t planeSize) {
  Shape shape{planeSize};
  return Tensor::wrap(image.data() + c * planeSize, shape, contiguous_strides(shape), image.device(), nullptr);
}
}  // namespace

void ConvLayer::resize(int numCases) {
  gathered_.assign(geometries_.size(), Tensor());
  gatheredGrad_.assign(geometries_.size(), Tensor());
  for (size_t i = 0; i < geometries_.size(); ++i) {
    if (filterConns_[i].empty()) continue;
    Shape shape{geometries_[i].imageRows(), numCases};
    gathered_[i] = Tensor::empty(shape, acts().device());
    gatheredGrad_[i] = Tensor::empty(shape, acts().device());
  }
}

const Tensor& ConvLayer::convInput(size_t i) const {
  return filterConns_[i].empty() ? inputs[i].acts() : gathered_[i];
}

void ConvLayer::fprop(bool) {
  for (size_t i = 0; i < geometries_.size(); ++i) {
    if (!filterConns_[i].empty()) {
      const int64_t planeSize = int64_t(geometries_[i].imgSizeY) * geometries_[i].imgSizeX * inputs[i].acts().cols();
      for (size_t k = 0; k < filterConns_[i].size(); ++k) {
        Tensor to = plane(gathered_[i], static_cast<int>(k), planeSize);
        ops::add(plane(inputs[i].acts(), filterConns_[i][k], planeSize), to, 0.f, 1.f);
      }
    }
    ops::filterActs(convInput(i), weights[i].store->weights, acts(), geometries_[i], i == 0 ? 0.f : 1.f, 1.f);
  }
  ops::addBias(bias.store->weights, acts(), 1.f, 1.f);
}

void ConvLayer::bprop() {
  for (size_t i = 0; i < geometries_.size(); ++i) {
    const LayerInput& in = inputs[i];
    if (in.sendsGrad && filterConns_[i].empty()) {
      ops::imgActs(actsGrad(), weights[i].store->weights, in.grad(), geometries_[i], in.gradScale, 1.f);
    } else if (in.sendsGrad) {
      ops::imgActs(actsGrad(), weights[i].store->weights, gatheredGrad_[i], geometries_[i], 0.f, 1.f);
      const int64_t planeSize = int64_t(geometries_[i].imgSizeY) * geometries_[i].imgSizeX * in.acts().cols();
      std::vector<bool> written(inputChannels_[i], false);  // the first write honours gradScale
      for (size_t k = 0; k < filterConns_[i].size(); ++k) {
        const int c = filterConns_[i][k];
        Tensor to = plane(in.grad(), c, planeSize);
        ops::add(plane(gatheredGrad_[i], static_cast<int>(k), planeSize), to, written[c] ? 1.f : in.gradScale, 1.f);
        written[c] = true;
      }
    }
    if (weights[i].computesGrad())
      ops::weightActs(convInput(i), actsGrad(), weights[i].store->grad, geometries_[i], weights[i].gradScale, 1.f);
  }
  if (bias.computesGrad()) ops::biasGrad(actsGrad(), bias.store->grad, bias.gradScale, 1.f);
}

namespace {
std::unique_ptr<Layer> makeConv(const LayerConfig& cfg) { return std::make_unique<ConvLayer>(cfg, false); }
[[maybe_unused]] const bool registered = registerLayerType("conv", makeConv);
}  // namespace

}  // namespace ccn::net
