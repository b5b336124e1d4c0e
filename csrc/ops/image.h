// Image routines for data augmentation and preprocessing, on images
// (channels, imgSizeY, imgSizeX, numImages), image index fastest.
// targets = scaleTargets * targets + scaleOutput * result.
#pragma once
#include "core/tensor.h"

namespace ccn {

struct ImageGeometry {
  int channels = 0;
  int imgSizeY = 0, imgSizeX = 0;
};

namespace ops {
#include "ops/image.inc"
}
namespace cpu {
#include "ops/image.inc"
}
#ifdef CCN_WITH_CUDA
namespace cuda {
#include "ops/image.inc"
}
#endif

}  // namespace ccn
