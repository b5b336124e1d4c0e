// Convolution and locally-connected layers on the GPU, cuda-convnet style tiled kernels.
//   filterActs: hidActs[f, m, n] = sum_{c, fy, fx} filters[(m) c fy fx, f] * images[c, y(m, fy), x(m, fx), n]
//   imgActs:    targets[c, y, x, n] = sum over the modules m covering (y, x) and the filters f of
//               c's group of filters[(m) c fy fx, f] * hidActs[f, m, n]
//   weightActs: targets[(m) c fy fx, f] = sum over images (and modules, for conv) of
//               images[c, y(m, fy), x(m, fx), n] * hidActs[f, m, n]
//   targets = scaleTargets * targets + scaleOutput * result.
// Layout (see ops/conv.h): images (channels, imgSizeY, imgSizeX, numImages); filters
// (filterRows, numFilters) with rows (module,) channel, filterRow, filterCol; hidActs
// (numFilters, modulesY, modulesX, numImages). Image index fastest everywhere.
//
// Launch shapes (every tile edge is guarded, so any batch size and filter count works):
//   filterActs: 32 x 4 threads; a block computes one module, 32 * IPT images and 4 * FPT
//     filters of one group (thread (tx, ty): images tx + 32 i, the FPT consecutive filters
//     ty * FPT + j). It walks the module's filterChannels * filterSize^2 inputs in chunks of
//     16, staging the image patch (chunk x images, a warp per row) and the weights (chunk x
//     filters) in shared memory; a warp (one ty) reads a step's FPT weights as FPT / 4 float4
//     broadcasts: IPT + FPT / 4 shared loads per IPT * FPT FMAs (6 per 32 at IPT 4, FPT 8; 12
//     with scalar loads). Grid (modules * imageTiles, groups * filterTilesPerGroup).
//   imgActs, conv with filterChannels <= 4 (a first layer): 32 x 8 threads; a block computes
//     8 pixels of a row (a warp each), 32 * IPT images and all channels of a group, staging
//     each module's hidActs once for the 8 pixels. Grid (rows * pixelTiles * imageTiles, groups).
//   imgActs, otherwise: 32 x 4 threads; a block computes one pixel, 32 * IPT images and 4 * CPT channels
//     of one group. It walks the modules that cover the pixel and, for each, the group's
//     filters in chunks of 16, staging hidActs (filters x images) and the weights (filters x
//     channels) in shared memory. Grid (pixels * imageTiles, groups * channelTilesPerGroup).
//   weightActs: 16 x 16 threads; a block computes 64 filter rows x 16 * FPT filters of one
//     group (each thread 4 rows x FPT filters), reducing over images in steps of 32 staged in
//     shared memory (row-major ring tiles of 64 images, see stage_window), and over a fixed
//     range of modules. A thread reads 4 images of a row per float4: 4 + FPT shared loads per
//     16 * FPT FMAs (8 per 64 at FPT 4; 32 with scalar loads). For conv the modules are split in
//     `chunks` ranges (a function of the geometry only) whose sums go to a workspace and are
//     added in chunk order by a second kernel: no atomics, the same result on every run.
//     Grid (rowTiles * (chunks or modules), groups * filterTilesPerGroup).
// Preconditions (checked by ops::): shapes match the geometry, one device, contiguous,
// groups divide channels and filters. Checked here: 32-bit indexing and grid limits.
// Shared float4 reads need 16-byte addresses: the tiles they read are __align__(16), with
// rows of a multiple of 4 floats, read at multiples of 4 (static_asserts below); that holds
// at every batch size, as the global loads that fill them stay scalar.
// Global loads: a warp reads 32 consecutive images of one row, starting at the 32-byte boundary
// at or below the row's start (stage_row, stage_window): at an odd batch a row starts at any
// 4-byte offset, and loads aligned to the row instead of to sectors would touch 5 sectors per
// 4 that hold data.
#include <algorithm>

#include "cuda/kernel_util.cuh"
#include "ops/conv.h"

