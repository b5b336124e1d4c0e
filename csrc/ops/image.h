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
// Throws ValueError unless every size is positive and channels * imgSizeY * imgSizeX is at
// most 2^31 - 1 (computed in 64 bits). Every routine checks it, the layers when built;
// routines with an output geometry of their own (crop, resize, bed of nails) bound it too,
// and gaussianBlur bounds max(imgSizeY, imgSizeX) + taps, so the backends may use int
// for pixel coordinates and tap indices.
void checkGeometry(const ImageGeometry& g);
// checkGeometry, and the bed of nails' samples start + k * stride (k < outputs) inside the image.
void checkBedOfNails(const ImageGeometry& g, int start, int stride, int outputsY, int outputsX);
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
