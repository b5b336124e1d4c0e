// CPU pooling (see ops/pool.h). Activations are (channels, rows, cols, numImages) with the
// image index fastest, so every routine works on whole rows of numImages values: the
// innermost loops run over images and vectorize. Work is split over (channel, row) pairs
// of the tensor being written, so no two threads write the same element and each element
// is a fixed-order sum: results do not depend on the thread count.
// The backward routines gather: each input pixel visits the outputs whose windows hold it.
// Window bounds and pixel counts are ints: ops::checkGeometry bounds extent + |start| + size
// + stride and the row counts by 2^31 - 1, so none of them overflows; element offsets
// (which also count images) are int64_t.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/scale.h"
#include "ops/pool.h"

namespace ccn::cpu {
namespace {

// Rows per parallel_for chunk so that a chunk does at least ~16k element operations.
int64_t rows_grain(int64_t workPerRow) {
  return std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, workPerRow));
}

// floor(a / b) for b > 0 and a of either sign.
inline int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Input positions [lo, hi) of window k: start + k*stride + [0, size), clipped to [0, extent).
struct Span {
  int lo, hi;
};
inline Span window(int k, int start, int stride, int size, int extent) {
  int first = start + k * stride;
  return {std::max(first, 0), std::min(first + size, extent)};
}

// Windows [lo, hi] (inclusive) of the `outputs` windows that contain input position p.
inline Span windows_containing(int p, int start, int stride, int size, int outputs) {
  // window k holds p  <=>  start + k*stride <= p < start + k*stride + size
  int lo = floor_div(p - start - size, stride) + 1;
  int hi = floor_div(p - start, stride);
  return {std::max(lo, 0), std::min(hi, outputs - 1)};
}

// Reduces the window of one output over all images: acc[n] = reduce over window pixels.
template <PoolKind Kind>
void pool_window(const float* images, int64_t rowStride, int64_t numImages, Span rows, Span cols, float* acc) {
  const float* first = images + (rows.lo * rowStride) + cols.lo * numImages;
  std::copy(first, first + numImages, acc);
  for (int y = rows.lo; y < rows.hi; ++y) {
    for (int x = (y == rows.lo ? cols.lo + 1 : cols.lo); x < cols.hi; ++x) {
      const float* v = images + y * rowStride + x * numImages;
      for (int64_t n = 0; n < numImages; ++n) {
        if constexpr (Kind == PoolKind::Max) {
          acc[n] = v[n] > acc[n] ? v[n] : acc[n];
        } else if constexpr (Kind == PoolKind::MaxAbs) {
          acc[n] = std::fabs(v[n]) > std::fabs(acc[n]) ? v[n] : acc[n];
        } else {
          acc[n] += v[n];
        }
      }
    }
  }
  if constexpr (Kind == PoolKind::Avg) {
    float inverseCount = 1.f / static_cast<float>((rows.hi - rows.lo) * (cols.hi - cols.lo));
    for (int64_t n = 0; n < numImages; ++n) acc[n] *= inverseCount;
  }
}

template <PoolKind Kind>
void local_pool(const Tensor& images, Tensor& targets, const PoolGeometry& g, float scaleTargets,
                float scaleOutput) {
  const int64_t numImages = images.cols();
  const int64_t rowStride = int64_t{g.imgSizeX} * numImages;  // between image rows
  const float* in = images.data();
  float* out = targets.data();
  const int64_t outRows = int64_t{g.channels} * g.outputsY;
  const int64_t work = int64_t{g.outputsX} * numImages * g.sizeX * g.sizeX;
  parallel_for(outRows, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(numImages);
    for (int64_t r = begin; r < end; ++r) {
      const int c = static_cast<int>(r / g.outputsY), oy = static_cast<int>(r % g.outputsY);
      const float* channel = in + int64_t{c} * g.imgSizeY * rowStride;
      const Span rows = window(oy, g.start, g.stride, g.sizeX, g.imgSizeY);
      for (int ox = 0; ox < g.outputsX; ++ox) {
        pool_window<Kind>(channel, rowStride, numImages, rows, window(ox, g.start, g.stride, g.sizeX, g.imgSizeX),
                          acc.data());
        float* t = out + (r * g.outputsX + ox) * numImages;
        store_scaled_row(t, numImages, scaleTargets, scaleOutput, [&](int64_t n) { return acc[n]; });
      }
    }
  }, rows_grain(work));
}

}  // namespace

