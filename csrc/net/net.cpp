// The ConvNet graph: construction (placement, weights, copies, the gradient plan), the
// worker threads and their passes, and parameter access.
#include "net/net.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <system_error>

#include "core/error.h"
#include "core/philox.h"
#include "ops/dense.h"
#ifdef CCN_WITH_CUDA
#include "core/cuda_runtime.h"
#endif

namespace ccn::net {
namespace {

// Thrown on a worker that was waiting for another worker which failed.
struct PassAborted {};

// initW * N(0, 1) by Box-Muller on the Philox stream `key`, pair p of elements from block base + p.
Tensor gaussianOnHost(const Shape& shape, float scale, uint64_t key, uint64_t base) {
  Tensor t = Tensor::empty(shape);
  float* out = t.data();
  int64_t n = t.numel();
  for (int64_t p = 0; 2 * p < n; ++p) {
    Philox4 r = philox4x32(key, base + static_cast<uint64_t>(p));
    double u1 = (static_cast<double>(r.v[0]) + 1.0) / 4294967296.0;  // (0, 1]: log is finite
    double u2 = static_cast<double>(r.v[1]) / 4294967296.0;
    double radius = std::sqrt(-2.0 * std::log(u1)), angle = 6.283185307179586 * u2;
    out[2 * p] = static_cast<float>(scale * radius * std::cos(angle));
    if (2 * p + 1 < n) out[2 * p + 1] = static_cast<float>(scale * radius * std::sin(angle));
  }
  return t;
}

// `t` on physical device `dev`: itself, or a copy (synchronous) when it lives elsewhere.
Tensor onDevice(const Tensor& t, Device dev) { return t.device() == dev ? t : t.to(dev); }

Tensor filledOnHost(const Shape& shape, float value) {
  Tensor t = Tensor::empty(shape);
  t.fill(value);
  return t;
}

std::string withCommas(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// Refuses, before anything is allocated, a layer or a device whose buffers would not fit in
// the memory its device has left (where the device can say).
void checkFits(const std::vector<std::pair<const Layer*, int64_t>>& needs, const std::vector<Device>& devices,
               const std::string& what) {
  std::map<std::string, int64_t> perDevice;
  for (const auto& [layer, bytes] : needs) {
    const Device dev = devices[layer->device];
    const int64_t have = available_memory(dev);
    CCN_CHECK(have < 0 || bytes <= have, "layer '", layer->name(), "' needs about ", withCommas(bytes), " bytes ",
              what, " but ", dev.str(), " has ", withCommas(have), " available; make it smaller");
    perDevice[dev.str()] += bytes;
  }
  for (const auto& [name, total] : perDevice) {
    const int64_t have = available_memory(Device::parse(name));
    CCN_CHECK(have < 0 || total <= have, "the layers on ", name, " need about ", withCommas(total), " bytes ", what,
              " but it has ", withCommas(have), " available");
  }
}

// "name" -> (name, 0); "name[3]" -> (name, 3).
std::pair<std::string, size_t> parseWeightSource(const std::string& text, const Layer& layer) {
  size_t open = text.find('[');
  if (open == std::string::npos) return {text, 0};
  std::string digits = text.substr(open + 1, text.size() - open - 2);
  CCN_CHECK(text.back() == ']' && !digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos,
            "layer '", layer.name(), "': weightSource '", text, "' must be 'layer' or 'layer[index]'");
  return {text.substr(0, open), std::stoul(digits)};
}

}  // namespace

// ---- construction ---------------------------------------------------------------------

Net::Net(const std::vector<LayerConfig>& configs, const std::vector<std::string>& devices, uint64_t seed)
    : seed_(seed) {
  CCN_CHECK(!devices.empty(), "devices: a net needs at least one logical device");
  for (const std::string& text : devices) {
    Device d = Device::parse(text);
    if (d.is_cuda()) {
#ifndef CCN_WITH_CUDA
      CCN_CHECK(false, "device '", text, "': this build of ccn has no CUDA backend");
#endif
      CCN_CHECK(d.index < cuda_device_count(), "device '", text, "': no such CUDA device (", cuda_device_count(),
                " visible)");
    }
    devices_.push_back(d);
  }
  CCN_CHECK(!configs.empty(), "a net needs at least one layer");
  createLayers(configs);
  for (auto& layer : layers_)
    if (layer->isData())
      dataNeeds_.push_back({layer->dataIndex(), layer->outputs(), layer->device, devices_[layer->device], layer->name()});
  for (DataStager& stager : stagers_) stager.configure(dataNeeds_);
  createWeights();
  createActsCopies();
  planGradients();
  startWorkers();
}

Net::~Net() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  workCv_.notify_all();
  for (auto& w : workers_)
    if (w->thread.joinable()) w->thread.join();
}

void Net::createLayers(const std::vector<LayerConfig>& configs) {
  std::map<std::string, std::vector<Layer*>> byName;  // every layer's replicas
  int configIndex = 0;
  for (const LayerConfig& cfg : configs) {
    // The logical devices of its data-parallel replicas ("replicas": one each), else "gpu";
    // by default those of its first input.
    std::vector<int> devices;
    if (cfg.has("replicas")) {
      devices = cfg.getIntList("replicas");
      if (devices.empty()) cfg.fail("replicas", "lists no device");
    } else if (cfg.has("gpu")) {
      devices.push_back(cfg.getInt("gpu"));
    } else if (cfg.has("inputs") && !cfg.getStringList("inputs").empty() &&
               byName.count(cfg.getStringList("inputs")[0])) {
      for (Layer* r : byName[cfg.getStringList("inputs")[0]]) devices.push_back(r->device);
    } else {
      devices.push_back(0);
    }
    for (int d : devices)
      if (d < 0 || d >= static_cast<int>(devices_.size()))
        cfg.fail(cfg.has("replicas") ? "replicas" : "gpu", "device " + std::to_string(d) +
                     " is out of range: the net has " + std::to_string(devices_.size()) + " logical device(s)");
    for (size_t a = 0; a < devices.size(); ++a)
      for (size_t b = a + 1; b < devices.size(); ++b)
        if (devices[a] == devices[b]) cfg.fail("replicas", "lists logical device " + std::to_string(devices[a]) + " twice");

    std::vector<Layer*> group;
    const int count = static_cast<int>(devices.size());
    for (int r = 0; r < count; ++r) {
      std::unique_ptr<Layer> layer = createLayer(cfg);
      CCN_CHECK(r > 0 || !byName.count(layer->name()), "duplicate layer name '", layer->name(), "'");
      layer->index = static_cast<int>(layers_.size());
      layer->configIndex = configIndex;
      layer->device = devices[r];
      layer->replicaIndex = r;
      layer->replicaCount = count;
      for (const std::string& input : layer->inputNames()) {
        auto it = byName.find(input);
        CCN_CHECK(it != byName.end(), "layer '", layer->name(), "': input '", input,
                  "' is not a layer listed before it (the list must be in topological order)");
        const std::vector<Layer*>& producers = it->second;
        CCN_CHECK(!producers[0]->isCost(), "layer '", layer->name(), "': input '", input,
                  "' is a cost layer, which has no activations");
        LayerInput in;
        if (static_cast<int>(producers.size()) == count) {
          in.layer = producers[r];  // replica r reads replica r: the same cases
        } else {
          in.layer = producers[0];
          in.producerReplicas = producers;
          in.gathered = std::make_shared<ActsCopy>();
          in.gathered->device = layer->device;
          in.copy = in.gathered.get();
        }
        layer->inputs.push_back(in);
      }
      layer->checkInputs();
      group.push_back(layer.get());
      layers_.push_back(std::move(layer));
    }
    for (Layer* r : group) r->replicaGroup = group;
    byName[group[0]->name()] = group;
    ++configIndex;
  }
}

void Net::createWeights() {
  const uint64_t initKey = seed_ ^ 0x9E3779B97F4A7C15ull;  // a stream apart from dropout's
  std::vector<WeightLayer*> weightLayers;
  size_t matrices = 0;
  for (auto& layer : layers_)
    if (auto* wl = dynamic_cast<WeightLayer*>(layer.get())) {
      weightLayers.push_back(wl);
      matrices += wl->numWeights();
    }
  // Weights, their increments and gradients: 3 float buffers per element.
  std::vector<std::pair<const Layer*, int64_t>> needs;
  for (WeightLayer* wl : weightLayers) {
    int64_t elements = 0;
    for (size_t i = 0; i < wl->numWeights(); ++i) {
      if (!wl->weightSource(i).empty()) continue;
      int64_t n = 1;
      for (int64_t d : wl->weightShape(i)) n *= d;
      elements += n;
    }
    int64_t n = 1;
    for (int64_t d : wl->biasShape()) n *= d;
    needs.push_back({wl, 3 * int64_t(sizeof(float)) * (elements + n)});
  }
  checkFits(needs, devices_, "for its weights");
  // Every matrix without a weightSource gets its own store, and every layer its biases.
  for (WeightLayer* wl : weightLayers) {
    Device dev = devices_[wl->device];
    for (size_t i = 0; i < wl->numWeights(); ++i) {
      if (!wl->weightSource(i).empty()) continue;
      Shape shape = wl->weightShape(i);
      auto store = std::make_shared<WeightStore>();
      // Keyed by the layer's place in the layer list, so its replicas, and the same net
      // placed otherwise, start from the same weights.
      uint64_t base = (static_cast<uint64_t>(wl->configIndex) << 40) | (static_cast<uint64_t>(i) << 34);
      Tensor drawn = gaussianOnHost(shape, wl->initW(i), initKey, base);
      wl->adjustInitialWeights(i, drawn);
      store->weights = drawn.to(dev);
      store->inc = filledOnHost(shape, 0.f).to(dev);
      store->grad = filledOnHost(shape, 0.f).to(dev);
      wl->weights[i].store = store;
    }
    Shape bshape = wl->biasShape();
    auto bias = std::make_shared<WeightStore>();
    bias->weights = filledOnHost(bshape, wl->initB()).to(dev);
    bias->inc = filledOnHost(bshape, 0.f).to(dev);
    bias->grad = filledOnHost(bshape, 0.f).to(dev);
    wl->bias.store = bias;
  }
  // A shared matrix takes the store of its source, following chains of weightSource.
  std::function<std::shared_ptr<WeightStore>(WeightLayer*, size_t, size_t)> resolve =
      [&](WeightLayer* wl, size_t i, size_t depth) -> std::shared_ptr<WeightStore> {
    WeightSlot& slot = wl->weights[i];
    if (slot.store) return slot.store;
    const std::string& source = wl->weightSource(i);
    CCN_CHECK(depth <= matrices, "layer '", wl->name(), "': weightSource '", source,
              "' is part of a cycle of shared weights");
    auto [srcName, srcIndex] = parseWeightSource(source, *wl);
    WeightLayer* src = nullptr;
    for (auto& candidate : layers_) {
      // replica r of a layer shares with replica r of its source
      if (candidate->name() != srcName || candidate->replicaIndex != wl->replicaIndex) continue;
      src = dynamic_cast<WeightLayer*>(candidate.get());
      CCN_CHECK(src, "layer '", wl->name(), "': weightSource '", source, "' names a ", candidate->type(),
                " layer, which has no weights");
      CCN_CHECK(src->type() == wl->type(), "layer '", wl->name(), "': weightSource '", source, "' names a ",
                src->type(), " layer; weights are shared between layers of one type (this one is ",
                wl->type(), ")");
    }
    CCN_CHECK(src, "layer '", wl->name(), "': weightSource '", source, "' names no layer",
              wl->replicaCount > 1 ? " with the same replicas" : "");
    CCN_CHECK(srcIndex < src->numWeights(), "layer '", wl->name(), "': weightSource '", source, "': layer '",
              srcName, "' has only ", src->numWeights(), " weight matrix(es)");
    CCN_CHECK(src != wl || srcIndex != i, "layer '", wl->name(), "': weightSource '", source,
              "' names the matrix itself");
    CCN_CHECK(src->device == wl->device, "layer '", wl->name(), "': weightSource '", source,
              "' is on logical device ", src->device, " but this layer is on ", wl->device,
              " (weights cannot be shared across devices)");
    Shape shape = wl->weightShape(i), srcShape = src->weightShape(srcIndex);
    CCN_CHECK(srcShape == shape, "layer '", wl->name(), "': weightSource '", source, "' has weights of shape ",
              shape_str(srcShape), " but this layer needs ", shape_str(shape));
    slot.store = resolve(src, srcIndex, depth + 1);
    slot.shared = true;
    return slot.store;
  };
  for (WeightLayer* wl : weightLayers)
    for (size_t i = 0; i < wl->numWeights(); ++i) resolve(wl, i, 0);
}

void Net::createActsCopies() {
  for (auto& layer : layers_) {
    if (layer->outputs() == 0) continue;  // cost layers
    auto home = std::make_unique<ActsCopy>();
    home->device = layer->device;
    layer->copies.push_back(std::move(home));
  }
  for (auto& consumer : layers_) {
    for (LayerInput& in : consumer->inputs) {
      if (in.isGathered()) continue;  // its own buffer
      Layer& producer = *in.layer;
      for (auto& r : producer.copies)
        if (r->device == consumer->device) in.copy = r.get();
      if (in.copy) continue;
      auto remote = std::make_unique<ActsCopy>();
      remote->device = consumer->device;
      in.copy = remote.get();
      producer.copies.push_back(std::move(remote));
    }
  }
}

void Net::planGradients() {
  // needsGrad: the objective's gradient for these acts is wanted (some weight lies below).
  for (auto& layer : layers_) {
    bool below = dynamic_cast<WeightLayer*>(layer.get()) != nullptr;
    for (const LayerInput& in : layer->inputs) below = below || in.layer->needsGrad;
    layer->needsGrad = !layer->isData() && !layer->isCost() && below;
  }
  // A softmax (logistic neuron) feeding only one cost on its device takes the fused gradient
  // from that cost.
  std::vector<int> consumerCount(layers_.size(), 0);
  for (auto& layer : layers_)
    for (const LayerInput& in : layer->inputs) ++consumerCount[in.layer->index];
  std::vector<bool> fusedSoftmax(layers_.size(), false);
  for (auto& layer : layers_) {
    auto* cost = dynamic_cast<CostLayer*>(layer.get());
    if (!cost || !cost->fusedProducerType()) continue;
    Layer& probs = *cost->inputs[1].layer;
    if (!cost->inputs[1].isGathered() && probs.needsGrad && probs.device == cost->device &&
        consumerCount[probs.index] == 1 && probs.type() == cost->fusedProducerType() &&
        probs.attachFusedCost(cost)) {
      cost->setFused();
      fusedSoftmax[probs.index] = true;
    }
  }
  // In reverse layer order (the order bprop runs on each device): who receives a gradient,
  // which inputs get one and with what scaleTargets (0 for the first writer of a buffer).
  std::vector<bool> sent(layers_.size(), false);  // some consumer sends to this layer
  remoteGradSenders_.assign(layers_.size(), {});
  pieceSenders_.assign(layers_.size(), {});
  sendsToOtherDevice_.assign(layers_.size(), false);
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
    Layer& layer = **it;
    layer.receivesGrad = layer.isCost() || fusedSoftmax[layer.index] || sent[layer.index];
    for (size_t j = 0; j < layer.inputs.size(); ++j) {
      LayerInput& in = layer.inputs[j];
      in.sendsGrad = layer.receivesGrad && layer.backpropagatesTo(static_cast<int>(j)) && in.layer->needsGrad;
      if (!in.sendsGrad) continue;
      in.gradScale = in.copy->gradWriters++ == 0 ? 0.f : 1.f;
      if (in.isGathered()) {  // each producer replica takes its pieces back from the buffer
        for (Layer* producer : in.producerReplicas) {
          sent[producer->index] = true;
          remoteGradSenders_[producer->index].push_back(layer.index);
          pieceSenders_[producer->index].push_back({layer.index, static_cast<int>(j)});
        }
        sendsToOtherDevice_[layer.index] = true;
        continue;
      }
      sent[in.layer->index] = true;
      if (in.layer->device != layer.device) {
        remoteGradSenders_[in.layer->index].push_back(layer.index);
        sendsToOtherDevice_[layer.index] = true;
      }
    }
    auto* wl = dynamic_cast<WeightLayer*>(&layer);
    if (!wl || !layer.receivesGrad) continue;
    // replica 0 sums the replicas' weight gradients: theirs must be complete when it reads them
    if (layer.replicaCount > 1) sendsToOtherDevice_[layer.index] = true;
    for (WeightSlot& s : wl->weights) {
      s.writesGrad = true;
      s.gradScale = s.store->gradWriters++ == 0 ? 0.f : 1.f;
    }
    wl->bias.writesGrad = true;
    wl->bias.gradScale = wl->bias.store->gradWriters++ == 0 ? 0.f : 1.f;
  }
  readElsewhere_.assign(layers_.size(), false);
  for (auto& layer : layers_)
    for (const LayerInput& in : layer->inputs)
      for (const Layer* producer : in.producerReplicas)
        if (producer->device != layer->device) readElsewhere_[producer->index] = true;
  fpropDone_.assign(layers_.size(), 0);
  bpropDone_.assign(layers_.size(), 0);
}

