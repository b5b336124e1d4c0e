// CPU convolution and locally-connected layers (filterActs, imgActs, weightActs), in
// cuda-convnet's layouts (see ops/conv.h): images (channels, y, x, numImages),
// hidActs (filters, modulesY, modulesX, numImages), filters (rows, numFilters).
//
// Convolution lowers to SGEMM (cpu/blas.h) over a column matrix built
// in the same image-innermost layout:
//   col[(channel, filterRow, filterCol), (moduleY, moduleX, image)]
// so that per group  hidActs = filters^T * col,  colGrad = filters * hidActs  and
// filterGrad = col * hidActs^T. The batch is cut into chunks of images so that the column
// matrix (and, for a partial batch, a copy of hidActs) stays within a fixed workspace,
// CCN_CPU_CONV_WORKSPACE bytes (default 64 MiB). Chunks are big on purpose: with the image
// index innermost, im2col copies runs of `chunk` floats, and large GEMMs thread well. The
// chunks are visited in a fixed order whatever the thread count, so the filter gradient,
// summed chunk after chunk, is bit-for-bit repeatable.
//
// Locally-connected layers (a filter bank per module) are direct loops, threaded over
// modules or over image rows so that no two threads write the same output.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/blas.h"
#include "cpu/scale.h"
#include "ops/conv.h"

namespace ccn::cpu {
namespace {

constexpr int64_t kDefaultWorkspaceBytes = int64_t(64) << 20;
constexpr int64_t kGrainFloats = 1 << 14;  // floats of work per thread chunk below which threading does not pay

int64_t workspace_floats() {
  int64_t bytes = kDefaultWorkspaceBytes;
  if (const char* env = std::getenv("CCN_CPU_CONV_WORKSPACE")) {
    long long value = std::atoll(env);
    if (value > 0) bytes = value;
  }
  return std::max<int64_t>(1, bytes / int64_t(sizeof(float)));
}

// Sizes of one call, in the int64 arithmetic the index computations need.
struct Dims {
  int64_t channels, imgY, imgX, filterSize, padding, stride, modY, modX, groups;
  int64_t numFilters, filterChannels, groupFilters, modules, colRows, numImages;

  Dims(const ConvGeometry& g, int64_t images)
      : channels(g.channels), imgY(g.imgSizeY), imgX(g.imgSizeX), filterSize(g.filterSize), padding(g.padding),
        stride(g.stride), modY(g.modulesY), modX(g.modulesX), groups(g.groups), numFilters(g.numFilters),
        filterChannels(g.filterChannels()), groupFilters(g.numFilters / g.groups), modules(g.modules()),
        colRows(int64_t(g.filterChannels()) * g.filterPixels()), numImages(images) {}

  // Images per chunk: the column matrix plus a copy of a group's hidActs fit the workspace.
  int64_t chunk_images() const {
    int64_t per_image = (colRows + groupFilters) * modules;
    return std::clamp<int64_t>(workspace_floats() / per_image, 1, numImages);
  }
  // Image row (or column) that filter offset `f` of module `m` reads; may be outside the image.
  int64_t pixel(int64_t m, int64_t f) const { return m * stride - padding + f; }
};

// Grain (in items of `floats_per_item` floats) that gives each thread enough work.
int64_t grain_for(int64_t floats_per_item) {
  return std::max<int64_t>(1, kGrainFloats / std::max<int64_t>(1, floats_per_item));
}

// col[(c, fy, fx), (my, mx, j)] = images[group * filterChannels + c, y, x, first + j] for the
// pixel (y, x) that filter offset (fy, fx) of module (my, mx) reads; 0 outside the image.
void im2col(const float* images, const Dims& d, int64_t group, int64_t first, int64_t count, float* col) {
  parallel_for(d.colRows * d.modY, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      int64_t k = r / d.modY, my = r % d.modY;
      int64_t c = group * d.filterChannels + k / (d.filterSize * d.filterSize);
      int64_t fy = (k / d.filterSize) % d.filterSize, fx = k % d.filterSize;
      int64_t y = d.pixel(my, fy);
      float* dst = col + (k * d.modules + my * d.modX) * count;
      if (y < 0 || y >= d.imgY) {
        std::fill(dst, dst + d.modX * count, 0.f);
        continue;
      }
      for (int64_t mx = 0; mx < d.modX; ++mx) {
        int64_t x = d.pixel(mx, fx);
        if (x < 0 || x >= d.imgX)
          std::fill(dst + mx * count, dst + (mx + 1) * count, 0.f);
        else
          std::memcpy(dst + mx * count, images + ((c * d.imgY + y) * d.imgX + x) * d.numImages + first,
                      sizeof(float) * count);
      }
    }
  }, grain_for(d.modX * count));
}