void localPool(const Tensor& images, Tensor& targets, const PoolGeometry& g, PoolKind kind, float scaleTargets,
               float scaleOutput) {
  switch (kind) {
    case PoolKind::Max: return local_pool<PoolKind::Max>(images, targets, g, scaleTargets, scaleOutput);
    case PoolKind::Avg: return local_pool<PoolKind::Avg>(images, targets, g, scaleTargets, scaleOutput);
    case PoolKind::MaxAbs: return local_pool<PoolKind::MaxAbs>(images, targets, g, scaleTargets, scaleOutput);
  }
}

void localMaxUndo(const Tensor& images, const Tensor& maxActs, const Tensor& outGrads, Tensor& targets,
                  const PoolGeometry& g, float scaleTargets, float scaleOutput) {
  const int64_t numImages = images.cols();
  const float* in = images.data();
  const float* pooled = maxActs.data();
  const float* grads = outGrads.data();
  float* out = targets.data();
  const int64_t imgRows = int64_t{g.channels} * g.imgSizeY;
  const int64_t overlap = (g.sizeX + g.stride - 1) / g.stride;  // windows per position, at most
  parallel_for(imgRows, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(numImages);
    for (int64_t r = begin; r < end; ++r) {
      const int c = static_cast<int>(r / g.imgSizeY), y = static_cast<int>(r % g.imgSizeY);
      const Span outYs = windows_containing(y, g.start, g.stride, g.sizeX, g.outputsY);
      for (int x = 0; x < g.imgSizeX; ++x) {
        const Span outXs = windows_containing(x, g.start, g.stride, g.sizeX, g.outputsX);
        const float* v = in + (r * g.imgSizeX + x) * numImages;
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int oy = outYs.lo; oy <= outYs.hi; ++oy) {
          for (int ox = outXs.lo; ox <= outXs.hi; ++ox) {
            const int64_t o = ((int64_t{c} * g.outputsY + oy) * g.outputsX + ox) * numImages;
            const float* m = pooled + o;
            const float* gr = grads + o;
            for (int64_t n = 0; n < numImages; ++n) acc[n] += v[n] == m[n] ? gr[n] : 0.f;
          }
        }
        float* t = out + (r * g.imgSizeX + x) * numImages;
        store_scaled_row(t, numImages, scaleTargets, scaleOutput, [&](int64_t n) { return acc[n]; });
      }
    }
  }, rows_grain(int64_t{g.imgSizeX} * numImages * overlap * overlap));
}