void Net::startWorkers() {
  for (size_t d = 0; d < devices_.size(); ++d) {
    auto w = std::make_unique<Worker>();
    w->logical = static_cast<int>(d);
    w->device = devices_[d];
#ifdef CCN_WITH_CUDA
    if (w->device.is_cuda()) w->stream = cuda::create_stream(w->device.index);
#endif
    for (auto& layer : layers_)
      if (layer->device == w->logical) w->layers.push_back(layer.get());
    workers_.push_back(std::move(w));
  }
  for (size_t d = 0; d < workers_.size(); ++d) {
    Worker* worker = workers_[d].get();
    try {
      worker->thread = std::thread([this, worker] { workerLoop(*worker); });
    } catch (const std::system_error& e) {
      // the destructor will not run for a half-built net: stop the threads already started
      {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
      }
      workCv_.notify_all();
      for (auto& w : workers_)
        if (w->thread.joinable()) w->thread.join();
      throw std::runtime_error(detail::format("cannot start the thread of logical device ", d, " of ",
                                              workers_.size(), " (", e.what(), ")"));
    }
  }
}

// ---- lookups ----------------------------------------------------------------------------

std::vector<std::string> Net::layerNames() const {
  std::vector<std::string> names;
  for (auto& layer : layers_)
    if (layer->replicaIndex == 0) names.push_back(layer->name());
  return names;
}

