// The layer interface of the graph, the two families with shared state (layers with weights,
// cost layers) and the registry that maps a layer dict's `type` to its class.
//
// A layer's activations are (outputs, numCases) on its logical device (image index fastest,
// so a spatial output (channels, rows, cols, numCases) is the same memory). Gradients
// flowing back are gradients of the objective (sum of coeff * -cost over the cost layers),
// cuda-convnet's sign. Layers call ccn::ops only: no kernels, no device branches.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "net/layer_config.h"
#include "ops/cost.h"

namespace ccn::net {

class Layer;
class CostLayer;

// Where a layer replica's cases sit in the whole minibatch of a step (all replicas of all
// processes): [first, first + count) of total. Random numbers are drawn per case of the whole
// minibatch, so any split of it draws the same numbers for the same case.
struct CaseSlice {
  int64_t first = 0, count = 0, total = 0;
};

// A layer's activations as seen on one logical device, and the gradient that the
// consumers on that device accumulate for them. Copy 0 of a layer lives on its own
// device; the others are copies on the devices of consumers placed elsewhere.
struct ActsCopy {
  int device = 0;       // logical device
  Tensor acts;          // (outputs, numCases)
  Tensor grad;          // same shape; defined when some consumer here sends a gradient
  int gradWriters = 0;  // consumer inputs on this device that write into grad
};

// A range of cases (columns) of one producer replica's activations that a consumer replica
// reads: its columns [producerStart, producerStart + count) are the consumer's columns
// [consumerStart, consumerStart + count). Set by the Net for each batch size.
struct Piece {
  Layer* producer = nullptr;
  int64_t producerStart = 0, consumerStart = 0, count = 0;
};

// One input of a layer, wired by the Net.
struct LayerInput {
  Layer* layer = nullptr;      // the producer (for a gathered input: its replica 0)
  ActsCopy* copy = nullptr;  // its activations on the consumer's device
  bool sendsGrad = false;      // the consumer writes the gradient for this input
  float gradScale = 0.f;       // scaleTargets of that write: 0 for the first writer, else 1
  // When producer and consumer are split into different numbers of data-parallel replicas,
  // the consumer's cases are gathered from pieces of the producer's replicas into a buffer
  // of its own (`gathered`, which `copy` then points to); its gradient goes back the same way.
  std::vector<Layer*> producerReplicas;
  std::vector<Piece> pieces;
  std::shared_ptr<ActsCopy> gathered;
  bool isGathered() const { return gathered != nullptr; }
  const Tensor& acts() const { return copy->acts; }
  Tensor& grad() const { return copy->grad; }
};

class Layer {
 public:
  // Reads name, type, inputs, gpu and (unless `hasActs` is false: cost layers) outputs
  // with the optional outChannels / outSizeY / outSizeX.
  Layer(const LayerConfig& cfg, bool hasActs = true);
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  const std::string& name() const { return name_; }
  const std::string& type() const { return type_; }
  const std::vector<std::string>& inputNames() const { return inputNames_; }
  int outputs() const { return outputs_; }
  // The activation shape without the case dimension: (outChannels, outSizeY, outSizeX)
  // for spatial outputs, else (outputs,).
  const Shape& outShape() const { return outShape_; }

  // Data layers: the index of the fprop array that feeds them; -1 for other layers.
  virtual int dataIndex() const { return -1; }
  bool isData() const { return dataIndex() >= 0; }
  virtual bool isCost() const { return false; }
  // Whether a gradient goes back to input j at all (cost layers send none to labels).
  virtual bool backpropagatesTo(int j) const { (void)j; return true; }
  // A softmax (or a logistic neuron) accepts to take its gradient from `cost` (fused; see
  // CostLayer); others refuse.
  virtual bool attachFusedCost(const CostLayer* cost) { (void)cost; return false; }
  // Checks the number and sizes of the inputs once they are wired (ValueError naming the layer).
  virtual void checkInputs() const = 0;
  // (Re)allocates the layer's own buffers (masks, denominators, views) for a batch size;
  // called after the Net has allocated the copies.
  virtual void resize(int numCases) { (void)numCases; }
  // A train-mode fprop draws random numbers [counter, counter + n) of the Net's stream for
  // the whole minibatch and advances counter by n (dropout), using those of `cases`; called
  // in layer order before each such pass (every replica of a layer gets the same counter).
  virtual void reserveRandom(uint64_t seed, uint64_t& counter, const CaseSlice& cases) {
    (void)seed;
    (void)counter;
    (void)cases;
  }
  virtual void fprop(bool train) = 0;
  // Called only when the layer receives a gradient: writes the gradients of the inputs
  // that have sendsGrad and, for layers with weights, the weight gradients.
  virtual void bprop() = 0;
  // A layer parameter re-read between batches (coeff, keep, scale, pow); false if the
  // layer has no such parameter.
  virtual bool setParam(const std::string& key, double value) { (void)key; (void)value; return false; }

  Tensor& acts() { return copies[0]->acts; }
  Tensor& actsGrad() { return copies[0]->grad; }