// The inverse gather of im2col: every pixel of the group's channels sums the column
// entries that read it, and is stored as targets = scaleTargets * targets + scaleOutput * sum.
// Threads own disjoint image rows, and each pixel sums in a fixed (fy, fx) order.
void col2im(const float* col, const Dims& d, int64_t group, int64_t first, int64_t count, float* targets,
            float scaleTargets, float scaleOutput) {
  parallel_for(d.filterChannels * d.imgY, [&](int64_t begin, int64_t end) {
    std::vector<float> sum(count);
    for (int64_t r = begin; r < end; ++r) {
      int64_t c = r / d.imgY, y = r % d.imgY;
      for (int64_t x = 0; x < d.imgX; ++x) {
        std::fill(sum.begin(), sum.end(), 0.f);
        for (int64_t fy = 0; fy < d.filterSize; ++fy) {
          int64_t ty = y + d.padding - fy;  // = my * stride
          if (ty < 0 || ty % d.stride != 0 || ty / d.stride >= d.modY) continue;
          int64_t my = ty / d.stride;
          for (int64_t fx = 0; fx < d.filterSize; ++fx) {
            int64_t tx = x + d.padding - fx;
            if (tx < 0 || tx % d.stride != 0 || tx / d.stride >= d.modX) continue;
            int64_t mx = tx / d.stride;
            int64_t k = (c * d.filterSize + fy) * d.filterSize + fx;
            const float* src = col + (k * d.modules + my * d.modX + mx) * count;
            for (int64_t j = 0; j < count; ++j) sum[j] += src[j];
          }
        }
        float* dst = targets + (((group * d.filterChannels + c) * d.imgY + y) * d.imgX + x) * d.numImages + first;
        for (int64_t j = 0; j < count; ++j) store_scaled(dst[j], sum[j], scaleTargets, scaleOutput);
      }
    }
  }, grain_for(d.imgX * count * d.filterSize));
}

// hid[(f, m), j] = hidActs[group * groupFilters + f, m, first + j]: a group's hidActs for a
// chunk of images, packed image-innermost.
void pack_hid(const float* hidActs, const Dims& d, int64_t group, int64_t first, int64_t count, float* hid) {
  parallel_for(d.groupFilters * d.modules, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      std::memcpy(hid + r * count, hidActs + (group * d.groupFilters * d.modules + r) * d.numImages + first,
                  sizeof(float) * count);
  }, grain_for(count));
}

// An uninitialised float buffer from the CPU caching allocator.
Tensor workspace(int64_t floats) { return Tensor::empty({std::max<int64_t>(floats, 1)}); }

void conv_filter_acts(const float* images, const float* filters, float* targets, const Dims& d,
                      float scaleTargets, float scaleOutput) {
  int64_t chunk = d.chunk_images();
  bool whole_batch = chunk == d.numImages;
  Tensor col = workspace(d.colRows * d.modules * chunk);
  Tensor out = workspace(whole_batch ? 0 : d.groupFilters * d.modules * chunk);
  for (int64_t first = 0; first < d.numImages; first += chunk) {
    int64_t count = std::min(chunk, d.numImages - first), cols = d.modules * count;
    for (int64_t group = 0; group < d.groups; ++group) {
      im2col(images, d, group, first, count, col.data());
      const float* groupFilters = filters + group * d.groupFilters;
      float* groupTargets = targets + group * d.groupFilters * d.modules * d.numImages;
      if (whole_batch) {  // the product already has the targets' layout
        sgemm(true, false, d.groupFilters, cols, d.colRows, scaleOutput, groupFilters, d.numFilters, col.data(),
              cols, scaleTargets, groupTargets, cols);
        continue;
      }
      sgemm(true, false, d.groupFilters, cols, d.colRows, 1.f, groupFilters, d.numFilters, col.data(), cols, 0.f,
            out.data(), cols);
      const float* product = out.data();
      parallel_for(d.groupFilters * d.modules, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          float* dst = groupTargets + r * d.numImages + first;
          const float* src = product + r * count;
          for (int64_t j = 0; j < count; ++j) store_scaled(dst[j], src[j], scaleTargets, scaleOutput);
        }
      }, grain_for(count));
    }
  }
}

