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

 private:
  std::vector<ConvGeometry> geometries_;  // one per input
  bool sharedBiases_;
};

}  // namespace ccn::net
