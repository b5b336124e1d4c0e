// Normalization layers, cuda-convnet style. All work on images
// (channels, imgSizeY, imgSizeX, numImages) and produce the same shape.
//
// Windows: a spatial window around pixel p covers [p - size/2, p - size/2 + size) in
// rows and columns, clipped to the image; a cross-map window around channel c covers
// [c - size/2, c - size/2 + size) clipped to [0, channels), or, when `blocked`, the
// block [c/size*size, c/size*size + size) clipped likewise.
//
//   rnorm   (responseNorm):          d = minDiv + addScale * sum_{spatial window} x^2
//   cmrnorm (responseNormCrossMap):  d = minDiv + addScale * sum_{cross-map window} x^2
//   cnorm   (contrastNorm):          m = x - mean_{spatial window} x   (meanDiffs)
//                                    d = minDiv + addScale * sum_{spatial window} m^2
//   output = x * d^(-powScale)
// (The layer files give `scale`; the layer divides it by size^2 (rnorm, cnorm) or by
// size (cmrnorm) to get addScale, as cuda-convnet does.)
// The Undo routines compute the exact gradient with respect to x, given the output
// gradient, for all terms (including the mean of cnorm).
// Forward routines also write `denoms` (d) and, for cnorm, `meanDiffs` (m), without scaling;
// targets = scaleTargets * targets + scaleOutput * result for the output / gradient.
#pragma once
#include "core/tensor.h"

namespace ccn {

struct NormGeometry {
  int channels = 0;
  int imgSizeY = 0, imgSizeX = 0;
  int size = 0;
  float addScale = 0.f;
  float powScale = 0.f;
  float minDiv = 1.f;
  bool blocked = false;  // cross-map only
};

namespace ops {
#include "ops/norm.inc"
// Throws ValueError unless g is a geometry the norm routines accept (every routine checks it,
// the layers check it when built): positive sizes, size <= 2 * extent + 1, a usable minDiv /
// addScale / powScale, and, in 64-bit arithmetic, channels * imgSizeY * imgSizeX and
// max(channels, imgSizeY, imgSizeX) + size at most 2^31 - 1, so the backends compute
// window bounds and window pixel counts in int.
void checkGeometry(const NormGeometry& g);
}
namespace cpu {
#include "ops/norm.inc"
}
#ifdef CCN_WITH_CUDA
namespace cuda {
#include "ops/norm.inc"
}
#endif

}  // namespace ccn
