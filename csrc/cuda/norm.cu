// Normalization layers on the GPU (see ops/norm.h for the definitions).
//   responseNorm (rnorm):         d = minDiv + addScale * sum_{spatial window} x^2
//   responseNormCrossMap:         d = minDiv + addScale * sum_{cross-map window} x^2
//   contrastNorm (cnorm):         m = x - mean_{spatial window} x;  d = minDiv + addScale * sum m^2
//   output = x * d^-powScale; denoms (and meanDiffs) are written unscaled.
// Gradients, with g the output gradient and a = x d^-powScale the output:
//   rnorm / cmrnorm: dx[p] = g[p] d[p]^-pow - 2 addScale pow x[p] S[p],
//                    S[p] = sum over the q whose window holds p of g[q] a[q] / d[q];
//   cnorm:           E[r] = -2 addScale pow m[r] S[r] (S as above, over spatial windows),
//                    dx[p] = g[p] d[p]^-pow + E[p] - sum over the r whose window holds p of E[r] / |W(r)|
//                    (the second pass carries the gradient through the window means).
// Layout: (channels, imgSizeY, imgSizeX, numImages) for every tensor, image index fastest.
// Launch: one thread per element, kThreads per block, grid-stride loop; each thread reads
// its windows directly (consecutive threads: consecutive images, coalesced). Gradients are
// gathers, so no atomics. cnorm's backward keeps E in a workspace (kernel_util.cuh) of the
// images' size.
// Preconditions (checked by ops::): shapes agree, one device, contiguous, size >= 1, and
// ops::checkGeometry's bound on max(channels, imgSizeY, imgSizeX) + size, which keeps the
// int window bounds (p + size / 2 + 1, c / size * size + size) from overflowing.
// Checked here: 32-bit indexing (which also bounds channelPitch and k * channelPitch).
#include "cuda/kernel_util.cuh"
#include "ops/norm.h"

namespace ccn::cuda {
namespace {

// The window of size `size` around p: [p - size/2, p - size/2 + size), clipped to [0, len).
__device__ __forceinline__ void window(int p, int size, int len, int& lo, int& hi) {
  lo = max(0, p - size / 2);
  hi = min(len, p - size / 2 + size);
}

// The positions q whose window holds p: q - size/2 <= p < q - size/2 + size, clipped.
__device__ __forceinline__ void covering(int p, int size, int len, int& lo, int& hi) {
  lo = max(0, p + size / 2 - size + 1);
  hi = min(len, p + size / 2 + 1);
}

// The cross-map window of channel c (blocked: c's block of `size` channels); symmetric for
// blocks, so it is also the set of channels whose window holds c.
__device__ __forceinline__ void channel_window(int c, int size, int channels, bool blocked, int& lo, int& hi) {
  if (blocked) {
    lo = c / size * size;
    hi = min(channels, lo + size);
  } else {
    window(c, size, channels, lo, hi);
  }
}

__device__ __forceinline__ void channel_covering(int c, int size, int channels, bool blocked, int& lo, int& hi) {
  if (blocked) channel_window(c, size, channels, true, lo, hi);
  else covering(c, size, channels, lo, hi);
}

struct NormParams {
  int channels, sizeY, sizeX, numImages, size;
  float addScale, powScale, minDiv;
  bool blocked;
};

// rnorm and cnorm forward: d from the squares of `squared` (the images, or cnorm's mean
// differences) over the spatial window; output images * d^-pow.
__global__ void spatial_norm_kernel(const float* images, const float* squared, float* denoms, float* targets,
                                    int total, NormParams p, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const Coords px = unravel(int(i), p.sizeY, p.sizeX, p.numImages);
    int y0, y1, x0, x1;
    window(px.y, p.size, p.sizeY, y0, y1);
    window(px.x, p.size, p.sizeX, x0, x1);
    const float* plane = squared + int64_t(px.c) * p.sizeY * p.sizeX * p.numImages + px.n;
    float sum = 0.f;
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) {
        float v = plane[(int64_t(y) * p.sizeX + x) * p.numImages];
        sum += v * v;
      }
    float d = p.minDiv + p.addScale * sum;
    denoms[i] = d;
    store_scaled(targets[i], images[i] * powf(d, -p.powScale), sT, sO);
  }
}

