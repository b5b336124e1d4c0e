// CPU normalization layers (see ops/norm.h). Tensors are (channels, rows, cols, numImages)
// with the image index fastest. Every routine is built from window sums over either the
// spatial neighbourhood (separable: a column sum over window rows, then a row sum over
// window columns) or the cross-map neighbourhood, computed for one (channel, row) of
// outputs at a time so that the innermost loops run over images and vectorize. Work is
// split over (channel, row) pairs; each element is a fixed-order sum, so results do not
// depend on the thread count.
//
// Gradients. With t_j = g_j * acts_j / d_j, and R(i) = { j : i is in the window of j }
// (the "reverse" window, which differs from the window itself when size is even):
//   rnorm, cmrnorm:  dL/dx_i = g_i d_i^-p - 2 p addScale x_i sum_{j in R(i)} t_j
//   cnorm: with u_l = m_l sum_{j in R(l)} t_j and |W(l)| the in-image size of l's window,
//                    dL/dx_i = g_i d_i^-p - 2 p addScale (u_i - sum_{l in R(i)} u_l / |W(l)|)
//   (the second term is the mean's share: m_l depends on x_i through l's window mean).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/scale.h"
#include "ops/norm.h"

namespace ccn::cpu {
namespace {

// Rows per parallel_for chunk so that a chunk does at least ~16k element operations.
int64_t rows_grain(int64_t workPerRow) {
  return std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, workPerRow));
}

