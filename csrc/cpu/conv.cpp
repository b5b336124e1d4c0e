// CPU convolution and locally-connected layers (filterActs, imgActs, weightActs), in
// cuda-convnet's layouts (see ops/conv.h): images (channels, y, x, numImages),
// hidActs (filters, modulesY, modulesX, numImages), filters (rows, numFilters).
//
// Convolution lowers to SGEMM (cpu/blas.h) over a column matrix built in the same
// image-innermost layout:
//   col[(channel, filterRow, filterCol), (moduleY, moduleX, image)]
// so that per group  hidActs = filters^T * col,  colGrad = filters * hidActs  and
// filterGrad = col * hidActs^T. The column matrix is never built whole: each thread builds
// chunks of it small enough to stay in its core's cache, CCN_CPU_CONV_WORKSPACE bytes
// (default 1 MiB; imgActs fits its packed slice of hidActs in it too), and runs a single-threaded SGEMM on each chunk right after building it.
//  - filterActs and weightActs take chunks of consecutive columns (module, image) of the
//    flattened column index: such a range is also a plain column range of hidActs (row
//    stride modules * numImages), so the products read and write hidActs in place.
//    weightActs sums each thread's chunks into a private filter gradient, and the partials
//    are added in thread order: bit-for-bit repeatable for a given thread count.
//  - imgActs gives each thread its own images (windows of different modules overlap in the
//    image, images never do), and scatters each chunk (a range of modules times a range of
//    the thread's images) of colGrad into the image gradient as soon as it is computed.
//
// Locally-connected layers (a filter bank per module) are direct loops, threaded over
// modules or over image rows so that no two threads write the same output.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/blas.h"
#include "cpu/scale.h"
#include "ops/conv.h"

namespace ccn::cpu {
namespace {

constexpr int64_t kDefaultWorkspaceBytes = int64_t(1) << 20;
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

  // Columns of the column matrix per chunk: one chunk fits the workspace.
  int64_t chunk_columns() const { return std::max<int64_t>(1, workspace_floats() / colRows); }
  // Image row (or column) that filter offset `f` of module `m` reads; may be outside the image.
  int64_t pixel(int64_t m, int64_t f) const { return m * stride - padding + f; }
};

// Grain (in items of `floats_per_item` floats) that gives each thread enough work.
int64_t grain_for(int64_t floats_per_item) {
  return std::max<int64_t>(1, kGrainFloats / std::max<int64_t>(1, floats_per_item));
}

// Splits `total` columns into chunks of at most `most` columns, as many chunks as a multiple
// of the thread count (so threads get equal shares), all of `size` columns but the last.
struct Chunks {
  int64_t count, size;
  Chunks(int64_t total, int64_t most) {
    int64_t threads = num_threads();
    count = std::max<int64_t>(1, (total + most - 1) / most);
    count = (count + threads - 1) / threads * threads;
    size = std::max<int64_t>(1, (total + count - 1) / count);
    count = (total + size - 1) / size;
  }
};

// Columns [first, first + count) of the group's column matrix (flattened column index
// module * numImages + image), into col (colRows, count):
//   col[(c, fy, fx), column] = images[group * filterChannels + c, y, x, image]
// for the pixel (y, x) that filter offset (fy, fx) of the column's module reads; 0 outside.
void im2col(const float* images, const Dims& d, int64_t group, int64_t first, int64_t count, float* col) {
  const int64_t n = d.numImages;
  for (int64_t k = 0; k < d.colRows; ++k) {
    int64_t c = group * d.filterChannels + k / (d.filterSize * d.filterSize);
    int64_t fy = (k / d.filterSize) % d.filterSize, fx = k % d.filterSize;
    const float* channel = images + c * d.imgY * d.imgX * n;
    float* dst = col + k * count;
    for (int64_t column = first; column < first + count;) {
      int64_t m = column / n, j = column % n, run = std::min(n - j, first + count - column);
      int64_t y = d.pixel(m / d.modX, fy), x = d.pixel(m % d.modX, fx);
      if (y < 0 || y >= d.imgY || x < 0 || x >= d.imgX)
        std::fill(dst, dst + run, 0.f);
      else
        std::memcpy(dst, channel + (y * d.imgX + x) * n + j, sizeof(float) * run);
      dst += run;
      column += run;
    }
  }
}

// An uninitialised float buffer private to one thread.
std::unique_ptr<float[]> scratch(int64_t floats) { return std::unique_ptr<float[]>(new float[floats]); }

void conv_filter_acts(const float* images, const float* filters, float* targets, const Dims& d,
                      float scaleTargets, float scaleOutput) {
  const int64_t total = d.modules * d.numImages;
  const Chunks chunks(total, d.chunk_columns());
  parallel_for(chunks.count, [&](int64_t begin, int64_t end) {
    auto col = scratch(d.colRows * chunks.size);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      int64_t first = chunk * chunks.size, count = std::min(chunks.size, total - first);
      for (int64_t group = 0; group < d.groups; ++group) {
        im2col(images, d, group, first, count, col.get());
        sgemm(true, false, d.groupFilters, count, d.colRows, scaleOutput, filters + group * d.groupFilters,
              d.numFilters, col.get(), count, scaleTargets, targets + group * d.groupFilters * total + first,
              total);
      }
    }
  });
}

