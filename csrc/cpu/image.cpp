// CPU image routines on (channels, imgSizeY, imgSizeX, numImages) tensors, image index
// fastest: pixel (c, y, x) of every image is one contiguous run of numImages floats.
// Work is threaded over output rows (c, y); each output pixel's run is written by one thread.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/scale.h"
#include "ops/image.h"

namespace ccn::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per chunk below which threading does not pay

// Rows per chunk so that a chunk holds about kGrain elements.
int64_t grain_for(int64_t elementsPerRow) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(elementsPerRow, 1));
}

// dst[n] = scaleTargets * dst[n] + scaleOutput * src[n] for one pixel's run of images.
inline void store_run(float* dst, const float* src, int64_t count, float scaleTargets, float scaleOutput) {
  for (int64_t n = 0; n < count; ++n) store_scaled(dst[n], src[n], scaleTargets, scaleOutput);
}

// Calls fn(c, y) for every output row of `channels` planes of `rows` rows, threaded.
template <typename RowFn>
void for_each_row(int64_t channels, int64_t rows, int64_t elementsPerRow, const RowFn& fn) {
  parallel_for(channels * rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) fn(r / rows, r % rows);
  }, grain_for(elementsPerRow));
}

}  // namespace

void reflectHorizontal(const Tensor& images, Tensor& targets, const ImageGeometry& g, float scaleTargets,
                       float scaleOutput) {
  const int64_t numImages = images.cols(), width = g.imgSizeX;
  const float* src = images.data();
  float* dst = targets.data();
  for_each_row(g.channels, g.imgSizeY, width * numImages, [&](int64_t c, int64_t y) {
    const int64_t row = (c * g.imgSizeY + y) * width;
    for (int64_t x = 0; x < width; ++x)
      store_run(dst + (row + x) * numImages, src + (row + width - 1 - x) * numImages, numImages, scaleTargets,
                scaleOutput);
  });
}

void crop(const Tensor& images, Tensor& targets, const ImageGeometry& g, int startY, int startX, int cropY,
          int cropX, float scaleTargets, float scaleOutput) {
  const int64_t numImages = images.cols();
  const float* src = images.data();
  float* dst = targets.data();
  for_each_row(g.channels, cropY, int64_t(cropX) * numImages, [&](int64_t c, int64_t y) {
    const int64_t srcRow = (c * g.imgSizeY + startY + y) * g.imgSizeX + startX;
    const int64_t dstRow = (c * cropY + y) * cropX;
    for (int64_t x = 0; x < cropX; ++x)
      store_run(dst + (dstRow + x) * numImages, src + (srcRow + x) * numImages, numImages, scaleTargets,
                scaleOutput);
  });
}

namespace {

// Where output index `out` samples the input along one axis (half-pixel centres, clamped).
struct BilinearTap {
  int64_t lo, hi;  // neighbouring input indices
  float weightHi;  // weight of `hi`; `lo` gets 1 - weightHi
};

BilinearTap bilinear_tap(int64_t out, int64_t inSize, int64_t outSize) {
  float pos = (static_cast<float>(out) + 0.5f) * static_cast<float>(inSize) / static_cast<float>(outSize) - 0.5f;
  pos = std::min(std::max(pos, 0.f), static_cast<float>(inSize - 1));
  const int64_t lo = static_cast<int64_t>(pos);
  return {lo, std::min(lo + 1, inSize - 1), pos - static_cast<float>(lo)};
}

}  // namespace

void resizeBilinear(const Tensor& images, Tensor& targets, const ImageGeometry& g, int tgtSizeY, int tgtSizeX,
                    float scaleTargets, float scaleOutput) {
  const int64_t numImages = images.cols(), width = g.imgSizeX;
  const float* src = images.data();
  float* dst = targets.data();
  std::vector<BilinearTap> tapsX(tgtSizeX);
  for (int64_t x = 0; x < tgtSizeX; ++x) tapsX[x] = bilinear_tap(x, width, tgtSizeX);
  for_each_row(g.channels, tgtSizeY, int64_t(tgtSizeX) * numImages, [&](int64_t c, int64_t y) {
    const BilinearTap ty = bilinear_tap(y, g.imgSizeY, tgtSizeY);
    const float* rowLo = src + (c * g.imgSizeY + ty.lo) * width * numImages;
    const float* rowHi = src + (c * g.imgSizeY + ty.hi) * width * numImages;
    float* out = dst + (c * tgtSizeY + y) * int64_t(tgtSizeX) * numImages;
    for (int64_t x = 0; x < tgtSizeX; ++x) {
      const BilinearTap tx = tapsX[x];
      const float* p00 = rowLo + tx.lo * numImages;
      const float* p01 = rowLo + tx.hi * numImages;
      const float* p10 = rowHi + tx.lo * numImages;
      const float* p11 = rowHi + tx.hi * numImages;
      for (int64_t n = 0; n < numImages; ++n) {
        const float top = p00[n] + tx.weightHi * (p01[n] - p00[n]);
        const float bottom = p10[n] + tx.weightHi * (p11[n] - p10[n]);
        store_scaled(out[x * numImages + n], top + ty.weightHi * (bottom - top), scaleTargets, scaleOutput);
      }
    }
  });
}