void localAvgUndo(const Tensor& outGrads, Tensor& targets, const PoolGeometry& g, float scaleTargets,
                  float scaleOutput) {
  const int64_t numImages = outGrads.cols();
  const float* grads = outGrads.data();
  float* out = targets.data();
  // 1 / (in-image pixels) of each output window, as a product of its row and column counts.
  std::vector<float> inverseRows(g.outputsY), inverseCols(g.outputsX);
  for (int oy = 0; oy < g.outputsY; ++oy) {
    Span s = window(oy, g.start, g.stride, g.sizeX, g.imgSizeY);
    inverseRows[oy] = 1.f / static_cast<float>(s.hi - s.lo);
  }
  for (int ox = 0; ox < g.outputsX; ++ox) {
    Span s = window(ox, g.start, g.stride, g.sizeX, g.imgSizeX);
    inverseCols[ox] = 1.f / static_cast<float>(s.hi - s.lo);
  }
  const int64_t imgRows = int64_t{g.channels} * g.imgSizeY;
  const int64_t overlap = (g.sizeX + g.stride - 1) / g.stride;
  parallel_for(imgRows, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(numImages);
    for (int64_t r = begin; r < end; ++r) {
      const int c = static_cast<int>(r / g.imgSizeY), y = static_cast<int>(r % g.imgSizeY);
      const Span outYs = windows_containing(y, g.start, g.stride, g.sizeX, g.outputsY);
      for (int x = 0; x < g.imgSizeX; ++x) {
        const Span outXs = windows_containing(x, g.start, g.stride, g.sizeX, g.outputsX);
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int oy = outYs.lo; oy <= outYs.hi; ++oy) {
          for (int ox = outXs.lo; ox <= outXs.hi; ++ox) {
            const float* gr = grads + ((int64_t{c} * g.outputsY + oy) * g.outputsX + ox) * numImages;
            const float share = inverseRows[oy] * inverseCols[ox];
            for (int64_t n = 0; n < numImages; ++n) acc[n] += gr[n] * share;
          }
        }
        float* t = out + (r * g.imgSizeX + x) * numImages;
        store_scaled_row(t, numImages, scaleTargets, scaleOutput, [&](int64_t n) { return acc[n]; });
      }
    }
  }, rows_grain(int64_t{g.imgSizeX} * numImages * overlap * overlap));
}

void crossMapMaxPool(const Tensor& images, Tensor& targets, const CrossMapPoolGeometry& g, float scaleTargets,
                     float scaleOutput) {
  const int64_t numImages = images.cols();
  const int64_t plane = int64_t{g.pixels} * numImages;  // elements per channel
  const float* in = images.data();
  float* out = targets.data();
  parallel_for(int64_t{g.outputs} * g.pixels, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(numImages);
    for (int64_t r = begin; r < end; ++r) {
      const int o = static_cast<int>(r / g.pixels);
      const int64_t pixel = (r % g.pixels) * numImages;
      const Span channels = window(o, g.start, g.stride, g.size, g.channels);
      const float* first = in + channels.lo * plane + pixel;
      std::copy(first, first + numImages, acc.begin());
      for (int c = channels.lo + 1; c < channels.hi; ++c) {
        const float* v = in + c * plane + pixel;
        for (int64_t n = 0; n < numImages; ++n) acc[n] = v[n] > acc[n] ? v[n] : acc[n];
      }
      float* t = out + r * numImages;
      store_scaled_row(t, numImages, scaleTargets, scaleOutput, [&](int64_t n) { return acc[n]; });
    }
  }, rows_grain(numImages * g.size));
}

void crossMapMaxPoolUndo(const Tensor& images, const Tensor& maxActs, const Tensor& outGrads, Tensor& targets,
                         const CrossMapPoolGeometry& g, float scaleTargets, float scaleOutput) {
  const int64_t numImages = images.cols();
  const int64_t plane = int64_t{g.pixels} * numImages;
  const float* in = images.data();
  const float* pooled = maxActs.data();
  const float* grads = outGrads.data();
  float* out = targets.data();
  const int64_t overlap = (g.size + g.stride - 1) / g.stride;
  parallel_for(int64_t{g.channels} * g.pixels, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(numImages);
    for (int64_t r = begin; r < end; ++r) {
      const int c = static_cast<int>(r / g.pixels);
      const int64_t pixel = (r % g.pixels) * numImages;
      const Span outs = windows_containing(c, g.start, g.stride, g.size, g.outputs);
      const float* v = in + r * numImages;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int o = outs.lo; o <= outs.hi; ++o) {
        const float* m = pooled + o * plane + pixel;
        const float* gr = grads + o * plane + pixel;
        for (int64_t n = 0; n < numImages; ++n) acc[n] += v[n] == m[n] ? gr[n] : 0.f;
      }
      float* t = out + r * numImages;
      store_scaled_row(t, numImages, scaleTargets, scaleOutput, [&](int64_t n) { return acc[n]; });
    }
  }, rows_grain(numImages * overlap));
}

}  // namespace ccn::cpu
