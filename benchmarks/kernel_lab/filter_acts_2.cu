// filterActs version 2: version 1 reading its weights as float4 broadcasts. Thread (tx, ty)
// takes the FPT consecutive filters ty * FPT + j (FPT >= 4), so that the warp (one ty) reads
// each step's FPT weights as FPT / 4 float4 loads of one address: IPT + FPT / 4 = 6 shared
// loads per 32 FMAs at IPT 4, FPT 8 (12 before). The weight tile is 16-byte aligned, and its
// rows (4 * FPT floats) keep every float4 on a 16-byte boundary; FPT 1 stays scalar. Each
// float4 is used as soon as it is loaded (loading all FPT weights first took 65 registers at
// IPT 4, FPT 8: one past the 64 that allow 8 blocks per SM).
#include "filter_acts.cuh"

namespace {
constexpr int kFaThreadsX = 32, kFaThreadsY = 4, kFaChunk = 16;

template <int IPT, int FPT>
__global__ void __launch_bounds__(kFaThreadsX * kFaThreadsY)
filter_acts_v2(const float* images, const float* filters, float* targets, LabConv p, int imageTiles,
               int filterTilesPerGroup) {
  constexpr int kImages = kFaThreadsX * IPT, kFilters = kFaThreadsY * FPT;
  constexpr int kThreadsPerBlock = kFaThreadsX * kFaThreadsY;
  __shared__ float patch[kFaChunk][kImages];
  __shared__ __align__(16) float weights[kFaChunk][kFilters];
  __shared__ int rowOffsets[kFaChunk];

  const int fpg = p.numFilters / p.groups;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kFaThreadsX + tx;
  const int module = blockIdx.x / imageTiles, image0 = blockIdx.x % imageTiles * kImages;
  const int group = blockIdx.y / filterTilesPerGroup;
  const int groupFilter0 = blockIdx.y % filterTilesPerGroup * kFilters;
  const int filter0 = group * fpg + groupFilter0;
  const int tileFilters = min(kFilters, fpg - groupFilter0);
  const int my = module / p.modulesX, mx = module % p.modulesX;
  const int channel0 = group * p.filterChannels();
  const int K = p.filterChannels() * p.filterPixels();
  const float* moduleFilters = filters + filter0;
  const int tileImages = min(kImages, p.numImages - image0);

  float acc[FPT][IPT] = {};
  for (int k0 = 0; k0 < K; k0 += kFaChunk) {
    if (tid < kFaChunk) rowOffsets[tid] = patch_offset(p, k0 + tid, channel0, my, mx);
    __syncthreads();
    for (int kk = ty; kk < kFaChunk; kk += kFaThreadsY) {
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
#pragma unroll
        for (int j = 0; j < FPT; j += 4) {
          const float4 v = *reinterpret_cast<const float4*>(&weights[kk][ty * FPT + j]);
#pragma unroll
          for (int i = 0; i < IPT; ++i) {
            acc[j][i] += v.x * img[i];
            acc[j + 1][i] += v.y * img[i];
            acc[j + 2][i] += v.z * img[i];
            acc[j + 3][i] += v.w * img[i];
          }
        }
      } else {
#pragma unroll
        for (int j = 0; j < FPT; ++j)
#pragma unroll
          for (int i = 0; i < IPT; ++i) acc[j][i] += weights[kk][ty * FPT + j] * img[i];
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
      if (n < p.numImages) out[n] = acc[j][i];
    }
  }
}

template <int IPT, int FPT>
void filter_acts_launch(const float* images, const float* filters, float* out, const LabConv& g, int imageTiles,
                        int filterTiles) {
  dim3 grid(unsigned(g.modulesY * g.modulesX * imageTiles), unsigned(g.groups * filterTiles));
  filter_acts_v2<IPT, FPT><<<grid, dim3(kFaThreadsX, kFaThreadsY)>>>(images, filters, out, g, imageTiles, filterTiles);
}
}  // namespace

void lab_launch(const float* images, const float* filters, float* out, const LabConv& g) {
  const int fpg = g.numFilters / g.groups;
  if (fpg > 16) filter_acts_images<8>(images, filters, out, g, kFaThreadsX, kFaThreadsY);
  else if (fpg > 4) filter_acts_images<4>(images, filters, out, g, kFaThreadsX, kFaThreadsY);
  else filter_acts_images<1>(images, filters, out, g, kFaThreadsX, kFaThreadsY);
}