void conv_img_acts(const float* hidActs, const float* filters, float* targets, const Dims& d, float scaleTargets,
                   float scaleOutput) {
  int64_t chunk = d.chunk_images();
  bool whole_batch = chunk == d.numImages;
  Tensor col = workspace(d.colRows * d.modules * chunk);
  Tensor hid = workspace(whole_batch ? 0 : d.groupFilters * d.modules * chunk);
  for (int64_t first = 0; first < d.numImages; first += chunk) {
    int64_t count = std::min(chunk, d.numImages - first), cols = d.modules * count;
    for (int64_t group = 0; group < d.groups; ++group) {
      const float* groupHid = hidActs + group * d.groupFilters * d.modules * d.numImages;
      if (!whole_batch) {
        pack_hid(hidActs, d, group, first, count, hid.data());
        groupHid = hid.data();
      }
      sgemm(false, false, d.colRows, cols, d.groupFilters, 1.f, filters + group * d.groupFilters, d.numFilters,
            groupHid, cols, 0.f, col.data(), cols);
      col2im(col.data(), d, group, first, count, targets, scaleTargets, scaleOutput);
    }
  }
}

void conv_weight_acts(const float* images, const float* hidActs, float* targets, const Dims& d, float scaleTargets,
                      float scaleOutput) {
  int64_t chunk = d.chunk_images();
  bool whole_batch = chunk == d.numImages;
  Tensor col = workspace(d.colRows * d.modules * chunk);
  Tensor hid = workspace(whole_batch ? 0 : d.groupFilters * d.modules * chunk);
  for (int64_t first = 0; first < d.numImages; first += chunk) {
    int64_t count = std::min(chunk, d.numImages - first), cols = d.modules * count;
    // The first chunk applies scaleTargets; later chunks add to the running sum.
    float beta = first == 0 ? scaleTargets : 1.f;
    for (int64_t group = 0; group < d.groups; ++group) {
      im2col(images, d, group, first, count, col.data());
      const float* groupHid = hidActs + group * d.groupFilters * d.modules * d.numImages;
      if (!whole_batch) {
        pack_hid(hidActs, d, group, first, count, hid.data());
        groupHid = hid.data();
      }
      sgemm(false, true, d.colRows, d.groupFilters, cols, scaleOutput, col.data(), cols, groupHid, cols, beta,
            targets + group * d.groupFilters, d.numFilters);
    }
  }
}

