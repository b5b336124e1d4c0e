// imgActs version 3: version 2 with aligned loads. A warp stages a hidActs row (one filter,
// the block's images) with its lanes shifted by the row's offset from a 32-byte boundary, so
// that each load touches only sectors that hold the row: at an odd batch a row starts at any
// 4-byte offset, and version 2's loads span 5 sectors where 4 would hold them.
#include "lab.cuh"

namespace {
// Copies row[0, count) into tile[0, kWidth) (zeros from count on) with one warp; lanes outside
// the row read an element of it (no extra sector) and store nothing.
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

constexpr int kThreadsX = 32, kPixels = 8, kChunk = 16, kMaxFilterSize = 16;

template <int IPT, int C>
__global__ void __launch_bounds__(kThreadsX * kPixels)
img_acts_v3(const float* hidActs, const float* filters, float* targets, LabConv p, int imageTiles, int pixelTiles) {
  constexpr int kImages = kThreadsX * IPT, kThreads = kThreadsX * kPixels;
  __shared__ float grads[kChunk][kImages];
  // Rows c * filterSize + fx, dense, so that a warp's staging stores hit 32 distinct banks.
  __shared__ float weights[C * kMaxFilterSize][kChunk];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kThreadsX + tx;
  const int image0 = blockIdx.x % imageTiles * kImages, tile = blockIdx.x / imageTiles;
  const int y = tile / pixelTiles, x0 = tile % pixelTiles * kPixels, x = x0 + ty;
  const int fpg = p.numFilters / p.groups, fp = p.filterPixels(), group = blockIdx.y;
  const int groupFilter0 = group * fpg, modules = p.modulesY * p.modulesX;
  const int xLast = min(p.imgSizeX - 1, x0 + kPixels - 1);
  const int tileImages = min(kImages, p.numImages - image0);
  const int myFirst = max(0, lab_ceil_div(y + p.padding - p.filterSize + 1, p.stride));
  const int myLast = min(p.modulesY - 1, lab_floor_div(y + p.padding, p.stride));
  // Modules of the block's pixels, and of this thread's pixel.
  const int mxFirst = max(0, lab_ceil_div(x0 + p.padding - p.filterSize + 1, p.stride));
  const int mxLast = min(p.modulesX - 1, lab_floor_div(xLast + p.padding, p.stride));
  const int mxMine0 = max(0, lab_ceil_div(x + p.padding - p.filterSize + 1, p.stride));
  const int mxMine1 = x < p.imgSizeX ? min(p.modulesX - 1, lab_floor_div(x + p.padding, p.stride)) : -1;
  float acc[C][IPT] = {};
  for (int my = myFirst; my <= myLast; ++my) {
    const int fy = y + p.padding - my * p.stride;
    for (int f0 = 0; f0 < fpg; f0 += kChunk) {
      // weights[c * filterSize + fx][ff] = filters[(c, fy, fx), groupFilter0 + f0 + ff]; consecutive threads: consecutive filters.
      for (int e = tid; e < C * p.filterSize * kChunk; e += kThreads) {
        int ff = e % kChunk, fx = e / kChunk % p.filterSize, c = e / (kChunk * p.filterSize);
        weights[e / kChunk][ff] = f0 + ff < fpg
                                 ? filters[(int64_t(c) * fp + fy * p.filterSize + fx) * p.numFilters + groupFilter0 + f0 + ff]
                                 : 0.f;
      }
      for (int mx = mxFirst; mx <= mxLast; ++mx) {
        const int module = my * p.modulesX + mx;
        for (int ff = ty; ff < kChunk; ff += kPixels) {  // a warp per filter
          const bool valid = f0 + ff < fpg;
          const int64_t row = valid ? (int64_t(groupFilter0 + f0 + ff) * modules + module) * p.numImages + image0 : 0;
          stage_row<kImages>(grads[ff], hidActs + row, valid ? tileImages : 0, tx);
        }
        __syncthreads();
        if (mx >= mxMine0 && mx <= mxMine1) {  // the same for the whole warp: one pixel
          const int fx = x + p.padding - mx * p.stride;
          for (int ff = 0; ff < kChunk; ++ff) {
            float g[IPT], w[C];
            for (int i = 0; i < IPT; ++i) g[i] = grads[ff][tx + i * kThreadsX];
            for (int c = 0; c < C; ++c) w[c] = weights[c * p.filterSize + fx][ff];
            for (int c = 0; c < C; ++c)
              for (int i = 0; i < IPT; ++i) acc[c][i] += w[c] * g[i];
          }
        }
        __syncthreads();
      }
    }
  }
  if (x >= p.imgSizeX) return;
  for (int c = 0; c < C; ++c) {
    float* out = targets + ((int64_t(group * C + c) * p.imgSizeY + y) * p.imgSizeX + x) * p.numImages;
    for (int i = 0; i < IPT; ++i) {
      int n = image0 + tx + i * kThreadsX;
      if (n < p.numImages) out[n] = acc[c][i];
    }
  }
}

template <int IPT, int C>
void launch(const float* hid, const float* filters, float* out, const LabConv& g) {
  int imageTiles = lab_ceil_div_host(g.numImages, kThreadsX * IPT);
  int pixelTiles = lab_ceil_div_host(g.imgSizeX, kPixels);
  dim3 grid(unsigned(g.imgSizeY * pixelTiles * imageTiles), unsigned(g.groups));
  img_acts_v3<IPT, C><<<grid, dim3(kThreadsX, kPixels)>>>(hid, filters, out, g, imageTiles, pixelTiles);
}

template <int IPT>
void launch_channels(const float* hid, const float* filters, float* out, const LabConv& g) {
  switch (g.filterChannels()) {
    case 1: launch<IPT, 1>(hid, filters, out, g); break;
    case 2: launch<IPT, 2>(hid, filters, out, g); break;
    case 3: launch<IPT, 3>(hid, filters, out, g); break;
    default: launch<IPT, 4>(hid, filters, out, g); break;
  }
}
}  // namespace

bool lab_supports(const LabConv& g) { return g.filterChannels() <= 4 && g.filterSize <= kMaxFilterSize; }

void lab_launch(const float* hid, const float* filters, float* out, const LabConv& g) {
  int ipt = g.numImages > 64 ? 4 : g.numImages > 32 ? 2 : 1;
  if (ipt == 4) launch_channels<4>(hid, filters, out, g);
  else if (ipt == 2) launch_channels<2>(hid, filters, out, g);
  else launch_channels<1>(hid, filters, out, g);
}