  // ---- wiring, set by the Net ----
  int index = 0;                   // position in the net's list of layer replicas
  int configIndex = 0;             // position of its dict in the layer list (keys its initial weights)
  int device = 0;                  // logical device
  // Data parallelism: replica replicaIndex of replicaCount takes cases [r * n, (r + 1) * n) of
  // each minibatch (n = numCases / replicaCount); all replicas of a layer, in order.
  int replicaIndex = 0, replicaCount = 1;
  std::vector<Layer*> replicaGroup;
  std::vector<LayerInput> inputs;  // in the order of inputNames()
  std::vector<std::unique_ptr<ActsCopy>> copies;  // [0]: on `device`
  bool needsGrad = false;          // the objective's gradient for these acts is wanted
  bool receivesGrad = false;       // bprop runs (it is a cost, or some consumer sends to it)
  Tensor gradStaging;              // home-device buffer for summing remote gradients
  const Tensor* dataSource = nullptr;  // data layers: the array fed to this fprop
  int64_t dataStart = 0;               // ... and the first of its columns (cases) to take

 protected:
  // Errors about the inputs.
  void requireInputCount(size_t count) const;
  void requireInputCountAtLeast(size_t count) const;
  void requireInputRows(size_t j, int64_t rows, const std::string& what) const;
  [[noreturn]] void fail(const std::string& message) const;

  std::string name_, type_;
  std::vector<std::string> inputNames_;
  int outputs_ = 0;
  Shape outShape_;
};

// A weight matrix (or bias vector) with its momentum and gradient, on one device. Layers
// sharing weights through weightSource hold the same store: their gradients add up in it
// and the owner's learning parameters update it once.
struct WeightStore {
  Tensor weights, inc, grad;
  float eps = 0.f, mom = 0.f, wc = 0.f;
  int gradWriters = 0;  // layers that write grad per bprop (set by the Net)

  // One momentum step along `direction` (a gradient summed over numCases cases):
  // inc = mom * inc + eps / numCases * direction - wcEps * weights; weights += inc.
  // Nothing when eps is 0 (frozen).
  void step(const Tensor& direction, int numCases, float wcEps);
};

struct WeightSlot {
  std::shared_ptr<WeightStore> store;
  bool shared = false;      // borrowed through weightSource (updated by its owner)
  bool writesGrad = false;  // this layer adds to the store's gradient in bprop
  float gradScale = 0.f;    // scaleTargets of that write
  // eps == 0 freezes the weights: their gradient is not computed.
  bool computesGrad() const { return writesGrad && store->eps != 0.f; }
};

class WeightLayer : public Layer {
 public:
  // Reads weightSource, initW and initB. The learning parameters (eps, mom, wc) start at 0,
  // i.e. frozen, until setLearningParams: schedules belong to the trainer, which evaluates
  // them and sets the values before each data batch.
  WeightLayer(const LayerConfig& cfg, size_t numWeights);

  virtual Shape weightShape(size_t i) const = 0;
  virtual Shape biasShape() const = 0;

  size_t numWeights() const { return weightSources_.size(); }
  // "" when weight i is the layer's own, else "layer" or "layer[idx]".
  const std::string& weightSource(size_t i) const { return weightSources_[i]; }
  float initW(size_t i) const { return initW_[i]; }
  float initB() const { return initB_; }
  // Sets eps, mom and wc of the stores this layer owns (shared weights follow their owner).
  void setLearningParams(const std::vector<float>& epsW, float epsB, const std::vector<float>& momW, float momB,
                         const std::vector<float>& wc);
  // Adjusts own weight matrix i as drawn (initW x N(0,1), on the host) before it goes to the
  // device; the default keeps it.
  virtual void adjustInitialWeights(size_t i, Tensor& hostWeights) const {
    (void)i;
    (void)hostWeights;
  }
  // One update of own weight matrix i from its gradient summed over numCases cases:
  // inc = mom * inc + eps / numCases * grad - wc * eps * weights; weights += inc.
  virtual void updateWeights(size_t i, int numCases);

  std::vector<WeightSlot> weights;  // set by the Net
  WeightSlot bias;

 private:
  std::vector<std::string> weightSources_;
  std::vector<float> initW_;
  float initB_ = 0.f;
};

class CostLayer : public Layer {
 public:
  CostLayer(const LayerConfig& cfg);

  bool isCost() const override { return true; }
  bool setParam(const std::string& key, double value) override;
  // The cost summed over the cases of the last fprop (not multiplied by coeff).
  const CostResult& result() const { return result_; }
  float coeff() const { return coeff_; }

  // A cost whose outputs input may come straight from a layer of type fusedProducerType()
  // (a softmax for logreg and crossent, a logistic neuron for crossent2) computes the
  // gradient with respect to that layer's input in one step: exact where the producer
  // saturates. The Net fuses when the producer feeds only this cost on the same device and
  // accepts (attachFusedCost).
  virtual const char* fusedProducerType() const { return nullptr; }
  void setFused() { fused_ = true; }
  bool fused() const { return fused_; }
  // target = scaleTargets * target + the objective's gradient w.r.t. the producer's input,
  // from the producer's activations.
  virtual void fusedInputGrad(const Tensor& producerActs, Tensor& target, float scaleTargets) const;

 protected:
  float coeff_ = 1.f;
  CostResult result_;
  bool fused_ = false;
};

using LayerFactory = std::unique_ptr<Layer> (*)(const LayerConfig& cfg);
// Adds a layer type; returns true (for a static initialiser in the type's file).
bool registerLayerType(const std::string& type, LayerFactory factory);
// A layer of cfg's `type` (ValueError naming the layer and listing the known types).
std::unique_ptr<Layer> createLayer(const LayerConfig& cfg);

template <typename T>
std::unique_ptr<Layer> makeLayer(const LayerConfig& cfg) {
  return std::make_unique<T>(cfg);
}

}  // namespace ccn::net
