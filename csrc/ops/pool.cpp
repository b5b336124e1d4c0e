// Checked entry points of the pool family (see ops/pool.h): geometry sanity, tensor
// shapes and devices, then dispatch to the backend of the tensors' device.
#include "ops/pool.h"

#include <algorithm>
#include <cstdlib>

#include "ops/check.h"

namespace ccn {

int PoolGeometry::outputSize(int imgSize, int sizeX, int start, int stride) {
  ops::check_positive(imgSize, "imgSize");
  ops::check_positive(sizeX, "sizeX");
  ops::check_positive(stride, "stride");
  // ceil(span / stride) for a span of either sign (integer division truncates toward 0).
  int64_t span = static_cast<int64_t>(imgSize) - start - sizeX;
  int64_t steps = span > 0 ? (span + stride - 1) / stride : -((-span) / stride);
  CCN_CHECK(steps + 1 <= ops::kMaxIndex, "pool: the output count ", steps + 1, " (imgSize ", imgSize, ", start ", start,
            ", sizeX ", sizeX, ", stride ", stride, ") is too large (more than 2^31 - 1)");
  return static_cast<int>(steps + 1);
}

namespace ops {
namespace {

// Windows start at `start + k*stride` (k < outputs) and span `size`: every one of them
// must cover at least one of the `extent` positions, or it would pool nothing.
void check_windows(int extent, int size, int start, int stride, int outputs, const char* extentName,
                   const char* outputsName) {
  CCN_CHECK(start > -size, "parameter 'start' (", start, ") must be greater than -size (", -size,
            "): the first window would lie outside the input");
  const int64_t padded = int64_t{extent} + 2 * int64_t{std::max(0, -start)};
  CCN_CHECK(size <= padded, "window size ", size, " is larger than ", extentName, " (", extent,
            ") plus the padding that start = ", start, " implies");
  int64_t lastStart = static_cast<int64_t>(start) + static_cast<int64_t>(outputs - 1) * stride;
  CCN_CHECK(lastStart < extent, "parameter '", outputsName, "' (", outputs, ") is too large: window ", outputs - 1,
            " starts at ", lastStart, ", outside ", extentName, " = ", extent);
}

// The backends compute window bounds (start + k*stride + size, p - start - size, and their
// floor divisions by stride) in int: each is bounded by extent + |start| + size + stride.
void check_axis(const char* op, int extent, int size, int start, int stride, const char* what) {
  check_coordinates(op, what, {extent, std::abs(int64_t{start}), size, stride});
}

}  // namespace

void checkGeometry(const PoolGeometry& g) {
  check_positive(g.channels, "channels");
  check_positive(g.imgSizeY, "imgSizeY");
  check_positive(g.imgSizeX, "imgSizeX");
  check_positive(g.sizeX, "sizeX");
  check_positive(g.stride, "stride");
  check_positive(g.outputsY, "outputsY");
  check_positive(g.outputsX, "outputsX");
  check_windows(g.imgSizeY, g.sizeX, g.start, g.stride, g.outputsY, "imgSizeY", "outputsY");
  check_windows(g.imgSizeX, g.sizeX, g.start, g.stride, g.outputsX, "imgSizeX", "outputsX");
  checked_size("pool", "channels * imgSizeY * imgSizeX", {g.channels, g.imgSizeY, g.imgSizeX});
  checked_size("pool", "channels * outputsY * outputsX", {g.channels, g.outputsY, g.outputsX});
  check_axis("pool", g.imgSizeY, g.sizeX, g.start, g.stride, "imgSizeY + |start| + sizeX + stride");
  check_axis("pool", g.imgSizeX, g.sizeX, g.start, g.stride, "imgSizeX + |start| + sizeX + stride");
}

void checkGeometry(const CrossMapPoolGeometry& g) {
  check_positive(g.channels, "channels");
  check_positive(g.pixels, "pixels");
  check_positive(g.size, "size");
  check_positive(g.stride, "stride");
  check_positive(g.outputs, "outputs");
  check_windows(g.channels, g.size, g.start, g.stride, g.outputs, "channels", "outputs");
  checked_size("cross-map pool", "channels * pixels", {g.channels, g.pixels});
  checked_size("cross-map pool", "outputs * pixels", {g.outputs, g.pixels});
  check_axis("cross-map pool", g.channels, g.size, g.start, g.stride, "channels + |start| + size + stride");
}

namespace {

int64_t image_rows(const PoolGeometry& g) { return int64_t{g.channels} * g.imgSizeY * g.imgSizeX; }
int64_t pooled_rows(const PoolGeometry& g) { return int64_t{g.channels} * g.outputsY * g.outputsX; }

}  // namespace

void localPool(const Tensor& images, Tensor& targets, const PoolGeometry& g, PoolKind kind, float scaleTargets,
               float scaleOutput) {
  Device d = common_device({{"images", &images}, {"targets", &targets}});
  checkGeometry(g);
  int64_t numImages = images.cols();
  check_matrix(images, "images", image_rows(g), numImages);
  check_matrix(targets, "targets", pooled_rows(g), numImages);
  CCN_DISPATCH(d, localPool, images, targets, g, kind, scaleTargets, scaleOutput);
}

void localMaxUndo(const Tensor& images, const Tensor& maxActs, const Tensor& outGrads, Tensor& targets,
                  const PoolGeometry& g, float scaleTargets, float scaleOutput) {
  Device d = common_device(
      {{"images", &images}, {"maxActs", &maxActs}, {"outGrads", &outGrads}, {"targets", &targets}});
  checkGeometry(g);
  int64_t numImages = images.cols();
  check_matrix(images, "images", image_rows(g), numImages);
  check_matrix(maxActs, "maxActs", pooled_rows(g), numImages);
  check_matrix(outGrads, "outGrads", pooled_rows(g), numImages);
  check_matrix(targets, "targets", image_rows(g), numImages);
  CCN_DISPATCH(d, localMaxUndo, images, maxActs, outGrads, targets, g, scaleTargets, scaleOutput);
}

void localAvgUndo(const Tensor& outGrads, Tensor& targets, const PoolGeometry& g, float scaleTargets,
                  float scaleOutput) {
  Device d = common_device({{"outGrads", &outGrads}, {"targets", &targets}});
  checkGeometry(g);
  int64_t numImages = outGrads.cols();
  check_matrix(outGrads, "outGrads", pooled_rows(g), numImages);
  check_matrix(targets, "targets", image_rows(g), numImages);
  CCN_DISPATCH(d, localAvgUndo, outGrads, targets, g, scaleTargets, scaleOutput);
}

void crossMapMaxPool(const Tensor& images, Tensor& targets, const CrossMapPoolGeometry& g, float scaleTargets,
                     float scaleOutput) {
  Device d = common_device({{"images", &images}, {"targets", &targets}});
  checkGeometry(g);
  int64_t numImages = images.cols();
  check_matrix(images, "images", int64_t{g.channels} * g.pixels, numImages);
  check_matrix(targets, "targets", int64_t{g.outputs} * g.pixels, numImages);
  CCN_DISPATCH(d, crossMapMaxPool, images, targets, g, scaleTargets, scaleOutput);
}

void crossMapMaxPoolUndo(const Tensor& images, const Tensor& maxActs, const Tensor& outGrads, Tensor& targets,
                         const CrossMapPoolGeometry& g, float scaleTargets, float scaleOutput) {
  Device d = common_device(
      {{"images", &images}, {"maxActs", &maxActs}, {"outGrads", &outGrads}, {"targets", &targets}});
  checkGeometry(g);
  int64_t numImages = images.cols();
  int64_t imageRows = int64_t{g.channels} * g.pixels, pooledRows = int64_t{g.outputs} * g.pixels;
  check_matrix(images, "images", imageRows, numImages);
  check_matrix(maxActs, "maxActs", pooledRows, numImages);
  check_matrix(outGrads, "outGrads", pooledRows, numImages);
  check_matrix(targets, "targets", imageRows, numImages);
  CCN_DISPATCH(d, crossMapMaxPoolUndo, images, maxActs, outGrads, targets, g, scaleTargets, scaleOutput);
}

}  // namespace ops
}  // namespace ccn
