// imgActs version 1: the engine's kernel (csrc/cuda/conv.cu) as of this lab's start.
// A block: one pixel, 32 * IPT images, 4 * CPT channels of a group; it walks the modules
// covering the pixel and, per module, the group's filters in chunks of 16 staged in shared
// memory. For 3 channels (AlexNet's conv1) a block re-reads the hidActs of ~9 modules per
// pixel, and a quarter of its channel lanes idle.
#include "lab.cuh"

namespace {
constexpr int kThreadsX = 32, kThreadsY = 4, kChunk = 16;

template <int IPT, int CPT>
__global__ void __launch_bounds__(kThreadsX * kThreadsY)
img_acts_v1(const float* hidActs, const float* filters, float* targets, LabConv p, int imageTiles, int channelTiles) {
  constexpr int kImages = kThreadsX * IPT, kChannels = kThreadsY * CPT, kThreads = kThreadsX * kThreadsY;
  constexpr int kPitch = kChannels + 2;
  __shared__ float grads[kChunk][kImages];
  __shared__ float weights[kChunk][kPitch];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kThreadsX + tx;
  const int pixel = blockIdx.x / imageTiles, image0 = blockIdx.x % imageTiles * kImages;
  const int y = pixel / p.imgSizeX, x = pixel % p.imgSizeX;
  const int fc = p.filterChannels(), fpg = p.numFilters / p.groups, fp = p.filterPixels();
  const int group = blockIdx.y / channelTiles, groupChannel0 = blockIdx.y % channelTiles * kChannels;
  const int tileChannels = min(kChannels, fc - groupChannel0), groupFilter0 = group * fpg;
  const int modules = p.modulesY * p.modulesX;
  const int myFirst = max(0, lab_ceil_div(y + p.padding - p.filterSize + 1, p.stride));
  const int myLast = min(p.modulesY - 1, lab_floor_div(y + p.padding, p.stride));
  const int mxFirst = max(0, lab_ceil_div(x + p.padding - p.filterSize + 1, p.stride));
  const int mxLast = min(p.modulesX - 1, lab_floor_div(x + p.padding, p.stride));
  float acc[CPT][IPT] = {};
  for (int my = myFirst; my <= myLast; ++my)
    for (int mx = mxFirst; mx <= mxLast; ++mx) {
      const int module = my * p.modulesX + mx;
      const int filterPixel = (y - (my * p.stride - p.padding)) * p.filterSize + x - (mx * p.stride - p.padding);
      const float* rowFilters = filters + (int64_t(groupChannel0) * fp + filterPixel) * p.numFilters + groupFilter0;
      for (int f0 = 0; f0 < fpg; f0 += kChunk) {
        for (int e = tid; e < kChunk * kImages; e += kThreads) {
          int ff = e / kImages, n = image0 + e % kImages;
          grads[ff][e % kImages] = f0 + ff < fpg && n < p.numImages
                                       ? hidActs[(int64_t(groupFilter0 + f0 + ff) * modules + module) * p.numImages + n]
                                       : 0.f;
        }
        for (int e = tid; e < kChunk * kChannels; e += kThreads) {
          int cc = e / kChunk, ff = e % kChunk;
          weights[ff][cc] = f0 + ff < fpg && cc < tileChannels ? rowFilters[int64_t(cc) * fp * p.numFilters + f0 + ff] : 0.f;
        }
        __syncthreads();
        for (int ff = 0; ff < kChunk; ++ff) {
          float g[IPT], w[CPT];
          for (int i = 0; i < IPT; ++i) g[i] = grads[ff][tx + i * kThreadsX];
          for (int j = 0; j < CPT; ++j) w[j] = weights[ff][ty + j * kThreadsY];
          for (int j = 0; j < CPT; ++j)
            for (int i = 0; i < IPT; ++i) acc[j][i] += w[j] * g[i];
        }
        __syncthreads();
      }
    }
  const int channel0 = group * fc + groupChannel0;
  for (int j = 0; j < CPT; ++j) {
    int cc = ty + j * kThreadsY;
    if (cc >= tileChannels) continue;
    float* out = targets + ((int64_t(channel0 + cc) * p.imgSizeY + y) * p.imgSizeX + x) * p.numImages;
    for (int i = 0; i < IPT; ++i) {
      int n = image0 + tx + i * kThreadsX;
      if (n < p.numImages) out[n] = acc[j][i];
    }
  }
}

template <int IPT, int CPT>
void launch(const float* hid, const float* filters, float* out, const LabConv& g) {
  int imageTiles = lab_ceil_div_host(g.numImages, kThreadsX * IPT);
  int channelTiles = lab_ceil_div_host(g.filterChannels(), kThreadsY * CPT);
  dim3 grid(unsigned(g.imgSizeY * g.imgSizeX * imageTiles), unsigned(g.groups * channelTiles));
  img_acts_v1<IPT, CPT><<<grid, dim3(kThreadsX, kThreadsY)>>>(hid, filters, out, g, imageTiles, channelTiles);
}
}  // namespace

bool lab_supports(const LabConv&) { return true; }

void lab_launch(const float* hid, const float* filters, float* out, const LabConv& g) {
  int ipt = g.numImages > 64 ? 4 : g.numImages > 32 ? 2 : 1;
  bool wide = g.filterChannels() > 4;
  if (ipt == 4) wide ? launch<4, 4>(hid, filters, out, g) : launch<4, 1>(hid, filters, out, g);
  else if (ipt == 2) wide ? launch<2, 4>(hid, filters, out, g) : launch<2, 1>(hid, filters, out, g);
  else wide ? launch<1, 4>(hid, filters, out, g) : launch<1, 1>(hid, filters, out, g);
}
