// The convolution family shared by conv (weights shared across positions) and local
// (untied weights): geometry from the layer dict, filterActs / imgActs / weightActs.
//   input acts (channels * imgSizeY * imgSizeX, numCases); acts (filters * modulesY * modulesX, numCases)
//   weights (filterChannels * filterSize^2, filters) for conv,
//           (modulesY * modulesX * filterChannels * filterSize^2, filters) for local
//   biases (filters,) when shared (conv's default), else (filters * modulesY * modulesX,)
#pragma once
#include "net/layer.h"
#include "ops/conv.h"

namespace ccn::net {

class ConvLayer : public WeightLayer {
 public:
  ConvLayer(const LayerConfig& cfg, bool local);

  Shape weightShape(size_t) const override { return {geometry_.filterRows(), geometry_.numFilters}; }
  Shape biasShape() const override;
  void checkInputs() const override;
  void fprop(bool train) override;
  void bprop() override;

 private:
  ConvGeometry geometry_;
  bool sharedBiases_;
};

}  // namespace ccn::net
