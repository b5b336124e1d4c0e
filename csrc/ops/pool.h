// Pooling, cuda-convnet style.
// Local pooling: images (channels, imgSizeY, imgSizeX, numImages) ->
//   targets (channels, outputsY, outputsX, numImages). Output (oy, ox) pools the square
//   window of rows start + oy*stride + [0, sizeX) (columns likewise), clipped to the image
//   (start may be negative). Max: the largest value; MaxAbs: the value of largest |value|
//   (signed); Avg: the mean over the window's pixels that fall inside the image.
// Cross-map max pooling: images (channels, pixels, numImages) -> targets (outputs, pixels,
//   numImages); output o takes the max over channels start + o*stride + [0, size), clipped.
// Every routine computes  targets = scaleTargets * targets + scaleOutput * result.
#pragma once
#include "core/tensor.h"

namespace ccn {

enum class PoolKind { Max, Avg, MaxAbs };

struct PoolGeometry {
  int channels = 0;
  int imgSizeY = 0, imgSizeX = 0;
  int sizeX = 0;    // square window
  int start = 0;    // first window's offset (<= 0 pads)
  int stride = 1;
  int outputsY = 0, outputsX = 0;
  // cuda-convnet's default output count: ceil((imgSize - start - sizeX) / stride) + 1
  // (ValueError when it exceeds 2^31 - 1).
  static int outputSize(int imgSize, int sizeX, int start, int stride);
};

struct CrossMapPoolGeometry {
  int channels = 0;
  int pixels = 0;   // imgSizeY * imgSizeX
  int size = 0;     // channels per window
  int start = 0;
  int stride = 1;
  int outputs = 0;  // output channels
};

namespace ops {
#include "ops/pool.inc"
// Throw ValueError unless g is a geometry the pool routines accept (every routine checks it,
// the layers check it when built). Besides sanity (positive sizes, every window covering
// part of the input), it bounds by 2^31 - 1, in 64-bit arithmetic:
//   the row counts: channels * imgSizeY * imgSizeX and channels * outputsY * outputsX
//                   (cross-map: channels * pixels and outputs * pixels);
//   per axis, extent + |start| + size + stride, which bounds every window coordinate;
// so the backends compute pixel counts and window bounds in int.
void checkGeometry(const PoolGeometry& g);
void checkGeometry(const CrossMapPoolGeometry& g);
}
namespace cpu {
#include "ops/pool.inc"
}
#ifdef CCN_WITH_CUDA
namespace cuda {
#include "ops/pool.inc"
}
#endif

}  // namespace ccn