void rgbToYuv(const Tensor& images, Tensor& targets, const ImageGeometry& g, float scaleTargets,
              float scaleOutput) {
  const int64_t numImages = images.cols();
  const int64_t plane = int64_t(g.imgSizeY) * g.imgSizeX * numImages;  // one channel of every image
  const float* r = images.data();
  const float* gr = r + plane;
  const float* b = gr + plane;
  float* y = targets.data();
  float* u = y + plane;
  float* v = u + plane;
  parallel_for(plane, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      store_scaled(y[i], 0.299f * r[i] + 0.587f * gr[i] + 0.114f * b[i], scaleTargets, scaleOutput);
      store_scaled(u[i], -0.14713f * r[i] - 0.28886f * gr[i] + 0.436f * b[i], scaleTargets, scaleOutput);
      store_scaled(v[i], 0.615f * r[i] - 0.51499f * gr[i] - 0.10001f * b[i], scaleTargets, scaleOutput);
    }
  }, kGrain);
}

void gaussianBlur(const Tensor& images, const Tensor& filter, Tensor& targets, const ImageGeometry& g,
                  bool horizontal, float scaleTargets, float scaleOutput) {
  const int64_t numImages = images.cols(), width = g.imgSizeX, height = g.imgSizeY;
  const int64_t taps = filter.numel(), radius = taps / 2;
  const float* src = images.data();
  const float* f = filter.data();
  float* dst = targets.data();
  for_each_row(g.channels, height, width * numImages * taps, [&](int64_t c, int64_t y) {
    std::vector<float> sum(numImages);
    for (int64_t x = 0; x < width; ++x) {
      std::fill(sum.begin(), sum.end(), 0.f);
      // Tap t weighs the pixel at offset t - radius (a correlation: the same as a convolution
      // for the symmetric filters a blur uses). Taps outside the image read zeros, i.e. are skipped.
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t sx = horizontal ? x + t - radius : x, sy = horizontal ? y : y + t - radius;
        if (sx < 0 || sx >= width || sy < 0 || sy >= height) continue;
        const float* pixel = src + ((c * height + sy) * width + sx) * numImages;
        for (int64_t n = 0; n < numImages; ++n) sum[n] += f[t] * pixel[n];
      }
      store_run(dst + ((c * height + y) * width + x) * numImages, sum.data(), numImages, scaleTargets, scaleOutput);
    }
  });
}

void bedOfNails(const Tensor& images, Tensor& targets, const ImageGeometry& g, int start, int stride,
                int outputsY, int outputsX, float scaleTargets, float scaleOutput) {
  const int64_t numImages = images.cols();
  const float* src = images.data();
  float* dst = targets.data();
  for_each_row(g.channels, outputsY, int64_t(outputsX) * numImages, [&](int64_t c, int64_t oy) {
    const int64_t srcRow = (c * g.imgSizeY + start + oy * stride) * g.imgSizeX;
    const int64_t dstRow = (c * outputsY + oy) * outputsX;
    for (int64_t ox = 0; ox < outputsX; ++ox)
      store_run(dst + (dstRow + ox) * numImages, src + (srcRow + start + ox * stride) * numImages, numImages,
                scaleTargets, scaleOutput);
  });
}

namespace {

// The output index that samples input index `i` along one axis, or -1 if none does.
int64_t nail_index(int64_t i, int start, int stride, int outputs) {
  if (i < start || (i - start) % stride != 0) return -1;
  const int64_t o = (i - start) / stride;
  return o < outputs ? o : -1;
}

}  // namespace

void bedOfNailsUndo(const Tensor& outGrads, Tensor& targets, const ImageGeometry& g, int start, int stride,
                    int outputsY, int outputsX, float scaleTargets, float scaleOutput) {
  const int64_t numImages = targets.cols(), width = g.imgSizeX;
  const float* grads = outGrads.data();
  float* dst = targets.data();
  for_each_row(g.channels, g.imgSizeY, width * numImages, [&](int64_t c, int64_t y) {
    const int64_t oy = nail_index(y, start, stride, outputsY);
    for (int64_t x = 0; x < width; ++x) {
      float* out = dst + ((c * g.imgSizeY + y) * width + x) * numImages;
      const int64_t ox = oy < 0 ? -1 : nail_index(x, start, stride, outputsX);
      if (ox < 0) {
        for (int64_t n = 0; n < numImages; ++n) store_scaled(out[n], 0.f, scaleTargets, scaleOutput);
      } else {
        store_run(out, grads + ((c * outputsY + oy) * outputsX + ox) * numImages, numImages, scaleTargets,
                  scaleOutput);
      }
    }
  });
}

}  // namespace ccn::cpu
