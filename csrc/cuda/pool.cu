// Pooling on the GPU.
//   localPool:            targets[c, oy, ox, n] = max / max-|.| / mean over the output's window,
//                         clipped to the image (empty windows give 0).
//   localMaxUndo:         targets[c, y, x, n] = sum of outGrads[c, oy, ox, n] over the outputs whose
//                         window holds (y, x) and whose pooled value equals images[c, y, x, n].
//   localAvgUndo:         targets[c, y, x, n] = sum of outGrads / window pixel count over the outputs
//                         whose window holds (y, x).
//   crossMapMaxPool(Undo): the same max over windows of channels, per pixel.
//   targets = scaleTargets * targets + scaleOutput * result.
// Layout: images (channels, imgSizeY, imgSizeX, numImages), pooled (channels, outputsY,
// outputsX, numImages); cross-map: (channels, pixels, numImages) -> (outputs, pixels,
// numImages); image index fastest.
// Launch: one thread per target element, kThreads per block, grid-stride loop. The backward
// routines gather (each input element sums the outputs that cover it), so they need no
// atomics and are deterministic. Consecutive threads take consecutive images: coalesced.
// Preconditions (checked by ops::): shapes match the geometry, one device, contiguous,
// positive sizes and strides, and ops::checkGeometry's bound on extent + |start| + size +
// stride, which keeps the int window arithmetic (start + o * stride + size, p - start -
// size, their divisions by stride) from overflowing. Checked here: 32-bit indexing.
#include "cuda/kernel_util.cuh"
#include "ops/pool.h"

namespace ccn::cuda {
namespace {

// The outputs whose window [start + o * stride, start + o * stride + size) holds position p:
// [first, last] (empty when first > last).
__device__ __forceinline__ void covering_outputs(int p, int start, int size, int stride, int outputs, int& first,
                                                 int& last) {
  first = max(0, ceil_div(p - start - size + 1, stride));
  last = min(outputs - 1, floor_div(p - start, stride));
}

__global__ void local_pool_kernel(const float* images, float* targets, int total, int imgSizeY, int imgSizeX,
                                  int sizeX, int start, int stride, int outputsY, int outputsX, int numImages,
                                  PoolKind kind, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const Coords at = unravel(int(i), outputsY, outputsX, numImages);
    const int n = at.n, ox = at.x, oy = at.y, c = at.c;
    int y0 = max(0, start + oy * stride), y1 = min(imgSizeY, start + oy * stride + sizeX);
    int x0 = max(0, start + ox * stride), x1 = min(imgSizeX, start + ox * stride + sizeX);
    const float* plane = images + int64_t(c) * imgSizeY * imgSizeX * numImages + n;
    float result = 0.f;
    if (y0 < y1 && x0 < x1) {
      float sum = 0.f, best = plane[(int64_t(y0) * imgSizeX + x0) * numImages];
      for (int y = y0; y < y1; ++y)
        for (int x = x0; x < x1; ++x) {
          float v = plane[(int64_t(y) * imgSizeX + x) * numImages];
          sum += v;
          // The first pixel (row-major) with the largest value wins ties.
          if (kind == PoolKind::Max ? v > best : fabsf(v) > fabsf(best)) best = v;
        }
      result = kind == PoolKind::Avg ? sum / float((y1 - y0) * (x1 - x0)) : best;
    }
    store_scaled(targets[i], result, sT, sO);
  }
}

__global__ void local_max_undo_kernel(const float* images, const float* maxActs, const float* outGrads,
                                      float* targets, int total, int imgSizeY, int imgSizeX, int sizeX, int start,
                                      int stride, int outputsY, int outputsX, int numImages, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const Coords at = unravel(int(i), imgSizeY, imgSizeX, numImages);
    const int n = at.n, x = at.x, y = at.y, c = at.c;
    int oy0, oy1, ox0, ox1;
    covering_outputs(y, start, sizeX, stride, outputsY, oy0, oy1);
    covering_outputs(x, start, sizeX, stride, outputsX, ox0, ox1);
    float value = images[i], grad = 0.f;
    int64_t plane = int64_t(c) * outputsY * outputsX;
    for (int oy = oy0; oy <= oy1; ++oy)
      for (int ox = ox0; ox <= ox1; ++ox) {
        int64_t o = ((plane + int64_t(oy) * outputsX) + ox) * numImages + n;
        if (maxActs[o] == value) grad += outGrads[o];
      }
    store_scaled(targets[i], grad, sT, sO);
  }
}

__global__ void local_avg_undo_kernel(const float* outGrads, float* targets, int total, int imgSizeY,
                                      int imgSizeX, int sizeX, int start, int stride, int outputsY, int outputsX,
                                      int numImages, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const Coords at = unravel(int(i), imgSizeY, imgSizeX, numImages);
    const int n = at.n, x = at.x, y = at.y, c = at.c;
    int oy0, oy1, ox0, ox1;
    covering_outputs(y, start, sizeX, stride, outputsY, oy0, oy1);
    covering_outputs(x, start, sizeX, stride, outputsX, ox0, ox1);
    float grad = 0.f;
    int64_t plane = int64_t(c) * outputsY * outputsX;
    for (int oy = oy0; oy <= oy1; ++oy) {
      int rows = min(imgSizeY, start + oy * stride + sizeX) - max(0, start + oy * stride);
      for (int ox = ox0; ox <= ox1; ++ox) {
        int cols = min(imgSizeX, start + ox * stride + sizeX) - max(0, start + ox * stride);
        grad += outGrads[((plane + int64_t(oy) * outputsX) + ox) * numImages + n] / float(rows * cols);
      }
    }
    store_scaled(targets[i], grad, sT, sO);
  }
}

