// weightActs version 1: the engine's kernel (csrc/cuda/conv.cu) as of this lab's start.
// A block: 64 filter rows x 16 * FPT filters of a group (each thread 4 rows x FPT filters),
// summed over a range of modules and over the images in steps of 32 staged image-major in
// shared memory. A warp loads 32 consecutive images of a row: at an odd batch a row starts at
// any 4-byte offset, and the load spans 5 sectors where 4 would hold it.
#include "weight_acts.cuh"

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

constexpr int kWaThreads = 16, kWaRowsPerThread = 4, kWaRows = kWaThreads * kWaRowsPerThread, kWaImages = 32;

// Sums over modules [moduleBegin, moduleEnd) (chunk blockIdx.x / rowTiles of `modulesPerChunk`
// for conv, the single module blockIdx.x / rowTiles for local). With `partials` the block
// writes its unscaled sum to partials[chunk]; without, it stores into targets.
// (At least 2 resident blocks: leaves room for up to 128 registers, so the accumulators and
// patch offsets do not spill.)
template <int FPT>
__global__ void __launch_bounds__(kWaThreads * kWaThreads, 2)
weight_acts_v1(const float* images, const float* hidActs, float* targets, float* partials, LabConv p,
               int rowTiles, int filterTilesPerGroup, int modulesPerChunk) {
  constexpr int kFilters = kWaThreads * FPT, kThreadsPerBlock = kWaThreads * kWaThreads;
  constexpr int kPatchLoads = kWaRows * kWaImages / kThreadsPerBlock;
  // Image-major tiles; the +1 spreads the transposing stores over the banks.
  __shared__ float patch[kWaImages][kWaRows + 1];
  __shared__ float grads[kWaImages][kFilters + 1];

  const int fpg = p.numFilters / p.groups, K_ = p.filterChannels() * p.filterPixels();
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kWaThreads + tx;
  const int row0 = blockIdx.x % rowTiles * kWaRows, chunk = blockIdx.x / rowTiles;
  const int group = blockIdx.y / filterTilesPerGroup;
  const int groupFilter0 = blockIdx.y % filterTilesPerGroup * kFilters;
  const int filter0 = group * fpg + groupFilter0;
  const int tileFilters = min(kFilters, fpg - groupFilter0);
  const int channel0 = group * p.filterChannels();
  const int K = K_, modules = p.modulesY * p.modulesX;
  const int moduleBegin = chunk * modulesPerChunk;
  const int moduleEnd = min(modules, moduleBegin + modulesPerChunk);

  // Each thread loads patch rows tid / kWaImages + r * (threads / kWaImages), image tid % kWaImages.
  const int loadImage = tid % kWaImages, loadRow = tid / kWaImages;
  constexpr int kRowStride = kThreadsPerBlock / kWaImages;

  float acc[kWaRowsPerThread][FPT] = {};
  for (int module = moduleBegin; module < moduleEnd; ++module) {
    const int my = module / p.modulesX, mx = module % p.modulesX;
    int offsets[kPatchLoads];
#pragma unroll
    for (int r = 0; r < kPatchLoads; ++r) offsets[r] = patch_offset(p, row0 + loadRow + r * kRowStride, channel0, my, mx);
    for (int n0 = 0; n0 < p.numImages; n0 += kWaImages) {
      const int n = n0 + loadImage;
#pragma unroll
      for (int r = 0; r < kPatchLoads; ++r)
        patch[loadImage][loadRow + r * kRowStride] = offsets[r] >= 0 && n < p.numImages ? images[offsets[r] + n] : 0.f;
      for (int e = tid; e < kFilters * kWaImages; e += kThreadsPerBlock) {
        int ff = e / kWaImages, nn = e % kWaImages;
        grads[nn][ff] = ff < tileFilters && n0 + nn < p.numImages
                            ? hidActs[(int64_t(filter0 + ff) * modules + module) * p.numImages + n0 + nn]
                            : 0.f;
      }
      __syncthreads();
#pragma unroll 8
      for (int nn = 0; nn < kWaImages; ++nn) {
        float img[kWaRowsPerThread], g[FPT];
#pragma unroll
        for (int i = 0; i < kWaRowsPerThread; ++i) img[i] = patch[nn][ty + i * kWaThreads];
#pragma unroll
        for (int j = 0; j < FPT; ++j) g[j] = grads[nn][tx + j * kWaThreads];
#pragma unroll
        for (int i = 0; i < kWaRowsPerThread; ++i)
#pragma unroll
          for (int j = 0; j < FPT; ++j) acc[i][j] += img[i] * g[j];
      }
      __syncthreads();
    }
  }
  const int64_t rowBase = 0;
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
      else targets[o] = acc[i][j];
    }
  }
}

template <int FPT>
void weight_acts_launch(const float* images, const float* hid, float* out, float* partials, const LabConv& g,
                        int rowTiles, int filterTiles, int modulesPerChunk) {
  int chunks = lab_ceil_div_host(g.modulesY * g.modulesX, modulesPerChunk);
  dim3 grid(unsigned(rowTiles * chunks), unsigned(g.groups * filterTiles));
  weight_acts_v1<FPT><<<grid, dim3(kWaThreads, kWaThreads)>>>(images, hid, out, partials, g, rowTiles, filterTiles, modulesPerChunk);
}
}  // namespace

bool lab_supports(const LabConv&) { return true; }

void lab_launch(const float* images, const float* hid, float* out, const LabConv& g) {
  const int fpg = g.numFilters / g.groups;
  if (fpg > 32) weight_acts_chunks<4>(images, hid, out, g, kWaRows, kWaThreads);
  else if (fpg > 16) weight_acts_chunks<2>(images, hid, out, g, kWaRows, kWaThreads);
  else weight_acts_chunks<1>(images, hid, out, g, kWaRows, kWaThreads);
}