inline float as_float(int32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline int32_t as_bits(float f) {
  int32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

// d^(-p) for a normal d > 0, to a few float ulps (relative error ~1e-7 * |p log2 d|),
// as 2^y with y = -p log2(d). A pow call does not vectorize and dominated every norm;
// this is plain arithmetic on floats and their bits, which compilers vectorize.
inline float inverse_power(float d, float p) {
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer, kept in the low bits
  // d = 2^e * m with m in [sqrt(1/2), sqrt(2)): e from the exponent bits, shifted by m's range.
  const int32_t bits = as_bits(d);
  const int32_t e = (bits - as_bits(0.70710678f)) >> 23;
  const float m = as_float(bits - e * (1 << 23));
  // ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172: the series to s^9 is float-exact.
  const float s = (m - 1.f) / (m + 1.f), s2 = s * s;
  const float lnM = 2.f * s * (1.f + s2 * (1.f / 3 + s2 * (1.f / 5 + s2 * (1.f / 7 + s2 * (1.f / 9)))));
  const float eFloat = as_float(as_bits(kRound) + e) - kRound;  // int -> float without a conversion
  float y = -p * (eFloat + lnM * 1.44269504f);
  // Clamp y to [-126, 127], the normal exponents, comparing as integers: float compares
  // may trap, which stops GCC from vectorizing them. The remap makes negative floats'
  // sign-magnitude bits order like the floats.
  auto ordered = [](int32_t b) { return b ^ ((b >> 31) & 0x7fffffff); };
  y = as_float(ordered(std::min(std::max(ordered(as_bits(y)), ordered(as_bits(-126.f))), ordered(as_bits(127.f)))));
  // 2^y = 2^k * e^z, k = round(y), z = (y - k) ln 2 in [-0.35, 0.35]: Taylor to z^7.
  const float shifted = y + kRound;
  const int32_t k = as_bits(shifted) - as_bits(kRound);
  const float z = (y - (shifted - kRound)) * 0.69314718f;
  const float highTerms = 1.f / 24 + z * (1.f / 120 + z * (1.f / 720 + z * (1.f / 5040)));
  const float expZ = 1.f + z * (1.f + z * (0.5f + z * (1.f / 6 + z * highTerms)));
  return expZ * as_float((k + 127) << 23);
}

// Positions [lo, hi) of a window of `size` starting at `first`, clipped to [0, extent).
// int suffices: ops::checkGeometry bounds extent + size (and so first + size) by 2^31 - 1.
struct Span {
  int lo, hi;
};
inline Span clipped(int first, int size, int extent) { return {std::max(first, 0), std::min(first + size, extent)}; }

// The window around p starts at p - size/2; the reverse window R(p) (the positions whose
// windows hold p) starts at p + size/2 - size + 1. Both span `size` positions.
inline int forward_offset(int size) { return -(size / 2); }
inline int reverse_offset(int size) { return size / 2 - size + 1; }

// For every (channel, row) of the images, sums value(i) over the spatial window of each
// pixel (offset: forward_offset or reverse_offset) and calls
// finish(y, base, sums) with base = the row's first element index and sums[x * numImages + n].
template <class Value, class Finish>
void spatial_window_sums(const NormGeometry& g, int64_t numImages, int offset, const Value& value,
                         const Finish& finish) {
  const int64_t rowLength = int64_t{g.imgSizeX} * numImages;
  parallel_for(int64_t{g.channels} * g.imgSizeY, [&](int64_t begin, int64_t end) {
    std::vector<float> columnSums(rowLength), sums(rowLength);
    for (int64_t r = begin; r < end; ++r) {
      const int c = static_cast<int>(r / g.imgSizeY), y = static_cast<int>(r % g.imgSizeY);
      const Span rows = clipped(y + offset, g.size, g.imgSizeY);
      std::fill(columnSums.begin(), columnSums.end(), 0.f);
      for (int yy = rows.lo; yy < rows.hi; ++yy) {
        const int64_t from = (int64_t{c} * g.imgSizeY + yy) * rowLength;
        for (int64_t k = 0; k < rowLength; ++k) columnSums[k] += value(from + k);
      }
      for (int x = 0; x < g.imgSizeX; ++x) {
        const Span cols = clipped(x + offset, g.size, g.imgSizeX);
        float* s = sums.data() + x * numImages;
        std::fill(s, s + numImages, 0.f);
        for (int xx = cols.lo; xx < cols.hi; ++xx) {
          const float* column = columnSums.data() + xx * numImages;
          for (int64_t n = 0; n < numImages; ++n) s[n] += column[n];
        }
      }
      finish(y, r * rowLength, sums.data());
    }
  }, rows_grain(rowLength * g.size * 2));
}

// The channels whose values enter the cross-map window sum at channel c: its window, or,
// with `reverse`, the channels whose windows hold c (a block is its own reverse).
inline Span channel_window(const NormGeometry& g, int c, bool reverse) {
  if (g.blocked) return clipped(c / g.size * g.size, g.size, g.channels);
  return clipped(c + (reverse ? reverse_offset(g.size) : forward_offset(g.size)), g.size, g.channels);
}

// For every (channel, row), sums value(i) over the cross-map window of each element and
// calls finish(base, sums) with base = the row's first element index.
template <class Value, class Finish>
void channel_window_sums(const NormGeometry& g, int64_t numImages, bool reverse, const Value& value,
                         const Finish& finish) {
  const int64_t rowLength = int64_t{g.imgSizeX} * numImages;
  const int64_t plane = int64_t{g.imgSizeY} * rowLength;  // elements per channel
  parallel_for(int64_t{g.channels} * g.imgSizeY, [&](int64_t begin, int64_t end) {
    std::vector<float> sums(rowLength);
    for (int64_t r = begin; r < end; ++r) {
      const int c = static_cast<int>(r / g.imgSizeY);
      const int64_t rowInChannel = (r % g.imgSizeY) * rowLength;
      const Span channels = channel_window(g, c, reverse);
      std::fill(sums.begin(), sums.end(), 0.f);
      for (int cc = channels.lo; cc < channels.hi; ++cc) {
        const int64_t from = cc * plane + rowInChannel;
        for (int64_t k = 0; k < rowLength; ++k) sums[k] += value(from + k);
      }
      finish(r * rowLength, sums.data());
    }
  }, rows_grain(rowLength * g.size));
}

// In-image size of the spatial window along one axis, for each position.
std::vector<int> window_counts(int size, int extent) {
  std::vector<int> counts(extent);
  for (int p = 0; p < extent; ++p) {
    Span s = clipped(p + forward_offset(size), size, extent);
    counts[p] = s.hi - s.lo;
  }
  return counts;
}

// d = minDiv + addScale * windowSum; writes d and targets = x * d^-powScale (scaled).
struct Normalize {
  const NormGeometry& g;
  const float* x;
  float* denoms;
  float* out;
  float scaleTargets, scaleOutput;
  void operator()(int64_t base, const float* sums, int64_t count) const {
    float* d = denoms + base;
    for (int64_t k = 0; k < count; ++k) d[k] = g.minDiv + g.addScale * sums[k];
    store_scaled_row(out + base, count, scaleTargets, scaleOutput,
                     [&](int64_t k) { return x[base + k] * inverse_power(d[k], g.powScale); });
  }
};

// A scratch tensor like `like`, from the caching allocator (no zeroing, no page faults
// once warm).
Tensor scratch_like(const Tensor& like) { return Tensor::empty(like.shape(), Device::cpu()); }

// t_j = g_j * acts_j / d_j: the factor every window term of the gradients shares.
Tensor gradient_factors(const Tensor& outGrads, const Tensor& acts, const Tensor& denoms) {
  Tensor factors = scratch_like(outGrads);
  const float *grad = outGrads.data(), *a = acts.data(), *d = denoms.data();
  float* t = factors.data();
  parallel_for(outGrads.numel(), [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) t[j] = grad[j] * a[j] / d[j];
  }, int64_t{1} << 14);
  return factors;
}

}  // namespace

