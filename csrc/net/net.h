// The ConvNet graph: layers placed on logical devices, one worker thread per logical
// device, activations copied forward to the devices of consumers placed elsewhere and
// gradients summed back, weights and their update rule.
//
// Determinism: every gradient is accumulated in an order fixed when the net is built
// (on each device, consumers in reverse layer order; then the other devices' partial
// sums in device order), never in the order threads happen to finish, so a CPU run is
// bit-for-bit repeatable.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/device.h"
#include "net/data_stager.h"
#include "net/layer.h"

namespace ccn::net {

class Net {
 public:
  // configs: the resolved layer dicts in topological order; devices: one entry per
  // logical device ("cpu", "0", "cuda:1"); seed: the dropout and weight-init stream.
  Net(const std::vector<LayerConfig>& configs, const std::vector<std::string>& devices, uint64_t seed);
  ~Net();
  Net(const Net&) = delete;
  Net& operator=(const Net&) = delete;

  std::vector<std::string> layerNames() const;
  std::vector<std::string> weightLayerNames() const;

  // data[i] feeds the data layers with dataIdx i: (rows, numCases) matrices (any device).
  void fprop(const std::vector<Tensor>& data, bool train);
  // Gradients of the objective for every weight (after an fprop).
  void bprop();
  // The same in three steps, so that the caller can use each layer's weight gradients while
  // the backward pass goes on (e.g. start summing them across processes): startBprop returns
  // at once; waitGradients(layer) returns when that layer's weight gradients are final;
  // finishBprop waits for the pass and reports its errors.
  void startBprop();
  void waitGradients(const std::string& layer);
  void finishBprop();
  // inc = mom * inc + (eps / numCases) * grad - wc * eps * w;  w += inc (eps == 0: skipped).
  void update(int numCases);
  // fprop(train) + bprop + update(numCases of the data) in one pass of the workers.
  void trainStep(const std::vector<Tensor>& data);

  // The device-resident data path (see DataStager): stageBatch copies a whole data batch to
  // the devices of the data layers (asynchronously on CUDA, into the back buffer, so it may
  // overlap the passes on the current batch); beginBatch makes it current and returns its
  // number of cases; the slice passes take cases [start, end) of the current batch as their
  // minibatch, sliced on the device. Each channel (0: training, 1: testing) has its own
  // double buffer, so a test between two training batches leaves the staged one alone;
  // beginBatch(channel) makes that channel's batch the current one.
  static constexpr int kChannels = 2;
  void stageBatch(const std::vector<Tensor>& data, int channel = 0);
  int beginBatch(int channel = 0);
  void fpropSlice(int start, int end, bool train);
  void trainSlice(int start, int end);

  // (cost layer name, its cost summed over the cases of the last fprop), in layer order.
  std::vector<std::pair<std::string, CostResult>> costs() const;
  // A layer's activations (a view of the net's buffer, valid until the next pass),
  // shaped (outShape..., numCases).
  Tensor acts(const std::string& name) const;

  size_t numWeights(const std::string& layer) const;
  // key: "weights", "weightsInc" (index selects the matrix), "biases", "biasesInc".
  // param and grad return views of the stored tensors (on the layer's device).
  Tensor param(const std::string& layer, const std::string& key, size_t index) const;
  void setParam(const std::string& layer, const std::string& key, size_t index, const Tensor& value);
  // The last bprop's gradient (zeros for frozen weights and weights no cost depends on).
  Tensor grad(const std::string& layer, const std::string& key, size_t index) const;
  // The gradient buffers the last bprop wrote (views; weights then biases, frozen left out).
  std::vector<Tensor> gradBuffers(const std::string& layer) const;
  // Replaces it (e.g. by the sum over processes) before update(); frozen weights ignore it.
  void setGrad(const std::string& layer, const std::string& key, size_t index, const Tensor& value);
  void setLearningParams(const std::string& layer, const std::vector<float>& epsW, float epsB,
                         const std::vector<float>& momW, float momB, const std::vector<float>& wc);
  void setLayerParam(const std::string& layer, const std::string& key, double value);