std::vector<std::string> Net::weightLayerNames() const {
  std::vector<std::string> names;
  for (auto& layer : layers_)
    if (layer->replicaIndex == 0 && dynamic_cast<WeightLayer*>(layer.get())) names.push_back(layer->name());
  return names;
}

Layer& Net::layer(const std::string& name) const {
  for (auto& layer : layers_)
    if (layer->name() == name) return *layer;
  throw ValueError("no layer named '" + name + "'");
}

WeightLayer& Net::weightLayer(const std::string& name) const {
  Layer& l = layer(name);
  auto* wl = dynamic_cast<WeightLayer*>(&l);
  CCN_CHECK(wl, "layer '", name, "' (", l.type(), ") has no weights");
  return *wl;
}

size_t Net::numWeights(const std::string& layer) const { return weightLayer(layer).numWeights(); }

WeightSlot& Net::slot(const std::string& layer, const std::string& key, size_t index) const {
  return slot(this->layer(layer), key, index);
}

WeightSlot& Net::slot(Layer& replica, const std::string& key, size_t index) const {
  const std::string& layer = replica.name();
  auto* found = dynamic_cast<WeightLayer*>(&replica);
  CCN_CHECK(found, "layer '", layer, "' (", replica.type(), ") has no weights");
  WeightLayer& wl = *found;
  if (key == "biases" || key == "biasesInc") return wl.bias;
  CCN_CHECK(key == "weights" || key == "weightsInc", "layer '", layer, "': unknown parameter '", key,
            "' (expected weights, weightsInc, biases or biasesInc)");
  CCN_CHECK(index < wl.numWeights(), "layer '", layer, "': '", key, "' has ", wl.numWeights(),
            " matrix(es), index ", index, " is out of range");
  return wl.weights[index];
}