void responseNorm(const Tensor& images, Tensor& denoms, Tensor& targets, const NormGeometry& g, float scaleTargets,
                  float scaleOutput) {
  const int64_t numImages = images.cols(), rowLength = int64_t{g.imgSizeX} * numImages;
  const float* x = images.data();
  const Normalize normalize{g, x, denoms.data(), targets.data(), scaleTargets, scaleOutput};
  spatial_window_sums(g, numImages, forward_offset(g.size), [x](int64_t i) { return x[i] * x[i]; },
                      [&](int, int64_t base, const float* sums) { normalize(base, sums, rowLength); });
}

void responseNormUndo(const Tensor& outGrads, const Tensor& images, const Tensor& acts, const Tensor& denoms,
                      Tensor& targets, const NormGeometry& g, float scaleTargets, float scaleOutput) {
  const int64_t numImages = outGrads.cols(), rowLength = int64_t{g.imgSizeX} * numImages;
  const float *grad = outGrads.data(), *x = images.data(), *d = denoms.data();
  float* out = targets.data();
  const float factor = 2.f * g.powScale * g.addScale;
  const Tensor factors = gradient_factors(outGrads, acts, denoms);
  const float* t = factors.data();
  spatial_window_sums(g, numImages, reverse_offset(g.size), [t](int64_t j) { return t[j]; },
                      [&](int, int64_t base, const float* sums) {
                        store_scaled_row(out + base, rowLength, scaleTargets, scaleOutput, [&](int64_t k) {
                          const int64_t i = base + k;
                          return grad[i] * inverse_power(d[i], g.powScale) - factor * x[i] * sums[k];
                        });
                      });
}

void responseNormCrossMap(const Tensor& images, Tensor& denoms, Tensor& targets, const NormGeometry& g,
                          float scaleTargets, float scaleOutput) {
  const int64_t numImages = images.cols(), rowLength = int64_t{g.imgSizeX} * numImages;
  const float* x = images.data();
  const Normalize normalize{g, x, denoms.data(), targets.data(), scaleTargets, scaleOutput};
  channel_window_sums(g, numImages, false, [x](int64_t i) { return x[i] * x[i]; },
                      [&](int64_t base, const float* sums) { normalize(base, sums, rowLength); });
}

void responseNormCrossMapUndo(const Tensor& outGrads, const Tensor& images, const Tensor& acts,
                              const Tensor& denoms, Tensor& targets, const NormGeometry& g, float scaleTargets,
                              float scaleOutput) {
  const int64_t numImages = outGrads.cols(), rowLength = int64_t{g.imgSizeX} * numImages;
  const float *grad = outGrads.data(), *x = images.data(), *d = denoms.data();
  float* out = targets.data();
  const float factor = 2.f * g.powScale * g.addScale;
  const Tensor factors = gradient_factors(outGrads, acts, denoms);
  const float* t = factors.data();
  channel_window_sums(g, numImages, true, [t](int64_t j) { return t[j]; },
                      [&](int64_t base, const float* sums) {
                        store_scaled_row(out + base, rowLength, scaleTargets, scaleOutput, [&](int64_t k) {
                          const int64_t i = base + k;
                          return grad[i] * inverse_power(d[i], g.powScale) - factor * x[i] * sums[k];
                        });
                      });
}

