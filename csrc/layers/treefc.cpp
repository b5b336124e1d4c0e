// treefc (the 2012 release's tree of class weights): a fully connected layer whose classes
// are the leaves of a class tree. Every tree node n owns a weight column W[:, n]
// (W (inputs, numNodes)); class k's weights are the sum of the columns on its path from the
// root:  E = W P,  P (numNodes, numClasses), P[n, k] = 1 iff n is k or an ancestor of k;
//   acts (numClasses, numCases) = E^T x + b.
// Nodes 0..numClasses-1 are the leaves (the class labels), the inner nodes follow;
// `treeParents` (resolved by the parser from the provider's tree) gives each node's parent,
// -1 at the root.
// Gradients: x <- E g;  W <- (x g^T) P^T (a node's gradient is the sum of its leaves');
// b <- row sums of g.
// Update (the 2012 code's rule): node n learns with eps / size(n) and decays with
// wc / size(n), size(n) = the number of leaves under n; the inner nodes start at 0.
// E costs one (inputs x numNodes x numClasses) product per fprop and P^T one per bprop.
#include <cstring>
#include <string>

#include "net/layer.h"
#include "ops/dense.h"

namespace ccn::net {
namespace {

class TreeFcLayer : public WeightLayer {
 public:
  explicit TreeFcLayer(const LayerConfig& cfg) : WeightLayer(cfg, 1) {
    parents_ = cfg.getIntList("treeParents");
    const int nodes = static_cast<int>(parents_.size());
    if (nodes < outputs_) cfg.fail("treeParents", "the tree has fewer nodes than the layer's outputs (classes)");
    leafCount_.assign(nodes, 0);
    for (int n = 0; n < nodes; ++n)
      if (parents_[n] < -1 || parents_[n] >= nodes || parents_[n] == n)
        cfg.fail("treeParents", "node " + std::to_string(n) + " has parent " + std::to_string(parents_[n]));
    for (int k = 0; k < outputs_; ++k)  // every walk to the root ends within `nodes` steps, else a cycle
      forEachAncestor(k, [&](int n) { ++leafCount_[n]; }, cfg);
    for (int n = outputs_; n < nodes; ++n)
      if (leafCount_[n] == 0) cfg.fail("treeParents", "inner node " + std::to_string(n) + " has no class under it");
  }

  Shape weightShape(size_t) const override { return {inputs[0].layer->outputs(), numNodes()}; }
  Shape biasShape() const override { return {outputs_}; }
  void checkInputs() const override { requireInputCount(1); }

  void adjustInitialWeights(size_t, Tensor& w) const override {
    const int64_t rows = w.shape()[0], nodes = numNodes();
    for (int64_t r = 0; r < rows; ++r)
      std::memset(w.data() + r * nodes + outputs_, 0, sizeof(float) * (nodes - outputs_));
  }

  void resize(int) override {
    if (paths_.defined()) return;  // batch-independent buffers, made once on the layer's device
    const Device dev = acts().device();
    const int64_t nodes = numNodes(), rows = inputs[0].layer->outputs();
    Tensor paths = Tensor::zeros({nodes, outputs_});
    for (int k = 0; k < outputs_; ++k) forEachAncestor(k, [&](int n) { paths.data()[n * outputs_ + k] = 1.f; });
    Tensor rate = Tensor::empty({rows, nodes}), rateSquared = Tensor::empty({rows, nodes});
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t n = 0; n < nodes; ++n) {
        rate.data()[r * nodes + n] = 1.f / static_cast<float>(leafCount_[n]);
        rateSquared.data()[r * nodes + n] = 1.f / (static_cast<float>(leafCount_[n]) * leafCount_[n]);
      }
    paths_ = paths.to(dev);
    rate_ = rate.to(dev);
    rateSquared_ = rateSquared.to(dev);
    classWeights_ = Tensor::empty({rows, outputs_}, dev);
    classGrad_ = Tensor::empty({rows, outputs_}, dev);
    step_ = Tensor::empty({rows, nodes}, dev);
  }

  void fprop(bool) override {
    ops::gemm(weights[0].store->weights, paths_, classWeights_, false, false, 0.f, 1.f);
    ops::gemm(classWeights_, inputs[0].acts(), acts(), true, false, 0.f, 1.f);
    ops::addBias(bias.store->weights, acts(), 1.f, 1.f);
  }

  void bprop() override {
    const LayerInput& in = inputs[0];
    if (in.sendsGrad) ops::gemm(classWeights_, actsGrad(), in.grad(), false, false, in.gradScale, 1.f);
    if (weights[0].computesGrad()) {
      ops::gemm(in.acts(), actsGrad(), classGrad_, false, true, 0.f, 1.f);
      ops::gemm(classGrad_, paths_, weights[0].store->grad, false, true, weights[0].gradScale, 1.f);
    }
    if (bias.computesGrad()) ops::biasGrad(actsGrad(), bias.store->grad, bias.gradScale, 1.f);
  }

  // inc = mom * inc + eps / size(n) * (grad / numCases - wc / size(n) * w), column n.
  void updateWeights(size_t, int numCases) override {
    WeightStore& s = *weights[0].store;
    if (s.eps == 0.f) return;
    ops::mult(rate_, s.grad, step_, 0.f, 1.f);
    if (s.wc != 0.f) ops::mult(rateSquared_, s.weights, step_, 1.f, -s.wc * static_cast<float>(numCases));
    s.step(step_, numCases, 0.f);  // the decay is in step_
  }

 private:
  int64_t numNodes() const { return static_cast<int64_t>(parents_.size()); }

  template <typename F>
  void forEachAncestor(int leaf, F visit, const LayerConfig& cfg) const {
    int n = leaf;
    for (size_t steps = 0; n != -1; ++steps) {
      if (steps == parents_.size())
        cfg.fail("treeParents", "class " + std::to_string(leaf) + " has no path to the root (a cycle)");
      visit(n);
      n = parents_[n];
    }
  }
  template <typename F>
  void forEachAncestor(int leaf, F visit) const {  // after the constructor checked the paths
    for (int n = leaf; n != -1; n = parents_[n]) visit(n);
  }

  std::vector<int> parents_;
  std::vector<int> leafCount_;  // classes under each node (size(n))
  Tensor paths_, rate_, rateSquared_;  // P; 1 / size(n) and its square per weight
  Tensor classWeights_, classGrad_, step_;
};

[[maybe_unused]] const bool registered = registerLayerType("treefc", makeLayer<TreeFcLayer>);

}  // namespace
}  // namespace ccn::net