namespace ccn::cuda {
namespace {

struct ConvParams {
  int channels, imgSizeY, imgSizeX, filterSize, numFilters, padding, stride, modulesY, modulesX;
  int filterChannels, filtersPerGroup, filterPixels, filterRowsPerModule, numImages;
  bool local;
};

ConvParams conv_params(const ConvGeometry& g, int numImages) {
  ConvParams p;
  p.channels = g.channels;
  p.imgSizeY = g.imgSizeY;
  p.imgSizeX = g.imgSizeX;
  p.filterSize = g.filterSize;
  p.numFilters = g.numFilters;
  p.padding = g.padding;
  p.stride = g.stride;
  p.modulesY = g.modulesY;
  p.modulesX = g.modulesX;
  p.filterChannels = g.filterChannels();
  p.filtersPerGroup = g.numFilters / g.groups;
  p.filterPixels = g.filterPixels();
  p.filterRowsPerModule = g.filterChannels() * g.filterPixels();
  p.numImages = numImages;
  p.local = g.local;
  return p;
}

// Element offset of images[channel, y, x, 0] for filter row k (within a module) of module
// (my, mx) of the group starting at channel `channel0`, or -1 where the row's pixel lies in
// the padding (or k is past the last row). Images have fewer than 2^31 elements (checked).
__device__ __forceinline__ int patch_offset(const ConvParams& p, int k, int channel0, int my, int mx) {
  if (k >= p.filterRowsPerModule) return -1;
  int c = k / p.filterPixels, pixel = k % p.filterPixels;
  int y = my * p.stride - p.padding + pixel / p.filterSize;
  int x = mx * p.stride - p.padding + pixel % p.filterSize;
  if (y < 0 || y >= p.imgSizeY || x < 0 || x >= p.imgSizeX) return -1;
  return ((channel0 + c) * p.imgSizeY + y) * p.imgSizeX * p.numImages + x * p.numImages;
}

// Copies row[0, count) into tile[0, kWidth) (zeros from count on; count <= kWidth), with the 32
// lanes of one warp. The lanes are shifted by the row's offset from a 32-byte boundary, so that
// every load starts on a sector and touches only sectors that hold the row: at an odd batch a
// row starts at any 4-byte offset, and unshifted 32-float loads would span 5 sectors, not 4.
// Lanes before the row's start or past its end read an element of the row (no extra sector)
// and store nothing, so every lane issues every load.
template <int kWidth>
__device__ __forceinline__ void stage_row(float* tile, const float* row, int count, int lane) {
  const int shift = count > 0 ? int(reinterpret_cast<uintptr_t>(row) / sizeof(float) % 8) : 0;
  for (int j0 = -shift; j0 < kWidth; j0 += 32) {
    const int j = j0 + lane;
    float v = 0.f;
    if (j0 < count) v = row[min(max(j, 0), count - 1)];  // uniform over the warp
    if (j >= 0 && j < kWidth) tile[j] = j < count ? v : 0.f;
  }
}

// ---- filterActs ------------------------------------------------------------------------

constexpr int kFaThreadsX = 32, kFaThreadsY = 4, kFaChunk = 16;

template <int IPT, int FPT>
__global__ void __launch_bounds__(kFaThreadsX * kFaThreadsY)
filter_acts_kernel(const float* images, const float* filters, float* targets, ConvParams p, int imageTiles,
                   int filterTilesPerGroup, float sT, float sO) {
  constexpr int kImages = kFaThreadsX * IPT, kFilters = kFaThreadsY * FPT;
  constexpr int kThreadsPerBlock = kFaThreadsX * kFaThreadsY;
  static_assert(FPT % 4 == 0 || FPT == 1, "a thread's filters are read as float4 (or one float)");
  __shared__ float patch[kFaChunk][kImages];
  __shared__ __align__(16) float weights[kFaChunk][kFilters];
  __shared__ int rowOffsets[kFaChunk];  // patch_offset of the chunk's rows, computed once per chunk

  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kFaThreadsX + tx;
  const int module = blockIdx.x / imageTiles, image0 = blockIdx.x % imageTiles * kImages;
  const int group = blockIdx.y / filterTilesPerGroup;
  const int groupFilter0 = blockIdx.y % filterTilesPerGroup * kFilters;
  const int filter0 = group * p.filtersPerGroup + groupFilter0;
  const int tileFilters = min(kFilters, p.filtersPerGroup - groupFilter0);
  const int my = module / p.modulesX, mx = module % p.modulesX;
  const int channel0 = group * p.filterChannels;
  const int K = p.filterRowsPerModule;
  const float* moduleFilters = filters + (p.local ? int64_t(module) * K * p.numFilters : 0) + filter0;
  const int tileImages = min(kImages, p.numImages - image0);

  float acc[FPT][IPT] = {};
  for (int k0 = 0; k0 < K; k0 += kFaChunk) {
    if (tid < kFaChunk) rowOffsets[tid] = patch_offset(p, k0 + tid, channel0, my, mx);
    __syncthreads();
    for (int kk = ty; kk < kFaChunk; kk += kFaThreadsY) {  // a warp per row
      int offset = rowOffsets[kk];
      stage_row<kImages>(patch[kk], images + max(offset, 0) + image0, offset >= 0 ? tileImages : 0, tx);
    }
    for (int e = tid; e < kFaChunk * kFilters; e += kThreadsPerBlock) {
      int kk = e / kFilters, ff = e % kFilters;
      weights[kk][ff] = k0 + kk < K && ff < tileFilters ? moduleFilters[int64_t(k0 + kk) * p.numFilters + ff] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kFaChunk; ++kk) {
      float img[IPT];
#pragma unroll
      for (int i = 0; i < IPT; ++i) img[i] = patch[kk][tx + i * kFaThreadsX];
      if constexpr (FPT % 4 == 0) {
        // Each float4 used as soon as it is loaded: loading all FPT first took 65 registers at
        // IPT 4, FPT 8, one past the 64 that let 8 blocks share an SM.
#pragma unroll
        for (int j = 0; j < FPT; j += 4) {
          const float4 w = *reinterpret_cast<const float4*>(&weights[kk][ty * FPT + j]);
#pragma unroll
          for (int i = 0; i < IPT; ++i) {
            acc[j][i] += w.x * img[i];
            acc[j + 1][i] += w.y * img[i];
            acc[j + 2][i] += w.z * img[i];
            acc[j + 3][i] += w.w * img[i];
          }
        }
      } else {
        const float w = weights[kk][ty];
#pragma unroll
        for (int i = 0; i < IPT; ++i) acc[0][i] += w * img[i];
      }
    }
    __syncthreads();
  }
  const int modules = p.modulesY * p.modulesX;
#pragma unroll
  for (int j = 0; j < FPT; ++j) {
    int ff = ty * FPT + j;
    if (ff >= tileFilters) continue;
    float* out = targets + (int64_t(filter0 + ff) * modules + module) * p.numImages;
#pragma unroll
    for (int i = 0; i < IPT; ++i) {
      int n = image0 + tx + i * kFaThreadsX;
      if (n < p.numImages) store_scaled(out[n], acc[j][i], sT, sO);
    }
  }
}

// ---- imgActs ---------------------------------------------------------------------------

constexpr int kIaThreadsX = 32, kIaThreadsY = 4, kIaChunk = 16;

template <int IPT, int CPT>
__global__ void __launch_bounds__(kIaThreadsX * kIaThreadsY)
img_acts_kernel(const float* hidActs, const float* filters, float* targets, ConvParams p, int imageTiles,
                int channelTilesPerGroup, float sT, float sO) {
  constexpr int kImages = kIaThreadsX * IPT, kChannels = kIaThreadsY * CPT;
  constexpr int kThreadsPerBlock = kIaThreadsX * kIaThreadsY;
  __shared__ float grads[kIaChunk][kImages];
  // The weights are stored with lanes (f, c) = (lane % 16, c0 + lane / 16) at word
  // f * pitch + c: a pitch of 2 * odd (6 or 18) puts the 32 lanes in 32 distinct banks.
  constexpr int kWeightsPitch = kChannels + 2;
  static_assert(kWeightsPitch % 4 == 2, "pitch must be 2 * odd");
  __shared__ float weights[kIaChunk][kWeightsPitch];

  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kIaThreadsX + tx;
  const int pixel = blockIdx.x / imageTiles, image0 = blockIdx.x % imageTiles * kImages;
  const int y = pixel / p.imgSizeX, x = pixel % p.imgSizeX;
  const int group = blockIdx.y / channelTilesPerGroup;
  const int groupChannel0 = blockIdx.y % channelTilesPerGroup * kChannels;
  const int tileChannels = min(kChannels, p.filterChannels - groupChannel0);
  const int groupFilter0 = group * p.filtersPerGroup;
  const int K = p.filterRowsPerModule, modules = p.modulesY * p.modulesX;
  const int tileImages = min(kImages, p.numImages - image0);

  // Modules whose rows my * stride - padding + [0, filterSize) hold y (columns likewise).
  const int myFirst = max(0, ceil_div(y + p.padding - p.filterSize + 1, p.stride));
  const int myLast = min(p.modulesY - 1, floor_div(y + p.padding, p.stride));
  const int mxFirst = max(0, ceil_div(x + p.padding - p.filterSize + 1, p.stride));
  const int mxLast = min(p.modulesX - 1, floor_div(x + p.padding, p.stride));

  float acc[CPT][IPT] = {};
  for (int my = myFirst; my <= myLast; ++my) {
    for (int mx = mxFirst; mx <= mxLast; ++mx) {
      const int module = my * p.modulesX + mx;
      const int filterPixel = (y - (my * p.stride - p.padding)) * p.filterSize + x - (mx * p.stride - p.padding);
      // Row of (channel groupChannel0, this filter pixel) in the module's filter bank.
      const float* rowFilters = filters + (int64_t(p.local ? module : 0) * K + int64_t(groupChannel0) * p.filterPixels +
                                           filterPixel) * p.numFilters + groupFilter0;
      for (int f0 = 0; f0 < p.filtersPerGroup; f0 += kIaChunk) {
        for (int ff = ty; ff < kIaChunk; ff += kIaThreadsY) {  // a warp per filter
          const bool valid = f0 + ff < p.filtersPerGroup;
          const int64_t row = valid ? (int64_t(groupFilter0 + f0 + ff) * modules + module) * p.numImages + image0 : 0;
          stage_row<kImages>(grads[ff], hidActs + row, valid ? tileImages : 0, tx);
        }
        for (int e = tid; e < kIaChunk * kChannels; e += kThreadsPerBlock) {
          int cc = e / kIaChunk, ff = e % kIaChunk;
          weights[ff][cc] = f0 + ff < p.filtersPerGroup && cc < tileChannels
                                ? rowFilters[int64_t(cc) * p.filterPixels * p.numFilters + f0 + ff]
                                : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int ff = 0; ff < kIaChunk; ++ff) {
          float g[IPT], w[CPT];
#pragma unroll
          for (int i = 0; i < IPT; ++i) g[i] = grads[ff][tx + i * kIaThreadsX];
#pragma unroll
          for (int j = 0; j < CPT; ++j) w[j] = weights[ff][ty + j * kIaThreadsY];
#pragma unroll
          for (int j = 0; j < CPT; ++j)
#pragma unroll
            for (int i = 0; i < IPT; ++i) acc[j][i] += w[j] * g[i];
        }
        __syncthreads();
      }
    }
  }
  const int channel0 = group * p.filterChannels + groupChannel0;
#pragma unroll
  for (int j = 0; j < CPT; ++j) {
    int cc = ty + j * kIaThreadsY;
    if (cc >= tileChannels) continue;
    float* out = targets + ((int64_t(channel0 + cc) * p.imgSizeY + y) * p.imgSizeX + x) * p.numImages;
#pragma unroll
    for (int i = 0; i < IPT; ++i) {
      int n = image0 + tx + i * kIaThreadsX;
      if (n < p.numImages) store_scaled(out[n], acc[j][i], sT, sO);
    }
  }
}

// imgActs for few channels per group (conv, filterChannels <= 4, filterSize <= 16: a first
// layer). 32 x 8 threads; a block computes a run of 8 pixels of one image row (a warp each),
// 32 * IPT images and all C channels of a group. The pixels share most of their modules, so
// the block stages each module's hidActs (16 filters x images) once for all of them; the
// weights of a module row (C x filterSize x 16 filters) are staged once per row and chunk and
// read as broadcasts. Grid (imgSizeY * pixelTiles * imageTiles, groups). (Kernel lab version
// 2: a third of version 1's modelled H100 time on AlexNet's conv1.)
constexpr int kFewThreadsX = 32, kFewPixels = 8, kFewChunk = 16, kFewMaxFilterSize = 16;

template <int IPT, int C>
// (At least 2 resident blocks: up to 128 registers, so that no instantiation spills.)
__global__ void __launch_bounds__(kFewThreadsX * kFewPixels, 2)
img_acts_few_channels_kernel(const float* hidActs, const float* filters, float* targets, ConvParams p,
                             int imageTiles, int pixelTiles, float sT, float sO) {
  constexpr int kImages = kFewThreadsX * IPT, kThreadsPerBlock = kFewThreadsX * kFewPixels;
  __shared__ float grads[kFewChunk][kImages];
  // Rows c * filterSize + fx, dense, so that a warp's staging stores hit 32 distinct banks.
  __shared__ float weights[C * kFewMaxFilterSize][kFewChunk];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kFewThreadsX + tx;
  const int image0 = blockIdx.x % imageTiles * kImages, tile = blockIdx.x / imageTiles;
  const int y = tile / pixelTiles, x0 = tile % pixelTiles * kFewPixels, x = x0 + ty;
  const int group = blockIdx.y, groupFilter0 = group * p.filtersPerGroup, modules = p.modulesY * p.modulesX;
  const int xLast = min(p.imgSizeX - 1, x0 + kFewPixels - 1);
  const int tileImages = min(kImages, p.numImages - image0);
  const int myFirst = max(0, ceil_div(y + p.padding - p.filterSize + 1, p.stride));
  const int myLast = min(p.modulesY - 1, floor_div(y + p.padding, p.stride));
  // Module columns of the block's pixels, and of this thread's pixel (none past the image).
  const int mxFirst = max(0, ceil_div(x0 + p.padding - p.filterSize + 1, p.stride));
  const int mxLast = min(p.modulesX - 1, floor_div(xLast + p.padding, p.stride));
  const int mxMine0 = max(0, ceil_div(x + p.padding - p.filterSize + 1, p.stride));
  const int mxMine1 = x < p.imgSizeX ? min(p.modulesX - 1, floor_div(x + p.padding, p.stride)) : -1;

  float acc[C][IPT] = {};
  for (int my = myFirst; my <= myLast; ++my) {
    const int fy = y + p.padding - my * p.stride;
    for (int f0 = 0; f0 < p.filtersPerGroup; f0 += kFewChunk) {
      // Consecutive threads read consecutive filters of one filter row.
      for (int e = tid; e < C * p.filterSize * kFewChunk; e += kThreadsPerBlock) {
        int ff = e % kFewChunk, fx = e / kFewChunk % p.filterSize, c = e / (kFewChunk * p.filterSize);
        weights[e / kFewChunk][ff] = f0 + ff < p.filtersPerGroup
                                 ? filters[(int64_t(c) * p.filterPixels + fy * p.filterSize + fx) * p.numFilters +
                                           groupFilter0 + f0 + ff]
                                 : 0.f;
      }
      for (int mx = mxFirst; mx <= mxLast; ++mx) {
        const int module = my * p.modulesX + mx;
        for (int ff = ty; ff < kFewChunk; ff += kFewPixels) {  // a warp per filter
          const bool valid = f0 + ff < p.filtersPerGroup;
          const int64_t row = valid ? (int64_t(groupFilter0 + f0 + ff) * modules + module) * p.numImages + image0 : 0;
          stage_row<kImages>(grads[ff], hidActs + row, valid ? tileImages : 0, tx);
        }
        __syncthreads();
        if (mx >= mxMine0 && mx <= mxMine1) {  // uniform over the warp: one pixel
          const int fx = x + p.padding - mx * p.stride;
#pragma unroll
          for (int ff = 0; ff < kFewChunk; ++ff) {
            float g[IPT], w[C];
#pragma unroll
            for (int i = 0; i < IPT; ++i) g[i] = grads[ff][tx + i * kFewThreadsX];
#pragma unroll
            for (int c = 0; c < C; ++c) w[c] = weights[c * p.filterSize + fx][ff];
#pragma unroll
            for (int c = 0; c < C; ++c)
#pragma unroll
              for (int i = 0; i < IPT; ++i) acc[c][i] += w[c] * g[i];
          }
        }
        __syncthreads();
      }
    }
  }
  if (x >= p.imgSizeX) return;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    float* out = targets + ((int64_t(group * C + c) * p.imgSizeY + y) * p.imgSizeX + x) * p.numImages;
#pragma unroll
    for (int i = 0; i < IPT; ++i) {
      int n = image0 + tx + i * kFewThreadsX;
      if (n < p.numImages) store_scaled(out[n], acc[c][i], sT, sO);
    }
  }
}

// ---- weightActs ------------------------------------------------------------------------

constexpr int kWaThreads = 16, kWaRowsPerThread = 4, kWaRows = kWaThreads * kWaRowsPerThread, kWaImages = 32;
// Images staged at once: the step's 32 and the aligned window after them (see stage_window).
constexpr int kWaRing = 2 * kWaImages;
static_assert((kWaRing & (kWaRing - 1)) == 0, "the ring is indexed with a mask");
// Ring tile pitch: rows of whole float4s, and 4 banks from one row to the next, so that the 8
// rows a quarter warp reads at one image cover the 32 banks once.
constexpr int kWaPitch = kWaRing + 4;
static_assert(kWaPitch % 4 == 0 && kWaImages % 4 == 0, "ring rows are read as float4 from multiples of 4");

// Stores window `w` of a row of images (or hidActs) into row `column` of a row-major ring
// tile of kWaRing images (image n in ring column n mod kWaRing), with the 32 lanes of one
// warp. Lane l takes image n = 32 w + l - shift, shift being the row's offset from a 32-byte
// boundary: each load touches only the sectors that hold the row, at any batch size (lanes
// outside the row read an element of it: no extra sector). Windows w and w + 1 together hold
// the images of reduction step w. Images from numImages on, and all of a null row's, are zeros.
// Every lane stores, so that the warp's stores stay one request each: a lane before the row's
// start (n < 0, window 0) writes the ring row of image n + kWaRing, which window 2 overwrites
// before step 1 reads it; one past the steps' end (n >= staged, the last window) writes that
// of step steps - 2, already summed. The last window is skipped when it holds no image of the
// steps (an aligned row).
__device__ __forceinline__ void stage_window(float (*ring)[kWaPitch], int column, const float* row, int w, int numImages,
                                             int staged, int lane) {
  const int shift = row ? int(reinterpret_cast<uintptr_t>(row) / sizeof(float) % 8) : 0;
  const int n0 = w * kWaImages - shift, n = n0 + lane;
  if (n0 >= staged) return;  // uniform over the warp
  float v = 0.f;
  if (row && n0 < numImages) v = row[min(max(n, 0), numImages - 1)];  // uniform over the warp
  ring[column][n & (kWaRing - 1)] = n >= 0 && n < numImages ? v : 0.f;
}

// Sums over modules [moduleBegin, moduleEnd) (chunk blockIdx.x / rowTiles of `modulesPerChunk`
// for conv, the single module blockIdx.x / rowTiles for local). With `partials` the block
// writes its unscaled sum to partials[chunk]; without, it stores into targets.
// (At least 2 resident blocks: leaves room for up to 128 registers, so the accumulators and
// patch offsets do not spill.)
template <int FPT>
__global__ void __launch_bounds__(kWaThreads * kWaThreads, 2)
weight_acts_kernel(const float* images, const float* hidActs, float* targets, float* partials, ConvParams p,
                   int rowTiles, int filterTilesPerGroup, int modulesPerChunk, float sT, float sO) {
  constexpr int kFilters = kWaThreads * FPT, kThreadsPerBlock = kWaThreads * kWaThreads;
  constexpr int kWarps = kThreadsPerBlock / 32, kPatchLoads = kWaRows / kWarps;
  // Row-major ring tiles: a warp's staging stores fill 32 consecutive words of one row.
  __shared__ __align__(16) float patch[kWaRows][kWaPitch];
  __shared__ __align__(16) float grads[kFilters][kWaPitch];

  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kWaThreads + tx;
  const int row0 = blockIdx.x % rowTiles * kWaRows, chunk = blockIdx.x / rowTiles;
  const int group = blockIdx.y / filterTilesPerGroup;
  const int groupFilter0 = blockIdx.y % filterTilesPerGroup * kFilters;
  const int filter0 = group * p.filtersPerGroup + groupFilter0;
  const int tileFilters = min(kFilters, p.filtersPerGroup - groupFilter0);
  const int channel0 = group * p.filterChannels;
  const int K = p.filterRowsPerModule, modules = p.modulesY * p.modulesX;
  const int moduleBegin = p.local ? chunk : chunk * modulesPerChunk;
  const int moduleEnd = p.local ? chunk + 1 : min(modules, moduleBegin + modulesPerChunk);
  const int steps = ceil_div(p.numImages, kWaImages), staged = steps * kWaImages;

  // A warp stages patch rows warp + r * kWarps and filters warp + r * kWarps, a lane an image.
  const int lane = tid % 32, warp = tid / 32;

  float acc[kWaRowsPerThread][FPT] = {};
  for (int module = moduleBegin; module < moduleEnd; ++module) {
    const int my = module / p.modulesX, mx = module % p.modulesX;
    const float* rows[kPatchLoads];
#pragma unroll
    for (int r = 0; r < kPatchLoads; ++r) {
      int offset = patch_offset(p, row0 + warp + r * kWarps, channel0, my, mx);
      rows[r] = offset >= 0 ? images + offset : nullptr;
    }
    const float* moduleGrads = hidActs + (int64_t(filter0) * modules + module) * p.numImages;
    auto stage = [&](int w) {
#pragma unroll
      for (int r = 0; r < kPatchLoads; ++r) stage_window(patch, warp + r * kWarps, rows[r], w, p.numImages, staged, lane);
      for (int ff = warp; ff < kFilters; ff += kWarps)
        stage_window(grads, ff, ff < tileFilters ? moduleGrads + int64_t(ff) * modules * p.numImages : nullptr, w,
                     p.numImages, staged, lane);
    };
    stage(0);
    for (int step = 0; step < steps; ++step) {
      stage(step + 1);
      __syncthreads();
      const int base = step * kWaImages % kWaRing;
#pragma unroll 2
      for (int nn = base; nn < base + kWaImages; nn += 4) {
        // 4 images per float4: a thread's rows (broadcast over the quarter warp), then each
        // filter's hidActs, used as soon as loaded (fewer live registers).
        float4 img[kWaRowsPerThread];
#pragma unroll
        for (int i = 0; i < kWaRowsPerThread; ++i) img[i] = *reinterpret_cast<const float4*>(&patch[ty + i * kWaThreads][nn]);
#pragma unroll
        for (int j = 0; j < FPT; ++j) {
          const float4 g = *reinterpret_cast<const float4*>(&grads[tx + j * kWaThreads][nn]);
#pragma unroll
          for (int i = 0; i < kWaRowsPerThread; ++i) {
            acc[i][j] += img[i].x * g.x;
            acc[i][j] += img[i].y * g.y;
            acc[i][j] += img[i].z * g.z;
            acc[i][j] += img[i].w * g.w;
          }
        }
      }
      __syncthreads();
    }
  }
  const int64_t rowBase = p.local ? int64_t(chunk) * K : 0;
#pragma unroll
  for (int i = 0; i < kWaRowsPerThread; ++i) {
    int k = row0 + ty + i * kWaThreads;
    if (k >= K) continue;
#pragma unroll
    for (int j = 0; j < FPT; ++j) {
      int ff = tx + j * kWaThreads;
      if (ff >= tileFilters) continue;
      int64_t o = (rowBase + k) * p.numFilters + filter0 + ff;
      if (partials) partials[int64_t(chunk) * K * p.numFilters + o] = acc[i][j];
      else store_scaled(targets[o], acc[i][j], sT, sO);
    }
  }
}

// ---- host side -------------------------------------------------------------------------

// Images per thread: as many 32-image columns as the batch fills (up to 4).
int images_per_thread(int numImages) { return numImages > 64 ? 4 : numImages > 32 ? 2 : 1; }

void check_conv_sizes(const Tensor& images, const Tensor& hidActs, const Tensor& filters) {
  check_int_indexable(images, "images");
  check_int_indexable(hidActs, "hidActs");
  check_int_indexable(filters, "filters");
}

template <int IPT, int FPT>
void launch_filter_acts(const Tensor& images, const Tensor& filters, Tensor& targets, const ConvParams& p,
                        int groups, float sT, float sO) {
  int imageTiles = ceil_div_host(p.numImages, kFaThreadsX * IPT);
  int filterTiles = ceil_div_host(p.filtersPerGroup, kFaThreadsY * FPT);
  check_grid_yz(int64_t(groups) * filterTiles, "filterActs (filter tiles)");
  dim3 grid(unsigned(int64_t(p.modulesY) * p.modulesX * imageTiles), unsigned(groups * filterTiles));
  filter_acts_kernel<IPT, FPT><<<grid, dim3(kFaThreadsX, kFaThreadsY), 0, stream()>>>(
      images.data(), filters.data(), targets.data(), p, imageTiles, filterTiles, sT, sO);
  CCN_CUDA_CHECK_LAUNCH("filter_acts_kernel");
}

template <int FPT>
void filter_acts_for_images(int ipt, const Tensor& images, const Tensor& filters, Tensor& targets,
                            const ConvParams& p, int groups, float sT, float sO) {
  if (ipt == 4) launch_filter_acts<4, FPT>(images, filters, targets, p, groups, sT, sO);
  else if (ipt == 2) launch_filter_acts<2, FPT>(images, filters, targets, p, groups, sT, sO);
  else launch_filter_acts<1, FPT>(images, filters, targets, p, groups, sT, sO);
}

template <int IPT, int CPT>
void launch_img_acts(const Tensor& hidActs, const Tensor& filters, Tensor& targets, const ConvParams& p, int groups,
                     float sT, float sO) {
  int imageTiles = ceil_div_host(p.numImages, kIaThreadsX * IPT);
  int channelTiles = ceil_div_host(p.filterChannels, kIaThreadsY * CPT);
  check_grid_yz(int64_t(groups) * channelTiles, "imgActs (channel tiles)");
  dim3 grid(unsigned(int64_t(p.imgSizeY) * p.imgSizeX * imageTiles), unsigned(groups * channelTiles));
  img_acts_kernel<IPT, CPT><<<grid, dim3(kIaThreadsX, kIaThreadsY), 0, stream()>>>(
      hidActs.data(), filters.data(), targets.data(), p, imageTiles, channelTiles, sT, sO);
  CCN_CUDA_CHECK_LAUNCH("img_acts_kernel");
}

template <int CPT>
void img_acts_for_images(int ipt, const Tensor& hidActs, const Tensor& filters, Tensor& targets,
                         const ConvParams& p, int groups, float sT, float sO) {
  if (ipt == 4) launch_img_acts<4, CPT>(hidActs, filters, targets, p, groups, sT, sO);
  else if (ipt == 2) launch_img_acts<2, CPT>(hidActs, filters, targets, p, groups, sT, sO);
  else launch_img_acts<1, CPT>(hidActs, filters, targets, p, groups, sT, sO);
}

template <int IPT, int C>
void launch_img_acts_few_channels(const Tensor& hidActs, const Tensor& filters, Tensor& targets, const ConvParams& p,
                                  int groups, float sT, float sO) {
  int imageTiles = ceil_div_host(p.numImages, kFewThreadsX * IPT);
  int pixelTiles = ceil_div_host(p.imgSizeX, kFewPixels);
  check_grid_yz(groups, "imgActs (groups)");
  dim3 grid(unsigned(int64_t(p.imgSizeY) * pixelTiles * imageTiles), unsigned(groups));
  img_acts_few_channels_kernel<IPT, C><<<grid, dim3(kFewThreadsX, kFewPixels), 0, stream()>>>(
      hidActs.data(), filters.data(), targets.data(), p, imageTiles, pixelTiles, sT, sO);
  CCN_CUDA_CHECK_LAUNCH("img_acts_few_channels_kernel");
}

template <int IPT>
void img_acts_few_channels(const Tensor& hidActs, const Tensor& filters, Tensor& targets, const ConvParams& p,
                           int groups, float sT, float sO) {
  switch (p.filterChannels) {
    case 1: launch_img_acts_few_channels<IPT, 1>(hidActs, filters, targets, p, groups, sT, sO); break;
    case 2: launch_img_acts_few_channels<IPT, 2>(hidActs, filters, targets, p, groups, sT, sO); break;
    case 3: launch_img_acts_few_channels<IPT, 3>(hidActs, filters, targets, p, groups, sT, sO); break;
    default: launch_img_acts_few_channels<IPT, 4>(hidActs, filters, targets, p, groups, sT, sO); break;
  }
}

// Thread blocks weightActs aims for, so that even a layer with few filter weights fills the GPU.
constexpr int kWaTargetBlocks = 512;

template <int FPT>
void launch_weight_acts(const Tensor& images, const Tensor& hidActs, Tensor& targets, const ConvParams& p,
                        int groups, float sT, float sO) {
  int rowTiles = ceil_div_host(p.filterRowsPerModule, kWaRows);
  int filterTiles = ceil_div_host(p.filtersPerGroup, kWaThreads * FPT);
  check_grid_yz(int64_t(groups) * filterTiles, "weightActs (filter tiles)");
  int modules = p.modulesY * p.modulesX;
  int64_t tiles = int64_t(rowTiles) * groups * filterTiles;
  int chunks = p.local ? modules : static_cast<int>(std::min<int64_t>(modules, ceil_div_host(kWaTargetBlocks, tiles)));
  int modulesPerChunk = p.local ? 1 : ceil_div_host(modules, chunks);
  if (!p.local) chunks = ceil_div_host(modules, modulesPerChunk);
  int64_t size = targets.numel();
  float* partials = !p.local && chunks > 1 ? workspace(targets.device(), chunks * size) : nullptr;
  dim3 grid(unsigned(int64_t(rowTiles) * chunks), unsigned(groups * filterTiles));
  weight_acts_kernel<FPT><<<grid, dim3(kWaThreads, kWaThreads), 0, stream()>>>(
      images.data(), hidActs.data(), targets.data(), partials, p, rowTiles, filterTiles, modulesPerChunk, sT, sO);
  CCN_CUDA_CHECK_LAUNCH("weight_acts_kernel");
  if (partials) sum_chunks(partials, chunks, targets.data(), size, sT, sO);
}

}  // namespace

