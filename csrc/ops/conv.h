// Convolution (weights shared across positions) and locally-connected layers (untied
// weights), with cuda-convnet's layouts:
//   images   (channels, imgSizeY, imgSizeX, numImages)                 image index fastest
//   filters  conv:  (filterChannels * filterSize^2, numFilters)
//            local: (modulesY * modulesX * filterChannels * filterSize^2, numFilters)
//            rows ordered (module,) channel, filterRow, filterCol;  filterChannels = channels / groups
//   hidActs  (numFilters, modulesY, modulesX, numImages)
// Groups: filters [g * numFilters/groups, (g+1) * numFilters/groups) see image channels
// [g * filterChannels, (g+1) * filterChannels).
// Module (my, mx) covers image rows my*stride - padding + [0, filterSize) and the same for
// columns; pixels outside the image are zero.
// Every routine computes  targets = scaleTargets * targets + scaleOutput * result.
#pragma once
#include "core/tensor.h"

namespace ccn {

struct ConvGeometry {
  int channels = 0;      // image channels
  int imgSizeY = 0, imgSizeX = 0;
  int filterSize = 0;    // square filters
  int numFilters = 0;
  int padding = 0;       // zero padding on every side (cuda-convnet's paddingStart = -padding)
  int stride = 1;
  int modulesY = 0, modulesX = 0;
  int groups = 1;
  bool local = false;    // untied weights: a separate filter bank per module

  int filterChannels() const { return channels / groups; }
  // 64-bit products: filterSize = 65536 squared must not wrap to 0 before the checks see it
  // (check_geometry bounds every product by 2^31 - 1, so the backends may narrow them to int).
  int64_t filterPixels() const { return int64_t(filterSize) * filterSize; }
  int64_t modules() const { return int64_t(modulesY) * modulesX; }
  int64_t imageRows() const { return int64_t(channels) * imgSizeY * imgSizeX; }
  int64_t filterRows() const { return (local ? modules() : 1) * filterChannels() * filterPixels(); }
  int64_t hidRows() const { return int64_t(numFilters) * modules(); }
  // cuda-convnet's output size: 1 + ceil((2 * padding + imgSize - filterSize) / stride).
  static int outputSize(int imgSize, int filterSize, int padding, int stride);
};

namespace ops {
#include "ops/conv.inc"
// Throws ValueError unless g is a geometry the conv routines accept (every routine checks it).
void checkGeometry(const ConvGeometry& g);
}
namespace cpu {
#include "ops/conv.inc"
}
#ifdef CCN_WITH_CUDA
namespace cuda {
#include "ops/conv.inc"
}
#endif

}  // namespace ccn
