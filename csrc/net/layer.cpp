// The parts of the layer classes shared by every type, and the type registry.
#include "net/layer.h"

#include <map>

#include "core/error.h"
#include "ops/check.h"
#include "ops/dense.h"

namespace ccn::net {

Layer::Layer(const LayerConfig& cfg, bool hasActs) : name_(cfg.name()), type_(cfg.getString("type")) {
  inputNames_ = cfg.has("inputs") ? cfg.getStringList("inputs") : std::vector<std::string>{};
  if (!hasActs) return;
  outputs_ = cfg.getInt("outputs");
  if (outputs_ <= 0) cfg.fail("outputs", "must be positive, got " + std::to_string(outputs_));
  if (cfg.has("outChannels")) {
    outShape_ = {cfg.getInt("outChannels"), cfg.getInt("outSizeY"), cfg.getInt("outSizeX")};
    int64_t product = 0;
    try {
      product = ops::checked_size("layer", "outChannels * outSizeY * outSizeX", {outShape_[0], outShape_[1], outShape_[2]});
    } catch (const ValueError& e) {
      cfg.failLayer(e.what());
    }
    if (product != outputs_)
      cfg.failLayer("outChannels*outSizeY*outSizeX = " + std::to_string(product) + " differs from outputs = " +
                    std::to_string(outputs_));
  } else {
    outShape_ = {outputs_};
  }
}

void Layer::fail(const std::string& message) const {
  throw ValueError("layer '" + name_ + "' (" + type_ + "): " + message);
}

void Layer::requireInputCount(size_t count) const {
  if (inputs.size() != count)
    fail("takes exactly " + std::to_string(count) + " input" + (count == 1 ? "" : "s") + ", got " +
         std::to_string(inputs.size()));
}

void Layer::requireInputCountAtLeast(size_t count) const {
  if (inputs.size() < count)
    fail("takes at least " + std::to_string(count) + " input" + (count == 1 ? "" : "s") + ", got " +
         std::to_string(inputs.size()));
}

void Layer::requireInputRows(size_t j, int64_t rows, const std::string& what) const {
  int64_t got = inputs[j].layer->outputs();
  if (got != rows)
    fail("input '" + inputs[j].layer->name() + "' has " + std::to_string(got) + " outputs but " + what + " = " +
         std::to_string(rows));
}

// ---- WeightLayer -----------------------------------------------------------------

WeightLayer::WeightLayer(const LayerConfig& cfg, size_t numWeights) : Layer(cfg) {
  weightSources_ = cfg.getOptionalStrings("weightSource", numWeights);
  std::vector<double> initW = cfg.getFloatList("initW", numWeights, 0.01);
  initW_.assign(initW.begin(), initW.end());
  initB_ = static_cast<float>(cfg.getFloat("initB", 0.0));
  weights.resize(numWeights);
}

void WeightStore::step(const Tensor& direction, int numCases, float wcEps) {
  if (eps != 0.f) ops::momentumUpdate(weights, direction, inc, eps / numCases, mom, wcEps);
}

void WeightLayer::updateWeights(size_t i, int numCases) {
  WeightStore& s = *weights[i].store;
  s.step(s.grad, numCases, s.wc * s.eps);
}

void WeightLayer::setLearningParams(const std::vector<float>& epsW, float epsB, const std::vector<float>& momW,
                                    float momB, const std::vector<float>& wc) {
  auto checkLength = [&](const std::vector<float>& v, const char* key) {
    if (v.size() != weights.size())
      fail(std::string(key) + " must have " + std::to_string(weights.size()) + " value(s) (one per weight matrix), got " +
           std::to_string(v.size()));
  };
  checkLength(epsW, "epsW");
  checkLength(momW, "momW");
  checkLength(wc, "wc");
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights[i].shared) continue;
    WeightStore& s = *weights[i].store;
    s.eps = epsW[i];
    s.mom = momW[i];
    s.wc = wc[i];
  }
  bias.store->eps = epsB;
  bias.store->mom = momB;
  bias.store->wc = 0.f;  // biases are not decayed
}

// ---- CostLayer --------------------------------------------------------------------

CostLayer::CostLayer(const LayerConfig& cfg) : Layer(cfg, /*hasActs=*/false) {
  coeff_ = static_cast<float>(cfg.getFloat("coeff", 1.0));
}

bool CostLayer::setParam(const std::string& key, double value) {
  if (key != "coeff") return false;
  coeff_ = static_cast<float>(value);
  return true;
}

void CostLayer::fusedInputGrad(const Tensor&, Tensor&, float) const {
  fail("cannot compute a fused gradient");
}

// ---- registry -----------------------------------------------------------------------

static std::map<std::string, LayerFactory>& registry() {
  static std::map<std::string, LayerFactory> types;  // filled by static initialisers
  return types;
}

bool registerLayerType(const std::string& type, LayerFactory factory) {
  registry()[type] = factory;
  return true;
}

std::unique_ptr<Layer> createLayer(const LayerConfig& cfg) {
  std::string type = cfg.getString("type");
  auto it = registry().find(type);
  if (it == registry().end()) {
    std::string known;
    for (const auto& kv : registry()) known += (known.empty() ? "" : ", ") + kv.first;
    cfg.fail("type", "unknown layer type '" + type + "' (known: " + known + ")");
  }
  return it->second(cfg);
}

}  // namespace ccn::net