// ---- parameters ---------------------------------------------------------------------------

Tensor Net::param(const std::string& layer, const std::string& key, size_t index) const {
  WeightSlot& s = slot(layer, key, index);
  bool inc = key == "weightsInc" || key == "biasesInc";
  return inc ? s.store->inc : s.store->weights;
}

void Net::setParam(const std::string& layer, const std::string& key, size_t index, const Tensor& value) {
  for (Layer* replica : this->layer(layer).replicaGroup) {
    WeightSlot& s = slot(*replica, key, index);
    Tensor& target = key == "weightsInc" || key == "biasesInc" ? s.store->inc : s.store->weights;
    const Shape& want = target.shape();
    bool ok = value.defined() && value.shape() == want;
    if (!ok && want.size() == 1 && value.defined() && value.numel() == want[0] && value.ndim() == 2)
      ok = value.shape()[0] == 1 || value.shape()[1] == 1;  // a row or column vector for biases
    std::string what = key == "weights" || key == "weightsInc" ? key + "[" + std::to_string(index) + "]" : key;
    CCN_CHECK(ok, "layer '", layer, "': '", what, "' must have shape ", shape_str(want), ", got ",
              value.defined() ? shape_str(value.shape()) : std::string("nothing"));
    target.copy_from(value);
  }
}