__global__ void cross_map_norm_kernel(const float* images, float* denoms, float* targets, int total, NormParams p,
                                      float sT, float sO) {
  const int channelPitch = p.sizeY * p.sizeX * p.numImages;
  CCN_GRID_STRIDE_LOOP(i, total) {
    int c = int(i) / channelPitch;
    int c0, c1;
    channel_window(c, p.size, p.channels, p.blocked, c0, c1);
    const float* column = images + i - c * channelPitch;
    float sum = 0.f;
    for (int k = c0; k < c1; ++k) {
      float v = column[k * channelPitch];
      sum += v * v;
    }
    float d = p.minDiv + p.addScale * sum;
    denoms[i] = d;
    store_scaled(targets[i], images[i] * powf(d, -p.powScale), sT, sO);
  }
}

// cnorm: meanDiffs = images - mean of images over the spatial window.
__global__ void mean_diff_kernel(const float* images, float* meanDiffs, int total, NormParams p) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const Coords px = unravel(int(i), p.sizeY, p.sizeX, p.numImages);
    int y0, y1, x0, x1;
    window(px.y, p.size, p.sizeY, y0, y1);
    window(px.x, p.size, p.sizeX, x0, x1);
    const float* plane = images + int64_t(px.c) * p.sizeY * p.sizeX * p.numImages + px.n;
    float sum = 0.f;
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) sum += plane[(int64_t(y) * p.sizeX + x) * p.numImages];
    meanDiffs[i] = images[i] - sum / float((y1 - y0) * (x1 - x0));
  }
}

// Writes (withDirect ? g d^-pow : 0) - 2 addScale pow factor[p] S[p], S over spatial windows.
__global__ void spatial_norm_undo_kernel(const float* outGrads, const float* factor, const float* acts,
                                         const float* denoms, float* targets, int total, NormParams p,
                                         bool withDirect, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const Coords px = unravel(int(i), p.sizeY, p.sizeX, p.numImages);
    int y0, y1, x0, x1;
    covering(px.y, p.size, p.sizeY, y0, y1);
    covering(px.x, p.size, p.sizeX, x0, x1);
    int64_t plane = int64_t(px.c) * p.sizeY * p.sizeX * p.numImages + px.n;
    float sum = 0.f;
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) {
        int64_t q = plane + (int64_t(y) * p.sizeX + x) * p.numImages;
        sum += outGrads[q] * acts[q] / denoms[q];
      }
    float grad = -2.f * p.addScale * p.powScale * factor[i] * sum;
    if (withDirect) grad += outGrads[i] * powf(denoms[i], -p.powScale);
    store_scaled(targets[i], grad, sT, sO);
  }
}

__global__ void cross_map_norm_undo_kernel(const float* outGrads, const float* images, const float* acts,
                                           const float* denoms, float* targets, int total, NormParams p, float sT,
                                           float sO) {
  const int channelPitch = p.sizeY * p.sizeX * p.numImages;
  CCN_GRID_STRIDE_LOOP(i, total) {
    int c = int(i) / channelPitch;
    int c0, c1;
    channel_covering(c, p.size, p.channels, p.blocked, c0, c1);
    int64_t column = i - c * channelPitch;
    float sum = 0.f;
    for (int k = c0; k < c1; ++k) {
      int64_t q = column + k * channelPitch;
      sum += outGrads[q] * acts[q] / denoms[q];
    }
    float grad = outGrads[i] * powf(denoms[i], -p.powScale) - 2.f * p.addScale * p.powScale * images[i] * sum;
    store_scaled(targets[i], grad, sT, sO);
  }
}

// cnorm's second pass: g d^-pow + E[p] - sum over the r whose window holds p of E[r] / |W(r)|.
__global__ void contrast_norm_undo_kernel(const float* outGrads, const float* denoms, const float* scatter,
                                          float* targets, int total, NormParams p, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const Coords px = unravel(int(i), p.sizeY, p.sizeX, p.numImages);
    int y0, y1, x0, x1;
    covering(px.y, p.size, p.sizeY, y0, y1);
    covering(px.x, p.size, p.sizeX, x0, x1);
    int64_t plane = int64_t(px.c) * p.sizeY * p.sizeX * p.numImages + px.n;
    float meanTerm = 0.f;
    for (int y = y0; y < y1; ++y) {
      int wy0, wy1;
      window(y, p.size, p.sizeY, wy0, wy1);
      for (int x = x0; x < x1; ++x) {
        int wx0, wx1;
        window(x, p.size, p.sizeX, wx0, wx1);
        meanTerm += scatter[plane + (int64_t(y) * p.sizeX + x) * p.numImages] / float((wy1 - wy0) * (wx1 - wx0));
      }
    }
    float grad = outGrads[i] * powf(denoms[i], -p.powScale) + scatter[i] - meanTerm;
    store_scaled(targets[i], grad, sT, sO);
  }
}

