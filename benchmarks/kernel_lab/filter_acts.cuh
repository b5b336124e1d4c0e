// The part common to the lab's filterActs versions (as in the engine's conv.cu): the patch
// offsets, the aligned row staging and the host side. A version defines
// filter_acts_launch<IPT, FPT>(images, filters, out, g, imageTiles, filterTiles) and kFaThreadsX/Y.
#pragma once
#include "lab.cuh"

namespace {
// Element offset of images[channel0 + c, y, x, 0] for filter row k of module (my, mx), or -1 in
// the padding or past the last row (as in the engine).
__device__ __forceinline__ int patch_offset(const LabConv& p, int k, int channel0, int my, int mx) {
  if (k >= p.filterChannels() * p.filterPixels()) return -1;
  int c = k / p.filterPixels(), pixel = k % p.filterPixels();
  int y = my * p.stride - p.padding + pixel / p.filterSize;
  int x = mx * p.stride - p.padding + pixel % p.filterSize;
  if (y < 0 || y >= p.imgSizeY || x < 0 || x >= p.imgSizeX) return -1;
  return ((channel0 + c) * p.imgSizeY + y) * p.imgSizeX * p.numImages + x * p.numImages;
}

// Copies row[0, count) into tile[0, kWidth) (zeros from count on) with one warp, lanes shifted
// to the row's 32-byte boundary; lanes outside the row read an element of it and store nothing.
template <int kWidth>
__device__ __forceinline__ void stage_row(float* tile, const float* row, int count, int lane) {
  const int shift = count > 0 ? int(reinterpret_cast<uintptr_t>(row) / sizeof(float) % 8) : 0;
  for (int j0 = -shift; j0 < kWidth; j0 += 32) {
    const int j = j0 + lane;
    float v = 0.f;
    if (j0 < count) v = row[min(max(j, 0), count - 1)];
    if (j >= 0 && j < kWidth) tile[j] = j < count ? v : 0.f;
  }
}

template <int IPT, int FPT>
void filter_acts_launch(const float* images, const float* filters, float* out, const LabConv& g, int imageTiles,
                        int filterTiles);

template <int FPT>
void filter_acts_images(const float* images, const float* filters, float* out, const LabConv& g, int threadsX,
                        int threadsY) {
  const int ipt = g.numImages > 64 ? 4 : g.numImages > 32 ? 2 : 1, fpg = g.numFilters / g.groups;
  const int imageTiles = lab_ceil_div_host(g.numImages, threadsX * ipt);
  const int filterTiles = lab_ceil_div_host(fpg, threadsY * FPT);
  if (ipt == 4) filter_acts_launch<4, FPT>(images, filters, out, g, imageTiles, filterTiles);
  else if (ipt == 2) filter_acts_launch<2, FPT>(images, filters, out, g, imageTiles, filterTiles);
  else filter_acts_launch<1, FPT>(images, filters, out, g, imageTiles, filterTiles);
}
}  // namespace

bool lab_supports(const LabConv&) { return true; }
