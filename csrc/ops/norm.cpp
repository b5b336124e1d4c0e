// Checked entry points of the norm family (see ops/norm.h): geometry sanity, tensor
// shapes and devices, then dispatch to the backend of the tensors' device.
#include "ops/norm.h"

#include <algorithm>

#include <cmath>

#include "ops/check.h"

namespace ccn::ops {

void checkGeometry(const NormGeometry& g) {
  check_positive(g.channels, "channels");
  check_positive(g.imgSizeY, "imgSizeY");
  check_positive(g.imgSizeX, "imgSizeX");
  check_positive(g.size, "size");
  // A window wider than twice the largest extent covers everything anyway.
  const int64_t extent = std::max({g.channels, g.imgSizeY, g.imgSizeX});
  CCN_CHECK(g.size <= 2 * extent + 1, "parameter 'size' (", g.size, ") is larger than 2 * ", extent,
            " + 1 (twice the largest of channels, imgSizeY, imgSizeX)");
  checked_size("norm", "channels * imgSizeY * imgSizeX", {g.channels, g.imgSizeY, g.imgSizeX});
  // Window bounds (p - size/2, p + size/2 + 1, c/size*size + size) lie within extent + size.
  check_coordinates("norm", "max(channels, imgSizeY, imgSizeX) + size", {extent, g.size});
  // minDiv > 0 and addScale >= 0 keep every denominator positive, so d^(-powScale) is finite.
  CCN_CHECK(std::isnormal(g.minDiv) && g.minDiv > 0.f, "parameter 'minDiv' must be positive (and a normal float), got ",
            g.minDiv);
  CCN_CHECK(std::isfinite(g.addScale) && g.addScale >= 0.f, "parameter 'addScale' must be non-negative, got ",
            g.addScale);
  CCN_CHECK(std::isfinite(g.powScale), "parameter 'powScale' must be finite, got ", g.powScale);
}

namespace {

int64_t image_rows(const NormGeometry& g) { return int64_t{g.channels} * g.imgSizeY * g.imgSizeX; }

// Every named tensor has the images' matrix shape (channels * imgSizeY * imgSizeX, numImages).
void check_images(std::initializer_list<NamedTensor> tensors, const NormGeometry& g, int64_t numImages) {
  for (const NamedTensor& nt : tensors) check_matrix(*nt.second, nt.first, image_rows(g), numImages);
}

}  // namespace

void responseNorm(const Tensor& images, Tensor& denoms, Tensor& targets, const NormGeometry& g, float scaleTargets,
                  float scaleOutput) {
  Device d = common_device({{"images", &images}, {"denoms", &denoms}, {"targets", &targets}});
  checkGeometry(g);
  check_images({{"images", &images}, {"denoms", &denoms}, {"targets", &targets}}, g, images.cols());
  CCN_DISPATCH(d, responseNorm, images, denoms, targets, g, scaleTargets, scaleOutput);
}

void responseNormUndo(const Tensor& outGrads, const Tensor& images, const Tensor& acts, const Tensor& denoms,
                      Tensor& targets, const NormGeometry& g, float scaleTargets, float scaleOutput) {
  Device d = common_device(
      {{"outGrads", &outGrads}, {"images", &images}, {"acts", &acts}, {"denoms", &denoms}, {"targets", &targets}});
  checkGeometry(g);
  check_images(
      {{"outGrads", &outGrads}, {"images", &images}, {"acts", &acts}, {"denoms", &denoms}, {"targets", &targets}},
      g, outGrads.cols());
  CCN_DISPATCH(d, responseNormUndo, outGrads, images, acts, denoms, targets, g, scaleTargets, scaleOutput);
}

void responseNormCrossMap(const Tensor& images, Tensor& denoms, Tensor& targets, const NormGeometry& g,
                          float scaleTargets, float scaleOutput) {
  Device d = common_device({{"images", &images}, {"denoms", &denoms}, {"targets", &targets}});
  checkGeometry(g);
  check_images({{"images", &images}, {"denoms", &denoms}, {"targets", &targets}}, g, images.cols());
  CCN_DISPATCH(d, responseNormCrossMap, images, denoms, targets, g, scaleTargets, scaleOutput);
}

void responseNormCrossMapUndo(const Tensor& outGrads, const Tensor& images, const Tensor& acts,
                              const Tensor& denoms, Tensor& targets, const NormGeometry& g, float scaleTargets,
                              float scaleOutput) {
  Device d = common_device(
      {{"outGrads", &outGrads}, {"images", &images}, {"acts", &acts}, {"denoms", &denoms}, {"targets", &targets}});
  checkGeometry(g);
  check_images(
      {{"outGrads", &outGrads}, {"images", &images}, {"acts", &acts}, {"denoms", &denoms}, {"targets", &targets}},
      g, outGrads.cols());
  CCN_DISPATCH(d, responseNormCrossMapUndo, outGrads, images, acts, denoms, targets, g, scaleTargets, scaleOutput);
}

void contrastNorm(const Tensor& images, Tensor& meanDiffs, Tensor& denoms, Tensor& targets, const NormGeometry& g,
                  float scaleTargets, float scaleOutput) {
  Device d = common_device(
      {{"images", &images}, {"meanDiffs", &meanDiffs}, {"denoms", &denoms}, {"targets", &targets}});
  checkGeometry(g);
  check_images({{"images", &images}, {"meanDiffs", &meanDiffs}, {"denoms", &denoms}, {"targets", &targets}}, g,
               images.cols());
  CCN_DISPATCH(d, contrastNorm, images, meanDiffs, denoms, targets, g, scaleTargets, scaleOutput);
}

void contrastNormUndo(const Tensor& outGrads, const Tensor& images, const Tensor& meanDiffs, const Tensor& acts,
                      const Tensor& denoms, Tensor& targets, const NormGeometry& g, float scaleTargets,
                      float scaleOutput) {
  Device d = common_device({{"outGrads", &outGrads},
                            {"images", &images},
                            {"meanDiffs", &meanDiffs},
                            {"acts", &acts},
                            {"denoms", &denoms},
                            {"targets", &targets}});
  checkGeometry(g);
  check_images({{"outGrads", &outGrads},
                {"images", &images},
                {"meanDiffs", &meanDiffs},
                {"acts", &acts},
                {"denoms", &denoms},
                {"targets", &targets}},
               g, outGrads.cols());
  CCN_DISPATCH(d, contrastNormUndo, outGrads, images, meanDiffs, acts, denoms, targets, g, scaleTargets,
               scaleOutput);
}

}  // namespace ccn::ops