Tensor Net::grad(const std::string& layer, const std::string& key, size_t index) const {
  CCN_CHECK(key == "weights" || key == "biases", "layer '", layer, "': gradients exist for 'weights' and 'biases', not '",
            key, "'");
  WeightSlot& s = slot(layer, key, index);
  if (s.store->eps == 0.f || s.store->gradWriters == 0) return filledOnHost(s.store->grad.shape(), 0.f);
  return s.store->grad;
}

std::vector<Tensor> Net::gradBuffers(const std::string& layer) const {
  WeightLayer& wl = weightLayer(layer);
  std::vector<Tensor> out;
  for (const WeightSlot& s : wl.weights)
    if (s.computesGrad() && !s.shared) out.push_back(s.store->grad);
  if (wl.bias.computesGrad()) out.push_back(wl.bias.store->grad);
  return out;
}

void Net::setGrad(const std::string& layer, const std::string& key, size_t index, const Tensor& value) {
  CCN_CHECK(key == "weights" || key == "biases", "layer '", layer, "': gradients exist for 'weights' and 'biases', not '",
            key, "'");
  WeightSlot& s = slot(layer, key, index);
  if (!s.computesGrad()) return;
  CCN_CHECK(value.defined() && value.numel() == s.store->grad.numel(), "layer '", layer, "': gradient '", key,
            "' must have shape ", shape_str(s.store->grad.shape()), ", got ",
            value.defined() ? shape_str(value.shape()) : std::string("nothing"));
  s.store->grad.copy_from(value);
}

void Net::setLearningParams(const std::string& layer, const std::vector<float>& epsW, float epsB,
                            const std::vector<float>& momW, float momB, const std::vector<float>& wc) {
  weightLayer(layer);  // checks that it has weights
  for (Layer* replica : this->layer(layer).replicaGroup)
    static_cast<WeightLayer*>(replica)->setLearningParams(epsW, epsB, momW, momB, wc);
}

void Net::setLayerParam(const std::string& name, const std::string& key, double value) {
  for (Layer* replica : layer(name).replicaGroup)
    CCN_CHECK(replica->setParam(key, value), "layer '", name, "' (", replica->type(), ") has no parameter '", key,
              "' that can be set");
}

// ---- results ------------------------------------------------------------------------------

std::vector<std::pair<std::string, CostResult>> Net::costs() const {
  CCN_CHECK(haveFprop_, "costs() needs an fprop() first");
  std::vector<std::pair<std::string, CostResult>> out;  // replicas' sums added up
  for (auto& layer : layers_) {
    auto* cost = dynamic_cast<CostLayer*>(layer.get());
    if (!cost) continue;
    if (cost->replicaIndex == 0) {
      out.emplace_back(cost->name(), cost->result());
    } else {
      CostResult& sum = out.back().second;
      sum.cost += cost->result().cost;
      sum.error += cost->result().error;
      sum.errorTopK += cost->result().errorTopK;
    }
  }
  return out;
}

Tensor Net::acts(const std::string& name) const {
  Layer& l = layer(name);
  CCN_CHECK(!l.isCost(), "layer '", name, "' is a cost layer and has no activations (see costs())");
  CCN_CHECK(haveFprop_, "acts of layer '", name, "': no fprop() has run yet");
  Shape shape = l.outShape();
  shape.push_back(numCases_);
  if (l.replicaCount == 1) return l.acts().reshape(shape);
  Tensor all = Tensor::empty({l.outputs(), numCases_});  // the replicas' cases side by side
  const int64_t share = numCases_ / l.replicaCount;
  for (Layer* replica : l.replicaGroup)
    ops::copyColumns(onDevice(replica->acts(), Device::cpu()), 0, all, replica->replicaIndex * share, share, 0.f);
  return all.reshape(shape);
}

std::string Net::firstNonFinite() const {
  // Flags per layer: [0] its activations, [1] the gradients its bprop wrote (its inputs' and
  // its weights'), [2] its weights and biases. One flags vector per logical device.
  enum { kActs, kGrads, kWeights, kKinds };
  const int64_t count = static_cast<int64_t>(layers_.size()) * kKinds;
  std::vector<Tensor> flags;
  for (const Device& dev : devices_) flags.push_back(Tensor::zeros({count}, dev));
  for (auto& layer : layers_) {
    Tensor& f = flags[layer->device];
    const int64_t base = int64_t(layer->index) * kKinds;
    if (haveFprop_ && layer->outputs() > 0) ops::flagNonFinite(layer->acts(), f, base + kActs);
    auto* wl = dynamic_cast<WeightLayer*>(layer.get());
    if (haveBprop_ && layer->receivesGrad) {
      for (const LayerInput& in : layer->inputs)
        if (in.sendsGrad) ops::flagNonFinite(in.grad(), flags[in.copy->device], base + kGrads);
      if (wl) {
        for (const WeightSlot& s : wl->weights)
          if (s.computesGrad()) ops::flagNonFinite(s.store->grad, f, base + kGrads);
        if (wl->bias.computesGrad()) ops::flagNonFinite(wl->bias.store->grad, f, base + kGrads);
      }
    }
    if (wl) {
      for (const WeightSlot& s : wl->weights) ops::flagNonFinite(s.store->weights, f, base + kWeights);
      ops::flagNonFinite(wl->bias.store->weights, f, base + kWeights);
    }
  }
  std::vector<float> found(count, 0.f);
  for (Tensor& f : flags) {
    Tensor host = f.to(Device::cpu());
    for (int64_t i = 0; i < count; ++i) found[i] = std::max(found[i], host.data()[i]);
  }
  auto flagged = [&](const Layer& l, int kind) { return found[int64_t(l.index) * kKinds + kind] != 0.f; };
  for (auto& layer : layers_)
    if (flagged(*layer, kActs)) return "the activations of layer '" + layer->name() + "'";
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it)
    if (flagged(**it, kGrads)) return "the gradients computed by layer '" + (*it)->name() + "'";
  for (auto& layer : layers_)
    if (flagged(*layer, kWeights)) return "the weights of layer '" + layer->name() + "'";
  return "";
}

