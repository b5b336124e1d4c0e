// Image routines on the GPU: horizontal reflection, crop, bilinear resize, RGB -> YUV,
// separable blur taps along one axis, bed-of-nails subsampling and its gradient.
//   targets = scaleTargets * targets + scaleOutput * result
// Layout: images (channels, imgSizeY, imgSizeX, numImages), image index fastest; so are the
// targets, with their own sizes.
// Launch: one thread per target element (per pixel and image for rgbToYuv), kThreads per
// block, grid-stride loop; consecutive threads take consecutive images, so every global
// access is coalesced.
// Preconditions (checked by ops::): shapes match the geometry, one device, contiguous,
// images and targets distinct, crop windows and bed-of-nails samples inside the image (they
// are read without bounds checks), stride >= 1, blur taps + the axis length within int (so
// size - p + numTaps / 2 does not overflow). Checked here: 32-bit indexing.
#include "cuda/kernel_util.cuh"
#include "ops/image.h"

namespace ccn::cuda {
namespace {

__global__ void reflect_horizontal_kernel(const float* images, float* targets, int total, int imgSizeX,
                                          int numImages, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const int n = int(i) % numImages, x = int(i) / numImages % imgSizeX;
    const int row = int(i) / numImages / imgSizeX;  // channel * imgSizeY + y
    store_scaled(targets[i], images[(int64_t(row) * imgSizeX + imgSizeX - 1 - x) * numImages + n], sT, sO);
  }
}

__global__ void crop_kernel(const float* images, float* targets, int total, int imgSizeY, int imgSizeX,
                            int startY, int startX, int cropY, int cropX, int numImages, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const Coords at = unravel(int(i), cropY, cropX, numImages);
    const int n = at.n, x = at.x, y = at.y, c = at.c;
    int64_t src = ((int64_t(c) * imgSizeY + startY + y) * imgSizeX + startX + x) * numImages + n;
    store_scaled(targets[i], images[src], sT, sO);
  }
}

// Source coordinate of output pixel `out` (half-pixel centres), clamped to [0, size - 1]:
// the two neighbours and the weight of the second.
__device__ __forceinline__ void bilinear_source(int out, float scale, int size, int& lo, int& hi, float& w) {
  float s = (out + 0.5f) * scale - 0.5f;
  s = fminf(fmaxf(s, 0.f), float(size - 1));
  lo = int(floorf(s));
  hi = min(lo + 1, size - 1);
  w = s - float(lo);
}

__global__ void resize_bilinear_kernel(const float* images, float* targets, int total, int imgSizeY,
                                       int imgSizeX, int tgtSizeY, int tgtSizeX, int numImages, float sT,
                                       float sO) {
  float scaleY = float(imgSizeY) / float(tgtSizeY), scaleX = float(imgSizeX) / float(tgtSizeX);
  CCN_GRID_STRIDE_LOOP(i, total) {
    const Coords at = unravel(int(i), tgtSizeY, tgtSizeX, numImages);
    const int n = at.n, x = at.x, y = at.y, c = at.c;
    int y0, y1, x0, x1;
    float wy, wx;
    bilinear_source(y, scaleY, imgSizeY, y0, y1, wy);
    bilinear_source(x, scaleX, imgSizeX, x0, x1, wx);
    const float* plane = images + int64_t(c) * imgSizeY * imgSizeX * numImages + n;
    auto pixel = [&](int yy, int xx) { return plane[(int64_t(yy) * imgSizeX + xx) * numImages]; };
    float top = (1.f - wx) * pixel(y0, x0) + wx * pixel(y0, x1);
    float bottom = (1.f - wx) * pixel(y1, x0) + wx * pixel(y1, x1);
    store_scaled(targets[i], (1.f - wy) * top + wy * bottom, sT, sO);
  }
}

// One thread per (pixel, image): reads R, G, B before writing Y, U, V.
__global__ void rgb_to_yuv_kernel(const float* images, float* targets, int planeSize, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, planeSize) {
    float r = images[i], g = images[planeSize + i], b = images[2 * int64_t(planeSize) + i];
    store_scaled(targets[i], 0.299f * r + 0.587f * g + 0.114f * b, sT, sO);
    store_scaled(targets[planeSize + i], -0.14713f * r - 0.28886f * g + 0.436f * b, sT, sO);
    store_scaled(targets[2 * int64_t(planeSize) + i], 0.615f * r - 0.51499f * g - 0.10001f * b, sT, sO);
  }
}

// out[.., p, ..] = sum_t taps[t] * in[.., p - numTaps/2 + t, ..] along one axis, zero outside.
// `pitch` is the element distance between neighbours along the axis (numImages along x,
// imgSizeX * numImages along y) and `size` the axis length.
__global__ void blur_kernel(const float* images, const float* taps, float* targets, int total, int numTaps,
                            int size, int pitch, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    int p = int(i) / pitch % size;
    int first = max(0, numTaps / 2 - p), last = min(numTaps, size - p + numTaps / 2);
    const float* centre = images + i;
    float sum = 0.f;
    for (int t = first; t < last; ++t) sum += taps[t] * centre[int64_t(t - numTaps / 2) * pitch];
    store_scaled(targets[i], sum, sT, sO);
  }
}