  // Data parallelism across processes: this net's minibatches are shard `index` of `count`
  // equal shards of each step's minibatch, so that random numbers (dropout) are drawn for the
  // whole minibatch and every shard uses those of its own cases. The caller sums gradients
  // across the processes and updates with the whole minibatch's case count.
  void setShard(int index, int count);

  uint64_t rngCounter() const { return rngCounter_; }
  void setRngCounter(uint64_t counter) { rngCounter_ = counter; }
  // Where NaN or Inf first appeared in the last pass, checked on the devices (one flag per
  // buffer, one copy back per device): "" if nowhere, else "the activations of layer 'x'"
  // (forward pass, layer order), "the gradients computed by layer 'x'" (backward pass,
  // reverse layer order) or "the weights of layer 'x'" (after the update).
  std::string firstNonFinite() const;

 private:
  struct Worker {
    int logical = 0;
    Device device;
    void* stream = nullptr;  // CUDA devices: the stream of this worker's kernels
    std::vector<Layer*> layers;  // in layer order
    std::thread thread;
  };
  enum Step : unsigned { kFprop = 1, kBprop = 2, kUpdate = 4 };
  struct Pass {
    unsigned steps = 0;
    bool train = false;
    int numCases = 0;  // for the update
  };

  // construction
  void createLayers(const std::vector<LayerConfig>& configs);
  void createWeights();
  void createActsCopies();
  void planGradients();
  void startWorkers();

  Layer& layer(const std::string& name) const;
  WeightLayer& weightLayer(const std::string& name) const;
  WeightSlot& slot(const std::string& layer, const std::string& key, size_t index) const;
  WeightSlot& slot(Layer& replica, const std::string& key, size_t index) const;

  // per call
  int prepareData(const std::vector<Tensor>& data, bool train);
  int prepareSlice(int start, int end, bool train);
  void prepareCases(int numCases, bool train);
  void resize(int numCases);
  void runPass(const Pass& pass);
  void forward(int numCases, bool train);  // an fprop pass over the prepared data
  void step(int numCases);                 // fprop + bprop + update over the prepared data
  void startPass(const Pass& pass);
  void finishPass();

  // on the workers
  void workerLoop(Worker& w);
  void fpropOn(Worker& w, bool train, uint64_t generation);
  void bpropOn(Worker& w, uint64_t generation);
  void updateOn(Worker& w, int numCases);
  void gatherRemoteGrads(Layer& layer, uint64_t generation);
  void reduceReplicaGrads(WeightLayer& layer, uint64_t generation);
  void markDone(std::vector<uint64_t>& done, int layerIndex, uint64_t generation);
  void waitDone(const std::vector<uint64_t>& done, int layerIndex, uint64_t generation);
  void synchronize(Worker& w);

  std::vector<Device> devices_;  // physical device of each logical device
  uint64_t seed_;
  uint64_t rngCounter_ = 0;
  int shardIndex_ = 0, shardCount_ = 1;
  std::vector<std::unique_ptr<Layer>> layers_;
  // per layer: consumers on other devices that send it a gradient (by layer index)
  std::vector<std::vector<int>> remoteGradSenders_;
  // per layer: consumers' gathered inputs that hold pieces of its gradient (layer, input)
  std::vector<std::vector<std::pair<int, int>>> pieceSenders_;
  // per layer: its bprop writes a gradient that another worker reads (synchronize after it)
  std::vector<bool> sendsToOtherDevice_;
  // per layer: replicas of consumers on other devices gather from its acts
  std::vector<bool> readElsewhere_;
  int numCases_ = 0;      // batch size the buffers are allocated for
  bool haveFprop_ = false;
  bool haveBprop_ = false;  // the gradient buffers hold the last pass's bprop
  std::vector<DataStager::Need> dataNeeds_;  // every data layer's array
  DataStager stagers_[kChannels];
  int currentChannel_ = 0;

  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex mutex_;
  std::condition_variable workCv_, doneCv_, layerCv_;
  Pass pass_;
  uint64_t generation_ = 0;
  size_t running_ = 0;
  bool passOpen_ = false;
  bool stopping_ = false, aborted_ = false;
  std::exception_ptr error_;
  std::vector<uint64_t> fpropDone_, bpropDone_;  // per layer: generation of its last completion
};

}  // namespace ccn::net