// ---- passes -------------------------------------------------------------------------------

int Net::prepareData(const std::vector<Tensor>& data, bool train) {
  const int numCases = DataStager::checkBatch(dataNeeds_, data);
  prepareCases(numCases, train);
  for (auto& layer : layers_) {
    if (!layer->isData()) continue;
    layer->dataSource = &data[layer->dataIndex()];
    layer->dataStart = int64_t(layer->replicaIndex) * (numCases / layer->replicaCount);
  }
  return numCases;
}

int Net::prepareSlice(int start, int end, bool train) {
  const DataStager& stager = stagers_[currentChannel_];
  const int total = stager.frontCases();
  CCN_CHECK(total > 0, "no data batch is loaded (stage_batch, then begin_batch)");
  CCN_CHECK(start >= 0 && start < end && end <= total, "cases [", start, ", ", end,
            ") are not a range within the current batch's ", total, " cases");
  const int numCases = end - start;
  prepareCases(numCases, train);
  for (auto& layer : layers_) {
    if (!layer->isData()) continue;
    layer->dataSource = &stager.front(layer->dataIndex(), layer->device);
    layer->dataStart = start + int64_t(layer->replicaIndex) * (numCases / layer->replicaCount);
  }
  return numCases;
}

void Net::prepareCases(int numCases, bool train) {
  if (numCases != numCases_) resize(numCases);
  if (!train) return;
  // The numbers of the whole step's minibatch (every shard of every process), per layer;
  // each replica uses those of its own cases.
  const int64_t total = int64_t(numCases) * shardCount_;
  uint64_t groupStart = rngCounter_;
  for (auto& layer : layers_) {
    if (layer->replicaIndex == 0) groupStart = rngCounter_;
    const int64_t share = numCases / layer->replicaCount;
    CaseSlice cases{int64_t(shardIndex_) * numCases + int64_t(layer->replicaIndex) * share, share, total};
    uint64_t counter = groupStart;
    layer->reserveRandom(seed_, counter, cases);
    if (layer->replicaIndex == 0) rngCounter_ = counter;
  }
}

void Net::setShard(int index, int count) {
  CCN_CHECK(count >= 1 && index >= 0 && index < count, "set_shard: shard ", index, " of ", count,
            " does not exist");
  shardIndex_ = index;
  shardCount_ = count;
}

namespace {
void checkChannel(int channel) {
  CCN_CHECK(channel >= 0 && channel < Net::kChannels, "data channel ", channel, " does not exist (0: training, ",
            "1: testing)");
}
}  // namespace

void Net::stageBatch(const std::vector<Tensor>& data, int channel) {
  checkChannel(channel);
  stagers_[channel].stage(data);
}

int Net::beginBatch(int channel) {
  checkChannel(channel);
  int numCases = stagers_[channel].swap();
  currentChannel_ = channel;
  return numCases;
}

void Net::fpropSlice(int start, int end, bool train) { forward(prepareSlice(start, end, train), train); }

void Net::trainSlice(int start, int end) { step(prepareSlice(start, end, true)); }

void Net::resize(int numCases) {
  haveFprop_ = haveBprop_ = false;
  for (auto& layer : layers_)
    CCN_CHECK(numCases % layer->replicaCount == 0, "layer '", layer->name(), "' has ", layer->replicaCount,
              " data-parallel replicas: a minibatch of ", numCases, " cases does not split evenly among them ",
              "(use a multiple of ", layer->replicaCount, ")");
  if (numCases > numCases_) {  // activations and their gradients, on every device that holds a copy
    std::vector<std::pair<const Layer*, int64_t>> needs;
    for (auto& layer : layers_) {
      int64_t buffers = 2 * int64_t(std::max<size_t>(layer->copies.size(), 1));
      for (const LayerInput& in : layer->inputs)
        if (in.isGathered()) buffers += 2;
      needs.push_back({layer.get(), buffers * int64_t(sizeof(float)) * layer->outputs() *
                                        (numCases / layer->replicaCount)});
    }
    checkFits(needs, devices_, "for minibatches of " + std::to_string(numCases));
  }
  for (auto& layer : layers_) {
    const int cases = numCases / layer->replicaCount;  // this replica's share
    if (layer->outputs() > 0) {
      Shape shape{layer->outputs(), cases};
      int remoteWriters = 0;
      for (size_t r = 1; r < layer->copies.size(); ++r) remoteWriters += layer->copies[r]->gradWriters > 0;
      const bool pieces = !pieceSenders_[layer->index].empty();
      for (size_t r = 0; r < layer->copies.size(); ++r) {
        ActsCopy& rep = *layer->copies[r];
        Device dev = devices_[rep.device];
        rep.acts = Tensor::empty(shape, dev);
        bool grad = rep.gradWriters > 0 || (r == 0 && (remoteWriters > 0 || pieces));
        rep.grad = grad ? Tensor::empty(shape, dev) : Tensor();
      }
      // The first remote sum is copied straight into an unwritten home gradient; the
      // others go through a staging buffer and an add.
      int staged = remoteWriters - (layer->copies[0]->gradWriters == 0 ? 1 : 0);
      layer->gradStaging = staged > 0 ? Tensor::empty(shape, devices_[layer->device]) : Tensor();
    }
    // Gathered inputs: the consumer's cases [c * n, (c + 1) * n) from the producer replicas
    // that hold them.
    const int64_t first = int64_t(layer->replicaIndex) * cases, last = first + cases;
    for (LayerInput& in : layer->inputs) {
      if (!in.isGathered()) continue;
      Shape shape{in.layer->outputs(), cases};
      in.gathered->acts = Tensor::empty(shape, devices_[layer->device]);
      in.gathered->grad = in.sendsGrad ? Tensor::empty(shape, devices_[layer->device]) : Tensor();
      in.pieces.clear();
      const int64_t share = numCases / static_cast<int64_t>(in.producerReplicas.size());
      for (Layer* producer : in.producerReplicas) {
        const int64_t from = int64_t(producer->replicaIndex) * share, to = from + share;
        const int64_t lo = std::max(first, from), hi = std::min(last, to);
        if (lo < hi) in.pieces.push_back({producer, lo - from, lo - first, hi - lo});
      }
    }
    layer->resize(cases);
  }
  numCases_ = numCases;
}