// Threads own disjoint image ranges. Each first scales its part of targets by scaleTargets,
// then for chunks of (modules x its images) computes colGrad = scaleOutput * filters * hid
// and adds every entry to the pixel it came from, in a fixed order.
void conv_img_acts(const float* hidActs, const float* filters, float* targets, const Dims& d, float scaleTargets,
                   float scaleOutput) {
  const int64_t n = d.numImages, pixels = d.channels * d.imgY * d.imgX;
  const int64_t most = std::max<int64_t>(1, workspace_floats() / (d.colRows + d.groupFilters));  // col and hid
  parallel_for(n, [&](int64_t begin, int64_t end) {
    for (int64_t p = 0; p < pixels; ++p) {
      float* dst = targets + p * n;
      if (scaleTargets == 0.f)
        std::fill(dst + begin, dst + end, 0.f);
      else
        for (int64_t j = begin; j < end; ++j) dst[j] *= scaleTargets;
    }
    int64_t images = std::min(end - begin, most);
    int64_t modules = std::clamp<int64_t>(most / images, 1, d.modules);
    auto hid = scratch(d.groupFilters * modules * images);
    auto col = scratch(d.colRows * modules * images);
    for (int64_t i0 = begin; i0 < end; i0 += images) {
      int64_t ni = std::min(images, end - i0);
      for (int64_t m0 = 0; m0 < d.modules; m0 += modules) {
        int64_t nm = std::min(modules, d.modules - m0), cols = nm * ni;
        for (int64_t group = 0; group < d.groups; ++group) {
          for (int64_t f = 0; f < d.groupFilters; ++f)
            for (int64_t m = 0; m < nm; ++m)
              std::memcpy(hid.get() + f * cols + m * ni,
                          hidActs + ((group * d.groupFilters + f) * d.modules + m0 + m) * n + i0, sizeof(float) * ni);
          sgemm(false, false, d.colRows, cols, d.groupFilters, scaleOutput, filters + group * d.groupFilters,
                d.numFilters, hid.get(), cols, 0.f, col.get(), cols);
          for (int64_t k = 0; k < d.colRows; ++k) {
            int64_t c = group * d.filterChannels + k / (d.filterSize * d.filterSize);
            int64_t fy = (k / d.filterSize) % d.filterSize, fx = k % d.filterSize;
            const float* src = col.get() + k * cols;
            for (int64_t m = 0; m < nm; ++m, src += ni) {
              int64_t y = d.pixel((m0 + m) / d.modX, fy), x = d.pixel((m0 + m) % d.modX, fx);
              if (y < 0 || y >= d.imgY || x < 0 || x >= d.imgX) continue;
              float* dst = targets + ((c * d.imgY + y) * d.imgX + x) * n + i0;
              for (int64_t j = 0; j < ni; ++j) dst[j] += src[j];
            }
          }
        }
      }
    }
  }, std::min<int64_t>(n, 16));
}

// Each of num_threads() parts sums its share of the column chunks into a private gradient
// (colRows, numFilters); the parts are then added in order.
void conv_weight_acts(const float* images, const float* hidActs, float* targets, const Dims& d, float scaleTargets,
                      float scaleOutput) {
  const int64_t total = d.modules * d.numImages, grad_size = d.colRows * d.numFilters;
  const Chunks chunks(total, d.chunk_columns());
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(num_threads(), chunks.count));
  auto partials = scratch(parts * grad_size);
  parallel_for(parts, [&](int64_t begin, int64_t end) {
    auto col = scratch(d.colRows * chunks.size);
    for (int64_t part = begin; part < end; ++part) {
      float* grad = partials.get() + part * grad_size;
      int64_t first_chunk = part * chunks.count / parts, end_chunk = (part + 1) * chunks.count / parts;
      if (first_chunk == end_chunk) std::fill(grad, grad + grad_size, 0.f);
      for (int64_t chunk = first_chunk; chunk < end_chunk; ++chunk) {
        int64_t first = chunk * chunks.size, count = std::min(chunks.size, total - first);
        for (int64_t group = 0; group < d.groups; ++group) {
          im2col(images, d, group, first, count, col.get());
          sgemm(false, true, d.colRows, d.groupFilters, count, 1.f, col.get(), count,
                hidActs + group * d.groupFilters * total + first, total, chunk == first_chunk ? 0.f : 1.f,
                grad + group * d.groupFilters, d.numFilters);
        }
      }
    }
  });
  parallel_for(grad_size, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float sum = partials[i];
      for (int64_t part = 1; part < parts; ++part) sum += partials[part * grad_size + i];
      store_scaled(targets[i], sum, scaleTargets, scaleOutput);
    }
  }, kGrainFloats);
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