NormParams params(const NormGeometry& g, const Tensor& images) {
  return NormParams{g.channels, g.imgSizeY, g.imgSizeX, static_cast<int>(images.cols()), g.size,
                    g.addScale, g.powScale, g.minDiv, g.blocked};
}

}  // namespace

void responseNorm(const Tensor& images, Tensor& denoms, Tensor& targets, const NormGeometry& g, float scaleTargets,
                  float scaleOutput) {
  check_int_indexable(images, "images");
  int total = static_cast<int>(images.numel());
  if (total == 0) return;
  set_device(targets);
  spatial_norm_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), images.data(), denoms.data(), targets.data(), total, params(g, images), scaleTargets,
      scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("spatial_norm_kernel");
}

void responseNormUndo(const Tensor& outGrads, const Tensor& images, const Tensor& acts, const Tensor& denoms,
                      Tensor& targets, const NormGeometry& g, float scaleTargets, float scaleOutput) {
  check_int_indexable(images, "images");
  int total = static_cast<int>(images.numel());
  if (total == 0) return;
  set_device(targets);
  spatial_norm_undo_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      outGrads.data(), images.data(), acts.data(), denoms.data(), targets.data(), total, params(g, images), true,
      scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("spatial_norm_undo_kernel");
}

void responseNormCrossMap(const Tensor& images, Tensor& denoms, Tensor& targets, const NormGeometry& g,
                          float scaleTargets, float scaleOutput) {
  check_int_indexable(images, "images");
  int total = static_cast<int>(images.numel());
  if (total == 0) return;
  set_device(targets);
  cross_map_norm_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), denoms.data(), targets.data(), total, params(g, images), scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("cross_map_norm_kernel");
}

void responseNormCrossMapUndo(const Tensor& outGrads, const Tensor& images, const Tensor& acts,
                              const Tensor& denoms, Tensor& targets, const NormGeometry& g, float scaleTargets,
                              float scaleOutput) {
  check_int_indexable(images, "images");
  int total = static_cast<int>(images.numel());
  if (total == 0) return;
  set_device(targets);
  cross_map_norm_undo_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      outGrads.data(), images.data(), acts.data(), denoms.data(), targets.data(), total, params(g, images),
      scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("cross_map_norm_undo_kernel");
}

void contrastNorm(const Tensor& images, Tensor& meanDiffs, Tensor& denoms, Tensor& targets, const NormGeometry& g,
                  float scaleTargets, float scaleOutput) {
  check_int_indexable(images, "images");
  int total = static_cast<int>(images.numel());
  if (total == 0) return;
  NormParams p = params(g, images);
  set_device(targets);
  mean_diff_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(images.data(), meanDiffs.data(), total,
                                                                           p);
  CCN_CUDA_CHECK_LAUNCH("mean_diff_kernel");
  spatial_norm_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), meanDiffs.data(), denoms.data(), targets.data(), total, p, scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("spatial_norm_kernel");
}

void contrastNormUndo(const Tensor& outGrads, const Tensor& images, const Tensor& meanDiffs, const Tensor& acts,
                      const Tensor& denoms, Tensor& targets, const NormGeometry& g, float scaleTargets,
                      float scaleOutput) {
  check_int_indexable(images, "images");
  int total = static_cast<int>(images.numel());
  if (total == 0) return;
  NormParams p = params(g, images);
  set_device(targets);
  float* scatter = workspace(images.device(), total);
  spatial_norm_undo_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      outGrads.data(), meanDiffs.data(), acts.data(), denoms.data(), scatter, total, p, false, 0.f, 1.f);
  CCN_CUDA_CHECK_LAUNCH("spatial_norm_undo_kernel");
  contrast_norm_undo_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      outGrads.data(), denoms.data(), scatter, targets.data(), total, p, scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("contrast_norm_undo_kernel");
}

}  // namespace ccn::cuda
