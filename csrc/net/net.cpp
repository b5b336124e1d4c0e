// The ConvNet graph: construction (placement, weights, replicas, the gradient plan), the
// worker threads and their passes, and parameter access.
#include "net/net.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

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

Tensor filledOnHost(const Shape& shape, float value) {
  Tensor t = Tensor::empty(shape);
  t.fill(value);
  return t;
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
  std::vector<DataStager::Need> needs;
  for (auto& layer : layers_)
    if (layer->isData()) needs.push_back({layer->dataIndex(), layer->outputs(), layer->device, devices_[layer->device]});
  stager_.configure(needs);
  createWeights();
  createReplicas();
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
  std::map<std::string, Layer*> byName;
  for (const LayerConfig& cfg : configs) {
    std::unique_ptr<Layer> layer = createLayer(cfg);
    CCN_CHECK(!byName.count(layer->name()), "duplicate layer name '", layer->name(), "'");
    layer->index = static_cast<int>(layers_.size());
    for (const std::string& input : layer->inputNames()) {
      auto it = byName.find(input);
      CCN_CHECK(it != byName.end(), "layer '", layer->name(), "': input '", input,
                "' is not a layer listed before it (the list must be in topological order)");
      CCN_CHECK(!it->second->isCost(), "layer '", layer->name(), "': input '", input,
                "' is a cost layer, which has no activations");
      LayerInput in;
      in.layer = it->second;
      layer->inputs.push_back(in);
    }
    // gpu: its position in the device list; by default its first input's device.
    int gpu = cfg.getInt("gpu", layer->inputs.empty() ? 0 : layer->inputs[0].layer->device);
    if (gpu < 0 || gpu >= static_cast<int>(devices_.size()))
      cfg.fail("gpu", "device " + std::to_string(gpu) + " is out of range: the net has " +
                          std::to_string(devices_.size()) + " logical device(s)");
    layer->device = gpu;
    layer->checkInputs();
    byName[layer->name()] = layer.get();
    layers_.push_back(std::move(layer));
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
  // Every matrix without a weightSource gets its own store, and every layer its biases.
  for (WeightLayer* wl : weightLayers) {
    Device dev = devices_[wl->device];
    for (size_t i = 0; i < wl->numWeights(); ++i) {
      if (!wl->weightSource(i).empty()) continue;
      Shape shape = wl->weightShape(i);
      auto store = std::make_shared<WeightStore>();
      uint64_t base = (static_cast<uint64_t>(wl->index) << 40) | (static_cast<uint64_t>(i) << 34);
      store->weights = gaussianOnHost(shape, wl->initW(i), initKey, base).to(dev);
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
      if (candidate->name() != srcName) continue;
      src = dynamic_cast<WeightLayer*>(candidate.get());
      CCN_CHECK(src, "layer '", wl->name(), "': weightSource '", source, "' names a ", candidate->type(),
                " layer, which has no weights");
      CCN_CHECK(src->type() == wl->type(), "layer '", wl->name(), "': weightSource '", source, "' names a ",
                src->type(), " layer; weights are shared between layers of one type (this one is ",
                wl->type(), ")");
    }
    CCN_CHECK(src, "layer '", wl->name(), "': weightSource '", source, "' names no layer");
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

void Net::createReplicas() {
  for (auto& layer : layers_) {
    if (layer->outputs() == 0) continue;  // cost layers
    auto home = std::make_unique<Replica>();
    home->device = layer->device;
    layer->replicas.push_back(std::move(home));
  }
  for (auto& consumer : layers_) {
    for (LayerInput& in : consumer->inputs) {
      Layer& producer = *in.layer;
      for (auto& r : producer.replicas)
        if (r->device == consumer->device) in.replica = r.get();
      if (in.replica) continue;
      auto remote = std::make_unique<Replica>();
      remote->device = consumer->device;
      in.replica = remote.get();
      producer.replicas.push_back(std::move(remote));
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
  // A softmax feeding only one cost on its device takes the fused gradient from that cost.
  std::vector<int> consumerCount(layers_.size(), 0);
  for (auto& layer : layers_)
    for (const LayerInput& in : layer->inputs) ++consumerCount[in.layer->index];
  std::vector<bool> fusedSoftmax(layers_.size(), false);
  for (auto& layer : layers_) {
    auto* cost = dynamic_cast<CostLayer*>(layer.get());
    if (!cost || !cost->fusesWithSoftmax()) continue;
    Layer& probs = *cost->inputs[1].layer;
    if (probs.needsGrad && probs.device == cost->device && consumerCount[probs.index] == 1 &&
        probs.attachFusedCost(cost)) {
      cost->setFusedSoftmax();
      fusedSoftmax[probs.index] = true;
    }
  }
  // In reverse layer order (the order bprop runs on each device): who receives a gradient,
  // which inputs get one and with what scaleTargets (0 for the first writer of a buffer).
  std::vector<bool> sent(layers_.size(), false);  // some consumer sends to this layer
  remoteGradSenders_.assign(layers_.size(), {});
  sendsToOtherDevice_.assign(layers_.size(), false);
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
    Layer& layer = **it;
    layer.receivesGrad = layer.isCost() || fusedSoftmax[layer.index] || sent[layer.index];
    for (size_t j = 0; j < layer.inputs.size(); ++j) {
      LayerInput& in = layer.inputs[j];
      in.sendsGrad = layer.receivesGrad && layer.backpropagatesTo(static_cast<int>(j)) && in.layer->needsGrad;
      if (!in.sendsGrad) continue;
      in.gradScale = in.replica->gradWriters++ == 0 ? 0.f : 1.f;
      sent[in.layer->index] = true;
      if (in.layer->device != layer.device) {
        remoteGradSenders_[in.layer->index].push_back(layer.index);
        sendsToOtherDevice_[layer.index] = true;
      }
    }
    auto* wl = dynamic_cast<WeightLayer*>(&layer);
    if (!wl || !layer.receivesGrad) continue;
    for (WeightSlot& s : wl->weights) {
      s.writesGrad = true;
      s.gradScale = s.store->gradWriters++ == 0 ? 0.f : 1.f;
    }
    wl->bias.writesGrad = true;
    wl->bias.gradScale = wl->bias.store->gradWriters++ == 0 ? 0.f : 1.f;
  }
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
  for (auto& w : workers_) {
    Worker* worker = w.get();
    w->thread = std::thread([this, worker] { workerLoop(*worker); });
  }
}

// ---- lookups ----------------------------------------------------------------------------

std::vector<std::string> Net::layerNames() const {
  std::vector<std::string> names;
  for (auto& layer : layers_) names.push_back(layer->name());
  return names;
}

std::vector<std::string> Net::weightLayerNames() const {
  std::vector<std::string> names;
  for (auto& layer : layers_)
    if (dynamic_cast<WeightLayer*>(layer.get())) names.push_back(layer->name());
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
  WeightLayer& wl = weightLayer(layer);
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
  WeightSlot& s = slot(layer, key, index);
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

Tensor Net::grad(const std::string& layer, const std::string& key, size_t index) const {
  CCN_CHECK(key == "weights" || key == "biases", "layer '", layer, "': gradients exist for 'weights' and 'biases', not '",
            key, "'");
  WeightSlot& s = slot(layer, key, index);
  if (s.store->eps == 0.f || s.store->gradWriters == 0) return filledOnHost(s.store->grad.shape(), 0.f);
  return s.store->grad;
}

void Net::setLearningParams(const std::string& layer, const std::vector<float>& epsW, float epsB,
                            const std::vector<float>& momW, float momB, const std::vector<float>& wc) {
  weightLayer(layer).setLearningParams(epsW, epsB, momW, momB, wc);
}

void Net::setLayerParam(const std::string& name, const std::string& key, double value) {
  Layer& l = layer(name);
  CCN_CHECK(l.setParam(key, value), "layer '", name, "' (", l.type(), ") has no parameter '", key,
            "' that can be set");
}

// ---- results ------------------------------------------------------------------------------

std::vector<std::pair<std::string, CostResult>> Net::costs() const {
  CCN_CHECK(haveFprop_, "costs() needs an fprop() first");
  std::vector<std::pair<std::string, CostResult>> out;
  for (auto& layer : layers_)
    if (auto* cost = dynamic_cast<CostLayer*>(layer.get())) out.emplace_back(cost->name(), cost->result());
  return out;
}

Tensor Net::acts(const std::string& name) const {
  Layer& l = layer(name);
  CCN_CHECK(!l.isCost(), "layer '", name, "' is a cost layer and has no activations (see costs())");
  CCN_CHECK(haveFprop_, "acts of layer '", name, "': no fprop() has run yet");
  Shape shape = l.outShape();
  shape.push_back(numCases_);
  return l.acts().reshape(shape);
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
        if (in.sendsGrad) ops::flagNonFinite(in.grad(), flags[in.replica->device], base + kGrads);
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
  int numCases = -1;
  int firstIdx = -1;
  for (auto& layer : layers_) {
    int idx = layer->dataIndex();
    if (idx < 0) continue;
    CCN_CHECK(idx < static_cast<int>(data.size()), "data layer '", layer->name(), "' reads data[", idx, "] but ",
              data.size(), " data array(s) were given");
    const Tensor& t = data[idx];
    CCN_CHECK(t.defined() && t.is_contiguous(), "data[", idx, "] must be a contiguous array");
    CCN_CHECK(t.rows() == layer->outputs() && t.cols() > 0, "data[", idx, "] must have shape (", layer->outputs(),
              ", numCases) for data layer '", layer->name(), "', got ", shape_str(t.shape()));
    CCN_CHECK(t.cols() <= INT32_MAX, "data[", idx, "]: too many cases");
    if (numCases < 0) {
      numCases = static_cast<int>(t.cols());
      firstIdx = idx;
    }
    CCN_CHECK(t.cols() == numCases, "data[", idx, "] has ", t.cols(), " cases (columns) but data[", firstIdx,
              "] has ", numCases);
    layer->dataSource = &t;
    layer->dataStart = 0;
  }
  CCN_CHECK(numCases > 0, "the net has no data layer");
  prepareCases(numCases, train);
  return numCases;
}

int Net::prepareSlice(int start, int end, bool train) {
  const int total = stager_.frontCases();
  CCN_CHECK(total > 0, "no data batch is loaded (stage_batch, then begin_batch)");
  CCN_CHECK(start >= 0 && start < end && end <= total, "cases [", start, ", ", end,
            ") are not a range within the current batch's ", total, " cases");
  for (auto& layer : layers_) {
    if (!layer->isData()) continue;
    layer->dataSource = &stager_.front(layer->dataIndex(), layer->device);
    layer->dataStart = start;
  }
  prepareCases(end - start, train);
  return end - start;
}

void Net::prepareCases(int numCases, bool train) {
  if (numCases != numCases_) resize(numCases);
  if (train)
    for (auto& layer : layers_) layer->reserveRandom(seed_, rngCounter_);
}

void Net::stageBatch(const std::vector<Tensor>& data) { stager_.stage(data); }

int Net::beginBatch() { return stager_.swap(); }

void Net::fpropSlice(int start, int end, bool train) {
  int numCases = prepareSlice(start, end, train);
  Pass pass;
  pass.steps = kFprop;
  pass.train = train;
  pass.numCases = numCases;
  runPass(pass);
  haveFprop_ = true;
  haveBprop_ = false;
}

void Net::trainSlice(int start, int end) {
  int numCases = prepareSlice(start, end, true);
  Pass pass;
  pass.steps = kFprop | kBprop | kUpdate;
  pass.train = true;
  pass.numCases = numCases;
  runPass(pass);
  haveFprop_ = haveBprop_ = true;
}

void Net::resize(int numCases) {
  haveFprop_ = haveBprop_ = false;
  for (auto& layer : layers_) {
    if (layer->outputs() > 0) {
      Shape shape{layer->outputs(), numCases};
      int remoteWriters = 0;
      for (size_t r = 1; r < layer->replicas.size(); ++r) remoteWriters += layer->replicas[r]->gradWriters > 0;
      for (size_t r = 0; r < layer->replicas.size(); ++r) {
        Replica& rep = *layer->replicas[r];
        Device dev = devices_[rep.device];
        rep.acts = Tensor::empty(shape, dev);
        bool grad = rep.gradWriters > 0 || (r == 0 && remoteWriters > 0);
        rep.grad = grad ? Tensor::empty(shape, dev) : Tensor();
      }
      // The first remote sum is copied straight into an unwritten home gradient; the
      // others go through a staging buffer and an add.
      int staged = remoteWriters - (layer->replicas[0]->gradWriters == 0 ? 1 : 0);
      layer->gradStaging = staged > 0 ? Tensor::empty(shape, devices_[layer->device]) : Tensor();
    }
    layer->resize(numCases);
  }
  numCases_ = numCases;
}

void Net::fprop(const std::vector<Tensor>& data, bool train) {
  int numCases = prepareData(data, train);
  Pass pass;
  pass.steps = kFprop;
  pass.train = train;
  pass.numCases = numCases;
  runPass(pass);
  haveFprop_ = true;
  haveBprop_ = false;
}

void Net::bprop() {
  CCN_CHECK(haveFprop_, "bprop() needs an fprop() first");
  Pass pass;
  pass.steps = kBprop;
  runPass(pass);
  haveBprop_ = true;
}

void Net::update(int numCases) {
  CCN_CHECK(numCases > 0, "update: num_cases must be positive, got ", numCases);
  Pass pass;
  pass.steps = kUpdate;
  pass.numCases = numCases;
  runPass(pass);
}

void Net::trainStep(const std::vector<Tensor>& data) {
  int numCases = prepareData(data, true);
  Pass pass;
  pass.steps = kFprop | kBprop | kUpdate;
  pass.train = true;
  pass.numCases = numCases;
  runPass(pass);
  haveFprop_ = haveBprop_ = true;
}

void Net::runPass(const Pass& pass) {
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    pass_ = pass;
    ++generation_;
    running_ = workers_.size();
    aborted_ = false;
    error_ = nullptr;
    workCv_.notify_all();
    doneCv_.wait(lock, [this] { return running_ == 0; });
    error = error_;
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
    for (const LayerInput& in : layer->inputs)
      if (in.layer->device != w.logical) waitDone(fpropDone_, in.layer->index, generation);
    layer->fprop(train);
    // Push copies to the devices of consumers placed elsewhere (the copy is synchronous).
    for (size_t r = 1; r < layer->replicas.size(); ++r) layer->replicas[r]->acts.copy_from(layer->acts());
    markDone(fpropDone_, layer->index, generation);
  }
}

void Net::gatherRemoteGrads(Layer& layer, uint64_t generation) {
  if (remoteGradSenders_[layer.index].empty()) return;
  for (int sender : remoteGradSenders_[layer.index]) waitDone(bpropDone_, sender, generation);
  bool written = layer.replicas[0]->gradWriters > 0;
  for (size_t r = 1; r < layer.replicas.size(); ++r) {
    Replica& remote = *layer.replicas[r];
    if (remote.gradWriters == 0) continue;
    if (!written) {
      layer.actsGrad().copy_from(remote.grad);
      written = true;
    } else {
      layer.gradStaging.copy_from(remote.grad);
      ops::add(layer.gradStaging, layer.actsGrad(), 1.f, 1.f);
    }
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
    }
    markDone(bpropDone_, layer.index, generation);
  }
}

void Net::updateOn(Worker& w, int numCases) {
  auto step = [numCases](WeightStore& s, bool decay) {
    if (s.eps == 0.f) return;
    ops::momentumUpdate(s.weights, s.grad, s.inc, s.eps / numCases, s.mom, decay ? s.wc * s.eps : 0.f);
  };
  for (Layer* layer : w.layers) {
    auto* wl = dynamic_cast<WeightLayer*>(layer);
    if (!wl) continue;
    for (WeightSlot& s : wl->weights)
      if (!s.shared) step(*s.store, true);
    step(*wl->bias.store, false);
  }
}

}  // namespace ccn::net