__global__ void bed_of_nails_kernel(const float* images, float* targets, int total, int imgSizeY, int imgSizeX,
                                    int start, int stride, int outputsY, int outputsX, int numImages, float sT,
                                    float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const Coords at = unravel(int(i), outputsY, outputsX, numImages);
    const int n = at.n, ox = at.x, oy = at.y, c = at.c;
    int64_t src = ((int64_t(c) * imgSizeY + start + oy * stride) * imgSizeX + start + ox * stride) * numImages + n;
    store_scaled(targets[i], images[src], sT, sO);
  }
}

// One thread per image element: the gradient of its sample, or 0 where none was taken.
__global__ void bed_of_nails_undo_kernel(const float* outGrads, float* targets, int total, int imgSizeY,
                                         int imgSizeX, int start, int stride, int outputsY, int outputsX,
                                         int numImages, float sT, float sO) {
  CCN_GRID_STRIDE_LOOP(i, total) {
    const Coords at = unravel(int(i), imgSizeY, imgSizeX, numImages);
    const int n = at.n, dx = at.x - start, dy = at.y - start, c = at.c;
    float value = 0.f;
    if (dy >= 0 && dx >= 0 && dy % stride == 0 && dx % stride == 0 && dy / stride < outputsY &&
        dx / stride < outputsX)
      value = outGrads[((int64_t(c) * outputsY + dy / stride) * outputsX + dx / stride) * numImages + n];
    store_scaled(targets[i], value, sT, sO);
  }
}

}  // namespace

void reflectHorizontal(const Tensor& images, Tensor& targets, const ImageGeometry& g, float scaleTargets,
                       float scaleOutput) {
  check_int_indexable(images, "images");
  int total = static_cast<int>(targets.numel());
  if (total == 0) return;
  set_device(targets);
  reflect_horizontal_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), targets.data(), total, g.imgSizeX, static_cast<int>(images.cols()), scaleTargets,
      scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("reflect_horizontal_kernel");
}

void crop(const Tensor& images, Tensor& targets, const ImageGeometry& g, int startY, int startX, int cropY,
          int cropX, float scaleTargets, float scaleOutput) {
  check_int_indexable(images, "images");
  int total = static_cast<int>(targets.numel());
  if (total == 0) return;
  set_device(targets);
  crop_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), targets.data(), total, g.imgSizeY, g.imgSizeX, startY, startX, cropY, cropX,
      static_cast<int>(images.cols()), scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("crop_kernel");
}

void resizeBilinear(const Tensor& images, Tensor& targets, const ImageGeometry& g, int tgtSizeY, int tgtSizeX,
                    float scaleTargets, float scaleOutput) {
  check_int_indexable(images, "images");
  check_int_indexable(targets, "targets");
  int total = static_cast<int>(targets.numel());
  if (total == 0) return;
  set_device(targets);
  resize_bilinear_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), targets.data(), total, g.imgSizeY, g.imgSizeX, tgtSizeY, tgtSizeX,
      static_cast<int>(images.cols()), scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("resize_bilinear_kernel");
}

void rgbToYuv(const Tensor& images, Tensor& targets, const ImageGeometry& g, float scaleTargets,
              float scaleOutput) {
  check_int_indexable(images, "images");
  int planeSize = static_cast<int>(int64_t(g.imgSizeY) * g.imgSizeX * images.cols());
  if (planeSize == 0) return;
  set_device(targets);
  rgb_to_yuv_kernel<<<blocks_for(planeSize, kThreads), kThreads, 0, stream()>>>(images.data(), targets.data(),
                                                                                 planeSize, scaleTargets,
                                                                                 scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("rgb_to_yuv_kernel");
}

void gaussianBlur(const Tensor& images, const Tensor& filter, Tensor& targets, const ImageGeometry& g,
                  bool horizontal, float scaleTargets, float scaleOutput) {
  check_int_indexable(images, "images");
  int total = static_cast<int>(targets.numel());
  if (total == 0) return;
  int numImages = static_cast<int>(images.cols());
  int size = horizontal ? g.imgSizeX : g.imgSizeY;
  int pitch = horizontal ? numImages : g.imgSizeX * numImages;
  set_device(targets);
  blur_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), filter.data(), targets.data(), total, static_cast<int>(filter.numel()), size, pitch,
      scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("blur_kernel");
}

void bedOfNails(const Tensor& images, Tensor& targets, const ImageGeometry& g, int start, int stride,
                int outputsY, int outputsX, float scaleTargets, float scaleOutput) {
  check_int_indexable(images, "images");
  int total = static_cast<int>(targets.numel());
  if (total == 0) return;
  set_device(targets);
  bed_of_nails_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      images.data(), targets.data(), total, g.imgSizeY, g.imgSizeX, start, stride, outputsY, outputsX,
      static_cast<int>(images.cols()), scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("bed_of_nails_kernel");
}

void bedOfNailsUndo(const Tensor& outGrads, Tensor& targets, const ImageGeometry& g, int start, int stride,
                    int outputsY, int outputsX, float scaleTargets, float scaleOutput) {
  check_int_indexable(targets, "targets");
  int total = static_cast<int>(targets.numel());
  if (total == 0) return;
  set_device(targets);
  bed_of_nails_undo_kernel<<<blocks_for(total, kThreads), kThreads, 0, stream()>>>(
      outGrads.data(), targets.data(), total, g.imgSizeY, g.imgSizeX, start, stride, outputsY, outputsX,
      static_cast<int>(targets.cols()), scaleTargets, scaleOutput);
  CCN_CUDA_CHECK_LAUNCH("bed_of_nails_undo_kernel");
}

}  // namespace ccn::cuda
