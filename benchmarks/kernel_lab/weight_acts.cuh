// The host side common to the lab's weightActs versions: the engine's split of a conv layer's
// modules into chunks (so that a layer with few filter weights still fills the GPU), whose
// partial sums a second kernel adds in chunk order. A version defines
// weight_acts_launch<FPT>(images, hidActs, out, partials, g, rowTiles, filterTiles, modulesPerChunk)
// and its tile sizes; lab_launch here picks FPT and the chunks.
#pragma once
#include "lab.cuh"

namespace {
__global__ void lab_sum_chunks(const float* partials, int chunks, float* out, int size) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= size) return;
  float s = 0.f;
  for (int c = 0; c < chunks; ++c) s += partials[int64_t(c) * size + i];
  out[i] = s;
}

template <int FPT>
void weight_acts_launch(const float* images, const float* hid, float* out, float* partials, const LabConv& g,
                        int rowTiles, int filterTiles, int modulesPerChunk);

template <int FPT>
void weight_acts_chunks(const float* images, const float* hid, float* out, const LabConv& g, int rows, int filtersPerTile) {
  const int fpg = g.numFilters / g.groups, modules = g.modulesY * g.modulesX;
  const int K = g.filterChannels() * g.filterPixels(), size = K * g.numFilters;
  int rowTiles = lab_ceil_div_host(K, rows), filterTiles = lab_ceil_div_host(fpg, filtersPerTile * FPT);
  int64_t tiles = int64_t(rowTiles) * g.groups * filterTiles;
  int chunks = int(std::min<int64_t>(modules, lab_ceil_div_host(512, tiles)));
  int modulesPerChunk = lab_ceil_div_host(modules, chunks);
  chunks = lab_ceil_div_host(modules, modulesPerChunk);
  float* partials = nullptr;
  if (chunks > 1) cudaMalloc(reinterpret_cast<void**>(&partials), sizeof(float) * size_t(chunks) * size);
  weight_acts_launch<FPT>(images, hid, out, partials, g, rowTiles, filterTiles, modulesPerChunk);
  if (partials) {
    lab_sum_chunks<<<lab_ceil_div_host(size, 256), 256>>>(partials, chunks, out, size);
    cudaFree(partials);
  }
}
}  // namespace
