// The convolution family shared by conv (weights shared across positions) and local
// (untied weights): geometry from the layer dict, filterActs / imgActs / weightActs.
// A layer may have several inputs (as in cuda-convnet): input i has its own geometry
// (channels, image size, filterSize, padding, stride, groups) and weight matrix, all give
// the same filters and modules, and acts = sum_i conv_i(input_i) + one bias.
//   input i acts (channels_i * imgSizeY_i * imgSizeX_i, numCases); acts (filters * modulesY * modulesX, numCases)
//   weights[i] (filterChannels_i * filterSize_i^2, filters) for conv,
//              (modulesY * modulesX * filterChannels_i * filterSize_i^2, filters) for local
//   biases (filters,) when shared (conv's default), else (filters * modulesY * modulesX,)
// The per-input keys are numbers for one input, lists (one entry per input) for several.
// Sparse filter-channel connectivity (cuda-convnet's randSparse): filterConns[i] lists, for
// input i, groups * filterChannels channel indices; group g sees the channels
// filterConns[i][g*filterChannels .. (g+1)*filterChannels). The layer gathers those channel
// planes into a (groups * filterChannels)-channel image and runs a grouped convolution on
// it; the gradient is scattered back (a channel seen by several groups gets their sum).
#pragma once
#include <vector>

#include "net/layer.h"
#include "ops/conv.h"

namespace ccn::net {

class ConvLayer : public WeightLayer {
 public:
  ConvLayer(const LayerConfig& cfg, bool local);

  Shape weightShape(size_t i) const override { return {geometries_[i].filterRows(), geometries_[i].numFilters}; }
  Shape biasShape() const override;
  void checkInputs() const override;
  void fprop(bool train) override;
  void bprop() override;
  void resize(int numCases) override;

 private:
  const Tensor& convInput(size_t i) const;

  std::vector<ConvGeometry> geometries_;  // one per input, as the convolution sees it
  std::vector<std::vector<int>> filterConns_;  // per input; empty: dense connectivity
  std::vector<int> inputChannels_;             // channels of each input
  std::vector<Tensor> gathered_, gatheredGrad_;  // per sparse input: the gathered image and its gradient
  bool sharedBiases_;
};

}  // namespace ccn::net
