// weightActs version 3: version 2 with row-major tiles read as float4. The ring tiles hold a
// row (images, or a filter's hidActs) per tile row, 64 images wide (pitch 68: a quarter warp
// reading 8 rows' float4 at one image covers the 32 banks once), so that a thread reads 4
// images of a row per float4: per 4 images, 4 patch float4 (its rows, broadcast over a
// quarter warp) and FPT hidActs float4 for 4 x FPT x 4 FMAs, 8 shared loads per 64 FMAs at
// FPT 4 (32 before). Each hidActs float4 is used as soon as it is loaded (fewer live registers).
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
// Images staged at once: the step's 32 and the aligned window after them (see stage_window).
constexpr int kWaRing = 2 * kWaImages;
static_assert((kWaRing & (kWaRing - 1)) == 0, "the ring is indexed with a mask");
// Tile pitch: 16-byte rows (float4 reads), and 4 banks between rows (8 rows of a quarter warp
// in distinct banks).
constexpr int kWaPitch = kWaRing + 4;

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
weight_acts_v3(const float* images, const float* hidActs, float* targets, float* partials, LabConv p,
               int rowTiles, int filterTilesPerGroup, int modulesPerChunk) {
  constexpr int kFilters = kWaThreads * FPT, kThreadsPerBlock = kWaThreads * kWaThreads;
  constexpr int kWarps = kThreadsPerBlock / 32, kPatchLoads = kWaRows / kWarps;
  // Row-major ring tiles.
  __shared__ __align__(16) float patch[kWaRows][kWaPitch];
  __shared__ __align__(16) float grads[kFilters][kWaPitch];

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
  const int steps = lab_ceil_div(p.numImages, kWaImages), staged = steps * kWaImages;

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
  weight_acts_v3<FPT><<<grid, dim3(kWaThreads, kWaThreads)>>>(images, hid, out, partials, g, rowTiles, filterTiles, modulesPerChunk);
}
}  // namespace

bool lab_supports(const LabConv&) { return true; }

void lab_launch(const float* images, const float* hid, float* out, const LabConv& g) {
  const int fpg = g.numFilters / g.groups;
  if (fpg > 32) weight_acts_chunks<4>(images, hid, out, g, kWaRows, kWaThreads);
  else if (fpg > 16) weight_acts_chunks<2>(images, hid, out, g, kWaRows, kWaThreads);
  else weight_acts_chunks<1>(images, hid, out, g, kWaRows, kWaThreads);
}