void Net::fprop(const std::vector<Tensor>& data, bool train) { forward(prepareData(data, train), train); }

void Net::forward(int numCases, bool train) {
  Pass pass;
  pass.steps = kFprop;
  pass.train = train;
  pass.numCases = numCases;
  runPass(pass);
  haveFprop_ = true;
  haveBprop_ = false;
}

void Net::step(int numCases) {
  Pass pass;
  pass.steps = kFprop | kBprop | kUpdate;
  pass.train = true;
  pass.numCases = numCases;
  runPass(pass);
  haveFprop_ = haveBprop_ = true;
}

void Net::bprop() {
  startBprop();
  finishBprop();
}

void Net::startBprop() {
  CCN_CHECK(haveFprop_, "bprop() needs an fprop() first");
  Pass pass;
  pass.steps = kBprop;
  startPass(pass);
}

void Net::waitGradients(const std::string& name) {
  const Layer& l = layer(name);  // replica 0: its weight gradients are the replicas' sum
  CCN_CHECK(dynamic_cast<const WeightLayer*>(&l), "layer '", name, "' (", l.type(), ") has no weights");
  std::unique_lock<std::mutex> lock(mutex_);
  CCN_CHECK(passOpen_ && (pass_.steps & kBprop), "wait_gradients needs a bprop started with start_bprop");
  layerCv_.wait(lock, [&] { return bpropDone_[l.index] == generation_ || aborted_; });
}

void Net::finishBprop() {
  finishPass();
  haveBprop_ = true;
}

void Net::update(int numCases) {
  CCN_CHECK(numCases > 0, "update: num_cases must be positive, got ", numCases);
  Pass pass;
  pass.steps = kUpdate;
  pass.numCases = numCases;
  runPass(pass);
}

void Net::trainStep(const std::vector<Tensor>& data) { step(prepareData(data, true)); }

void Net::runPass(const Pass& pass) {
  startPass(pass);
  finishPass();
}

void Net::startPass(const Pass& pass) {
  std::unique_lock<std::mutex> lock(mutex_);
  CCN_CHECK(running_ == 0 && !passOpen_, "a pass is already running (finish_bprop first)");
  pass_ = pass;
  ++generation_;
  running_ = workers_.size();
  aborted_ = false;
  error_ = nullptr;
  passOpen_ = true;
  workCv_.notify_all();
}

void Net::finishPass() {
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    doneCv_.wait(lock, [this] { return running_ == 0; });
    error = error_;
    passOpen_ = false;
  }
  for (auto& layer : layers_) layer->dataSource = nullptr;  // the caller's arrays are not kept
  if (error) {
    haveFprop_ = haveBprop_ = false;  // buffers may be half written
    std::rethrow_exception(error);
  }
}

void Net::workerLoop(Worker& w) {
#ifdef CCN_WITH_CUDA
  cuda::set_current_stream(w.stream);
#endif
  uint64_t seen = 0;
  for (;;) {
    Pass pass;
    uint64_t generation;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      workCv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation = generation_;
      pass = pass_;
    }
    try {
      if (pass.steps & kFprop) fpropOn(w, pass.train, generation);
      if (pass.steps & kBprop) bpropOn(w, generation);
      if (pass.steps & kUpdate) updateOn(w, pass.numCases);
      synchronize(w);
    } catch (const PassAborted&) {
      // another worker failed; its error is reported
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      aborted_ = true;
      layerCv_.notify_all();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (--running_ == 0) doneCv_.notify_all();
  }
}

void Net::markDone(std::vector<uint64_t>& done, int layerIndex, uint64_t generation) {
  std::lock_guard<std::mutex> lock(mutex_);
  done[layerIndex] = generation;
  layerCv_.notify_all();
}

void Net::waitDone(const std::vector<uint64_t>& done, int layerIndex, uint64_t generation) {
  std::unique_lock<std::mutex> lock(mutex_);
  layerCv_.wait(lock, [&] { return done[layerIndex] == generation || aborted_; });
  if (done[layerIndex] != generation) throw PassAborted{};
}

void Net::synchronize(Worker& w) {
#ifdef CCN_WITH_CUDA
  if (w.stream) cuda::synchronize_stream(w.stream);
#else
  (void)w;
#endif
}