// pixelsTimesImages: the distance between two channels.
__global__ void cross_map_max_pool_kernel(const float* images, float* targets, int total, int channels,
                                          int pixelsTimesImages, int size, int start, int stride, float sT,
                                          float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    int o = int(i) / pixelsTimesImages, rest = int(i) % pixelsTimesImages;
    int c0 = max(0, start + o * stride), c1 = min(channels, start + o * stride + size);
    float best = c0 < c1 ? images[int64_t(c0) * pixelsTimesImages + rest] : 0.f;
    for (int c = c0 + 1; c < c1; ++c) best = fmaxf(best, images[int64_t(c) * pixelsTimesImages + rest]);
    store_scaled(targets[i], best, sT, sO);
  }
}

__global__ void cross_map_max_pool_undo_kernel(const float* images, const float* maxActs, const float* outGrads,
                                               float* targets, int total, int pixelsTimesImages, int size,
                                               int start, int stride, int outputs, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    int c = int(i) / pixelsTimesImages, rest = int(i) % pixelsTimesImages;
    int o0, o1;
    covering_outputs(c, start, size, stride, outputs, o0, o1);
    float value = images[i], grad = 0.f;
    for (int o = o0; o <= o1; ++o) {
      int64_t j = int64_t(o) * pixelsTimesImages + rest;
      if (maxActs[j] == value) grad += outGrads[j];
    }
    store_scaled(targets[i], grad, sT, sO);
  }
}

}  // namespace

void localPool(const Tensor& images, Tensor& targets, const PoolGeometry& g, PoolKind kind, float scaleTargets,
               float scaleOutput) {
  check_int_indexable(images, "images");
  check_int_indexable(targets, "targets");
  int total = static_cast<int>(targets.numel());
  if (total == 0) return;
  set_device(targets);
  local_pool_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), targets.data(), total, g.imgSizeY, g.imgSizeX, g.sizeX, g.start, g.stride, g.outputsY,
      g.outputsX, static_cast<int>(images.cols()), kind, scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("local_pool_kernel");
}

void localMaxUndo(const Tensor& images, const Tensor& maxActs, const Tensor& outGrads, Tensor& targets,
                  const PoolGeometry& g, float scaleTargets, float scaleOutput) {
  check_int_indexable(images, "images");
  check_int_indexable(maxActs, "maxActs");
  int total = static_cast<int>(targets.numel());
  if (total == 0) return;
  set_device(targets);
  local_max_undo_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), maxActs.data(), outGrads.data(), targets.data(), total, g.imgSizeY, g.imgSizeX, g.sizeX,
      g.start, g.stride, g.outputsY, g.outputsX, static_cast<int>(targets.cols()), scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("local_max_undo_kernel");
}

void localAvgUndo(const Tensor& outGrads, Tensor& targets, const PoolGeometry& g, float scaleTargets,
                  float scaleOutput) {
  check_int_indexable(outGrads, "outGrads");
  check_int_indexable(targets, "targets");
  int total = static_cast<int>(targets.numel());
  if (total == 0) return;
  set_device(targets);
  local_avg_undo_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      outGrads.data(), targets.data(), total, g.imgSizeY, g.imgSizeX, g.sizeX, g.start, g.stride, g.outputsY,
      g.outputsX, static_cast<int>(targets.cols()), scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("local_avg_undo_kernel");
}

void crossMapMaxPool(const Tensor& images, Tensor& targets, const CrossMapPoolGeometry& g, float scaleTargets,
                     float scaleOutput) {
  check_int_indexable(images, "images");
  check_int_indexable(targets, "targets");
  int total = static_cast<int>(targets.numel());
  if (total == 0) return;
  set_device(targets);
  cross_map_max_pool_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), targets.data(), total, g.channels, static_cast<int>(g.pixels * images.cols()), g.size,
      g.start, g.stride, scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("cross_map_max_pool_kernel");
}

void crossMapMaxPoolUndo(const Tensor& images, const Tensor& maxActs, const Tensor& outGrads, Tensor& targets,
                         const CrossMapPoolGeometry& g, float scaleTargets, float scaleOutput) {
  check_int_indexable(images, "images");
  check_int_indexable(maxActs, "maxActs");
  int total = static_cast<int>(targets.numel());
  if (total == 0) return;
  set_device(targets);
  cross_map_max_pool_undo_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), maxActs.data(), outGrads.data(), targets.data(), total,
      static_cast<int>(g.pixels * images.cols()), g.size, g.start, g.stride, g.outputs, scaleTargets,
      scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("cross_map_max_pool_undo_kernel");
}

}  // namespace ccn::cuda