void filterActs(const Tensor& images, const Tensor& filters, Tensor& targets, const ConvGeometry& g,
                float scaleTargets, float scaleOutput) {
  check_conv_sizes(images, targets, filters);
  if (targets.numel() == 0) return;
  ConvParams p = conv_params(g, static_cast<int>(images.cols()));
  set_device(targets);
  int ipt = images_per_thread(p.numImages);
  if (p.filtersPerGroup > 16) filter_acts_for_images<8>(ipt, images, filters, targets, p, g.groups, scaleTargets, scaleOutput);
  else if (p.filtersPerGroup > 4) filter_acts_for_images<4>(ipt, images, filters, targets, p, g.groups, scaleTargets, scaleOutput);
  else filter_acts_for_images<1>(ipt, images, filters, targets, p, g.groups, scaleTargets, scaleOutput);
}

void imgActs(const Tensor& hidActs, const Tensor& filters, Tensor& targets, const ConvGeometry& g,
             float scaleTargets, float scaleOutput) {
  check_conv_sizes(targets, hidActs, filters);
  if (targets.numel() == 0) return;
  ConvParams p = conv_params(g, static_cast<int>(targets.cols()));
  set_device(targets);
  int ipt = images_per_thread(p.numImages);
  if (!p.local && p.filterChannels <= 4 && p.filterSize <= kFewMaxFilterSize) {
    if (ipt == 4) img_acts_few_channels<4>(hidActs, filters, targets, p, g.groups, scaleTargets, scaleOutput);
    else if (ipt == 2) img_acts_few_channels<2>(hidActs, filters, targets, p, g.groups, scaleTargets, scaleOutput);
    else img_acts_few_channels<1>(hidActs, filters, targets, p, g.groups, scaleTargets, scaleOutput);
  } else if (p.filterChannels > 4) img_acts_for_images<4>(ipt, hidActs, filters, targets, p, g.groups, scaleTargets, scaleOutput);
  else img_acts_for_images<1>(ipt, hidActs, filters, targets, p, g.groups, scaleTargets, scaleOutput);
}

void weightActs(const Tensor& images, const Tensor& hidActs, Tensor& targets, const ConvGeometry& g,
                float scaleTargets, float scaleOutput) {
  check_conv_sizes(images, hidActs, targets);
  if (targets.numel() == 0) return;
  ConvParams p = conv_params(g, static_cast<int>(images.cols()));
  set_device(targets);
  if (p.filtersPerGroup > 32) launch_weight_acts<4>(images, hidActs, targets, p, g.groups, scaleTargets, scaleOutput);
  else if (p.filtersPerGroup > 16) launch_weight_acts<2>(images, hidActs, targets, p, g.groups, scaleTargets, scaleOutput);
  else launch_weight_acts<1>(images, hidActs, targets, p, g.groups, scaleTargets, scaleOutput);
}

}  // namespace ccn::cuda