void contrastNorm(const Tensor& images, Tensor& meanDiffs, Tensor& denoms, Tensor& targets, const NormGeometry& g,
                  float scaleTargets, float scaleOutput) {
  const int64_t numImages = images.cols(), rowLength = int64_t{g.imgSizeX} * numImages;
  const float* x = images.data();
  float* m = meanDiffs.data();
  const std::vector<int> rowCounts = window_counts(g.size, g.imgSizeY), colCounts = window_counts(g.size, g.imgSizeX);
  const int offset = forward_offset(g.size);
  // m = x - (window mean of x), written in full before its squares are summed.
  spatial_window_sums(g, numImages, offset, [x](int64_t i) { return x[i]; },
                      [&](int y, int64_t base, const float* sums) {
                        for (int xc = 0; xc < g.imgSizeX; ++xc) {
                          const float inverseCount = 1.f / static_cast<float>(rowCounts[y] * colCounts[xc]);
                          const int64_t first = base + xc * numImages;
                          const float* s = sums + xc * numImages;
                          for (int64_t n = 0; n < numImages; ++n) m[first + n] = x[first + n] - s[n] * inverseCount;
                        }
                      });
  const Normalize normalize{g, x, denoms.data(), targets.data(), scaleTargets, scaleOutput};
  spatial_window_sums(g, numImages, offset, [m](int64_t i) { return m[i] * m[i]; },
                      [&](int, int64_t base, const float* sums) { normalize(base, sums, rowLength); });
}

void contrastNormUndo(const Tensor& outGrads, const Tensor& images, const Tensor& meanDiffs, const Tensor& acts,
                      const Tensor& denoms, Tensor& targets, const NormGeometry& g, float scaleTargets,
                      float scaleOutput) {
  (void)images;  // the gradient needs x only through the mean differences
  const int64_t numImages = outGrads.cols();
  const float *grad = outGrads.data(), *m = meanDiffs.data(), *d = denoms.data();
  float* out = targets.data();
  const std::vector<int> rowCounts = window_counts(g.size, g.imgSizeY), colCounts = window_counts(g.size, g.imgSizeX);
  const int offset = reverse_offset(g.size);
  // u_l = m_l * sum_{j in R(l)} t_j, and u_l / |W(l)|, the part of u_l each x in l's window sees.
  const Tensor factors = gradient_factors(outGrads, acts, denoms), uTensor = scratch_like(outGrads),
               uSharedTensor = scratch_like(outGrads);
  const float* t = factors.data();
  float *u = uTensor.data(), *uShared = uSharedTensor.data();
  spatial_window_sums(g, numImages, offset, [t](int64_t j) { return t[j]; },
                      [&](int y, int64_t base, const float* sums) {
                        for (int xc = 0; xc < g.imgSizeX; ++xc) {
                          const float inverseCount = 1.f / static_cast<float>(rowCounts[y] * colCounts[xc]);
                          const int64_t first = base + xc * numImages;
                          const float* s = sums + xc * numImages;
                          for (int64_t n = 0; n < numImages; ++n) {
                            u[first + n] = m[first + n] * s[n];
                            uShared[first + n] = u[first + n] * inverseCount;
                          }
                        }
                      });
  const float factor = 2.f * g.powScale * g.addScale;
  const int64_t rowLength = int64_t{g.imgSizeX} * numImages;
  spatial_window_sums(g, numImages, offset, [uShared](int64_t l) { return uShared[l]; },
                      [&](int, int64_t base, const float* sums) {
                        store_scaled_row(out + base, rowLength, scaleTargets, scaleOutput, [&](int64_t k) {
                          const int64_t i = base + k;
                          return grad[i] * inverse_power(d[i], g.powScale) - factor * (u[i] - sums[k]);
                        });
                      });
}

}  // namespace ccn::cpu