void Net::fpropOn(Worker& w, bool train, uint64_t generation) {
  for (Layer* layer : w.layers) {
    for (LayerInput& in : layer->inputs) {
      if (!in.isGathered()) {
        if (in.layer->device != w.logical) waitDone(fpropDone_, in.layer->index, generation);
        continue;
      }
      for (const Piece& piece : in.pieces) {
        if (piece.producer->device != w.logical) waitDone(fpropDone_, piece.producer->index, generation);
        ops::copyColumns(onDevice(piece.producer->acts(), w.device), piece.producerStart, in.gathered->acts,
                         piece.consumerStart, piece.count, 0.f);
      }
    }
    layer->fprop(train);
    // Push copies to the devices of consumers placed elsewhere (the copy is synchronous).
    for (size_t r = 1; r < layer->copies.size(); ++r) layer->copies[r]->acts.copy_from(layer->acts());
    // Replicas of consumers elsewhere gather from these acts on their own streams.
    if (readElsewhere_[layer->index]) synchronize(w);
    markDone(fpropDone_, layer->index, generation);
  }
}

void Net::gatherRemoteGrads(Layer& layer, uint64_t generation) {
  if (remoteGradSenders_[layer.index].empty()) return;
  for (int sender : remoteGradSenders_[layer.index]) waitDone(bpropDone_, sender, generation);
  bool written = layer.copies[0]->gradWriters > 0;
  for (size_t r = 1; r < layer.copies.size(); ++r) {
    ActsCopy& remote = *layer.copies[r];
    if (remote.gradWriters == 0) continue;
    if (!written) {
      layer.actsGrad().copy_from(remote.grad);
      written = true;
    } else {
      layer.gradStaging.copy_from(remote.grad);
      ops::add(layer.gradStaging, layer.actsGrad(), 1.f, 1.f);
    }
  }
  // Pieces from gathered inputs: the replicas of one consumer cover this replica's cases
  // once, so the first consumer writes (scale 0 when nothing was written yet), the others add.
  const Device dev = devices_[layer.device];
  const void* group = nullptr;
  int groupInput = -1;
  bool groupWrites = false;
  for (auto [consumer, j] : pieceSenders_[layer.index]) {
    const Layer& c = *layers_[consumer];
    if (c.replicaGroup[0] != group || j != groupInput) {
      if (group) written = true;
      group = c.replicaGroup[0];
      groupInput = j;
      groupWrites = !written;
    }
    const LayerInput& in = c.inputs[j];
    for (const Piece& piece : in.pieces)
      if (piece.producer == &layer)
        ops::copyColumns(onDevice(in.gathered->grad, dev), piece.consumerStart, layer.actsGrad(),
                         piece.producerStart, piece.count, groupWrites ? 0.f : 1.f);
  }
}

void Net::reduceReplicaGrads(WeightLayer& layer, uint64_t generation) {
  const Device dev = devices_[layer.device];
  for (size_t r = 1; r < layer.replicaGroup.size(); ++r) {
    waitDone(bpropDone_, layer.replicaGroup[r]->index, generation);
    auto& other = static_cast<WeightLayer&>(*layer.replicaGroup[r]);
    for (size_t i = 0; i < layer.weights.size(); ++i)
      if (layer.weights[i].computesGrad() && !layer.weights[i].shared)
        ops::add(onDevice(other.weights[i].store->grad, dev), layer.weights[i].store->grad, 1.f, 1.f);
    if (layer.bias.computesGrad()) ops::add(onDevice(other.bias.store->grad, dev), layer.bias.store->grad, 1.f, 1.f);
  }
}

void Net::bpropOn(Worker& w, uint64_t generation) {
  for (auto it = w.layers.rbegin(); it != w.layers.rend(); ++it) {
    Layer& layer = **it;
    if (layer.receivesGrad) {
      gatherRemoteGrads(layer, generation);
      layer.bprop();
      // The producer's worker reads these gradients from another stream.
      if (sendsToOtherDevice_[layer.index]) synchronize(w);
      // Replica 0 of a data-parallel weight layer sums the replicas' weight gradients in
      // replica order (every replica's own dependencies come later in layer order, which
      // this worker has already passed, so waiting here cannot deadlock).
      auto* wl = dynamic_cast<WeightLayer*>(&layer);
      if (wl && layer.replicaCount > 1 && layer.replicaIndex == 0) reduceReplicaGrads(*wl, generation);
      // A bprop on its own may be watched layer by layer (waitGradients): its gradients
      // are complete when the layer is marked done.
      if (wl && !(pass_.steps & kUpdate)) synchronize(w);
    }
    markDone(bpropDone_, layer.index, generation);
  }
}

void Net::updateOn(Worker& w, int numCases) {
  for (Layer* layer : w.layers) {
    auto* wl = dynamic_cast<WeightLayer*>(layer);
    if (!wl || wl->replicaIndex > 0) continue;  // replica 0 updates for all its replicas
    for (size_t i = 0; i < wl->weights.size(); ++i)
      if (!wl->weights[i].shared) wl->updateWeights(i, numCases);
    WeightStore& b = *wl->bias.store;
    b.step(b.grad, numCases, 0.f);  // biases do not decay
    // ... and hands them the new weights (they are done with theirs for this pass).
    for (size_t r = 1; r < wl->replicaGroup.size(); ++r) {
      auto& other = static_cast<WeightLayer&>(*wl->replicaGroup[r]);
      for (size_t i = 0; i < wl->weights.size(); ++i)
        if (!wl->weights[i].shared && wl->weights[i].store->eps != 0.f)
          other.weights[i].store->weights.copy_from(wl->weights[i].store->weights);
      if (wl->bias.store->eps != 0.f) other.bias.store->weights.copy_from(wl->bias.store->weights);
    }
  }
}

}  // namespace ccn::net