// Dot product in eight interleaved partial sums (so it vectorises), always in that order.
float dot(const float* a, const float* b, int64_t n) {
  float lanes[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += a[i + l] * b[i + l];
  for (int l = 0; i < n; ++i, ++l) lanes[l] += a[i] * b[i];
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

// Offset (in pixels, channel-major) of every in-image pixel that module m reads for a group,
// with the filter row k that reads it.
struct Tap {
  int64_t row, pixel;
};
void module_taps(const Dims& d, int64_t m, int64_t group, std::vector<Tap>& taps) {
  taps.clear();
  int64_t my = m / d.modX, mx = m % d.modX;
  for (int64_t c = 0; c < d.filterChannels; ++c)
    for (int64_t fy = 0; fy < d.filterSize; ++fy) {
      int64_t y = d.pixel(my, fy);
      if (y < 0 || y >= d.imgY) continue;
      for (int64_t fx = 0; fx < d.filterSize; ++fx) {
        int64_t x = d.pixel(mx, fx);
        if (x < 0 || x >= d.imgX) continue;
        taps.push_back({(c * d.filterSize + fy) * d.filterSize + fx,
                        ((group * d.filterChannels + c) * d.imgY + y) * d.imgX + x});
      }
    }
}

void local_filter_acts(const float* images, const float* filters, float* targets, const Dims& d,
                       float scaleTargets, float scaleOutput) {
  int64_t n = d.numImages;
  parallel_for(d.modules, [&](int64_t begin, int64_t end) {
    std::vector<Tap> taps;
    std::vector<float> sum(n);
    for (int64_t m = begin; m < end; ++m)
      for (int64_t group = 0; group < d.groups; ++group) {
        module_taps(d, m, group, taps);
        for (int64_t f = group * d.groupFilters; f < (group + 1) * d.groupFilters; ++f) {
          std::fill(sum.begin(), sum.end(), 0.f);
          for (const Tap& t : taps) {
            float w = filters[(m * d.colRows + t.row) * d.numFilters + f];
            const float* src = images + t.pixel * n;
            for (int64_t j = 0; j < n; ++j) sum[j] += w * src[j];
          }
          float* dst = targets + (f * d.modules + m) * n;
          for (int64_t j = 0; j < n; ++j) store_scaled(dst[j], sum[j], scaleTargets, scaleOutput);
        }
      }
  }, grain_for(d.colRows * d.numFilters * n));
}

void local_img_acts(const float* hidActs, const float* filters, float* targets, const Dims& d, float scaleTargets,
                    float scaleOutput) {
  int64_t n = d.numImages;
  parallel_for(d.channels * d.imgY, [&](int64_t begin, int64_t end) {
    std::vector<float> sum(n);
    for (int64_t r = begin; r < end; ++r) {
      int64_t channel = r / d.imgY, y = r % d.imgY;
      int64_t group = channel / d.filterChannels, c = channel % d.filterChannels;
      for (int64_t x = 0; x < d.imgX; ++x) {
        std::fill(sum.begin(), sum.end(), 0.f);
        for (int64_t fy = 0; fy < d.filterSize; ++fy) {
          int64_t ty = y + d.padding - fy;
          if (ty < 0 || ty % d.stride != 0 || ty / d.stride >= d.modY) continue;
          for (int64_t fx = 0; fx < d.filterSize; ++fx) {
            int64_t tx = x + d.padding - fx;
            if (tx < 0 || tx % d.stride != 0 || tx / d.stride >= d.modX) continue;
            int64_t m = (ty / d.stride) * d.modX + tx / d.stride;
            int64_t k = (c * d.filterSize + fy) * d.filterSize + fx;
            const float* w = filters + (m * d.colRows + k) * d.numFilters;
            for (int64_t f = group * d.groupFilters; f < (group + 1) * d.groupFilters; ++f) {
              const float* src = hidActs + (f * d.modules + m) * n;
              for (int64_t j = 0; j < n; ++j) sum[j] += w[f] * src[j];
            }
          }
        }
        float* dst = targets + r * d.imgX * n + x * n;
        for (int64_t j = 0; j < n; ++j) store_scaled(dst[j], sum[j], scaleTargets, scaleOutput);
      }
    }
  }, grain_for(d.imgX * n * d.filterSize * d.groupFilters));
}

void local_weight_acts(const float* images, const float* hidActs, float* targets, const Dims& d,
                       float scaleTargets, float scaleOutput) {
  int64_t n = d.numImages;
  parallel_for(d.modules, [&](int64_t begin, int64_t end) {
    std::vector<Tap> taps;
    std::vector<float> grad(d.colRows * d.numFilters);  // one module's filter gradient
    for (int64_t m = begin; m < end; ++m) {
      std::fill(grad.begin(), grad.end(), 0.f);  // filter rows reading outside the image stay 0
      for (int64_t group = 0; group < d.groups; ++group) {
        module_taps(d, m, group, taps);
        for (const Tap& t : taps)
          for (int64_t f = group * d.groupFilters; f < (group + 1) * d.groupFilters; ++f)
            grad[t.row * d.numFilters + f] = dot(images + t.pixel * n, hidActs + (f * d.modules + m) * n, n);
      }
      float* dst = targets + m * d.colRows * d.numFilters;
      for (size_t i = 0; i < grad.size(); ++i) store_scaled(dst[i], grad[i], scaleTargets, scaleOutput);
    }
  }, grain_for(d.colRows * d.numFilters * n));
}

}  // namespace

void filterActs(const Tensor& images, const Tensor& filters, Tensor& targets, const ConvGeometry& g,
                float scaleTargets, float scaleOutput) {
  Dims d(g, images.cols());
  (g.local ? local_filter_acts : conv_filter_acts)(images.data(), filters.data(), targets.data(), d, scaleTargets,
                                                   scaleOutput);
}

void imgActs(const Tensor& hidActs, const Tensor& filters, Tensor& targets, const ConvGeometry& g,
             float scaleTargets, float scaleOutput) {
  Dims d(g, hidActs.cols());
  (g.local ? local_img_acts : conv_img_acts)(hidActs.data(), filters.data(), targets.data(), d, scaleTargets,
                                             scaleOutput);
}

void weightActs(const Tensor& images, const Tensor& hidActs, Tensor& targets, const ConvGeometry& g,
                float scaleTargets, float scaleOutput) {
  Dims d(g, images.cols());
  (g.local ? local_weight_acts : conv_weight_acts)(images.data(), hidActs.data(), targets.data(), d, scaleTargets,
                                                   scaleOutput);
}

}  // namespace ccn::cpu
