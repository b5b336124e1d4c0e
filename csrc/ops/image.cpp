// Checked entry points of the image family: geometry, shapes, devices and window
// parameters are validated here, then the call goes to the backend of the tensors' device.
// Outputs never alias inputs: every routine reads pixels other than the one it writes.
#include "ops/image.h"

#include <algorithm>

#include "ops/check.h"

namespace ccn::ops {

void checkGeometry(const ImageGeometry& g) {
  check_positive(g.channels, "channels");
  check_positive(g.imgSizeY, "imgSizeY");
  check_positive(g.imgSizeX, "imgSizeX");
  checked_size("image", "channels * imgSizeY * imgSizeX", {g.channels, g.imgSizeY, g.imgSizeX});
}

// The sampled pixels start, start + stride, ..., start + (outputs - 1) * stride lie in [0, size).
void checkBedOfNails(const ImageGeometry& g, int start, int stride, int outputsY, int outputsX) {
  checkGeometry(g);
  CCN_CHECK(start >= 0, "parameter 'start' must be >= 0, got ", start);
  check_positive(stride, "stride");
  check_positive(outputsY, "outputsY");
  check_positive(outputsX, "outputsX");
  CCN_CHECK(start + int64_t(outputsY - 1) * stride < g.imgSizeY, "bed of nails: start ", start, " + (outputsY ",
            outputsY, " - 1) * stride ", stride, " lies outside the image (imgSizeY ", g.imgSizeY, ")");
  CCN_CHECK(start + int64_t(outputsX - 1) * stride < g.imgSizeX, "bed of nails: start ", start, " + (outputsX ",
            outputsX, " - 1) * stride ", stride, " lies outside the image (imgSizeX ", g.imgSizeX, ")");
}

namespace {

// Images a (channels * imgSizeY * imgSizeX, numImages) matrix of a checked geometry.
void check_images(const Tensor& images, const char* name, const ImageGeometry& g) {
  checkGeometry(g);
  check_matrix(images, name, int64_t(g.channels) * g.imgSizeY * g.imgSizeX, images.cols());
}

// A same-geometry output of `images`, not sharing its memory.
void check_same_images(const Tensor& targets, const Tensor& images, const ImageGeometry& g) {
  check_matrix(targets, "targets", int64_t(g.channels) * g.imgSizeY * g.imgSizeX, images.cols());
  check_disjoint(targets, "targets", images, "images");
}

}  // namespace

void reflectHorizontal(const Tensor& images, Tensor& targets, const ImageGeometry& g, float scaleTargets,
                       float scaleOutput) {
  Device d = common_device({{"images", &images}, {"targets", &targets}});
  check_images(images, "images", g);
  check_same_images(targets, images, g);
  CCN_DISPATCH(d, reflectHorizontal, images, targets, g, scaleTargets, scaleOutput);
}

void crop(const Tensor& images, Tensor& targets, const ImageGeometry& g, int startY, int startX, int cropY,
          int cropX, float scaleTargets, float scaleOutput) {
  Device d = common_device({{"images", &images}, {"targets", &targets}});
  check_images(images, "images", g);
  check_positive(cropY, "cropY");
  check_positive(cropX, "cropX");
  CCN_CHECK(startY >= 0 && int64_t(startY) + cropY <= g.imgSizeY, "crop rows [startY, startY + cropY) = [",
            startY, ", ", int64_t(startY) + cropY, ") must lie inside the image (imgSizeY ", g.imgSizeY, ")");
  CCN_CHECK(startX >= 0 && int64_t(startX) + cropX <= g.imgSizeX, "crop columns [startX, startX + cropX) = [",
            startX, ", ", int64_t(startX) + cropX, ") must lie inside the image (imgSizeX ", g.imgSizeX, ")");
  check_matrix(targets, "targets", int64_t(g.channels) * cropY * cropX, images.cols());
  check_disjoint(targets, "targets", images, "images");
  CCN_DISPATCH(d, crop, images, targets, g, startY, startX, cropY, cropX, scaleTargets, scaleOutput);
}

void resizeBilinear(const Tensor& images, Tensor& targets, const ImageGeometry& g, int tgtSizeY, int tgtSizeX,
                    float scaleTargets, float scaleOutput) {
  Device d = common_device({{"images", &images}, {"targets", &targets}});
  check_images(images, "images", g);
  check_positive(tgtSizeY, "tgtSizeY");
  check_positive(tgtSizeX, "tgtSizeX");
  check_matrix(targets, "targets", checked_size("resize", "channels * tgtSizeY * tgtSizeX", {g.channels, tgtSizeY, tgtSizeX}),
               images.cols());
  check_disjoint(targets, "targets", images, "images");
  CCN_DISPATCH(d, resizeBilinear, images, targets, g, tgtSizeY, tgtSizeX, scaleTargets, scaleOutput);
}

void rgbToYuv(const Tensor& images, Tensor& targets, const ImageGeometry& g, float scaleTargets,
              float scaleOutput) {
  Device d = common_device({{"images", &images}, {"targets", &targets}});
  CCN_CHECK(g.channels == 3, "rgbToYuv needs 3 channels (R, G, B), got channels = ", g.channels);
  check_images(images, "images", g);
  check_same_images(targets, images, g);
  CCN_DISPATCH(d, rgbToYuv, images, targets, g, scaleTargets, scaleOutput);
}

void gaussianBlur(const Tensor& images, const Tensor& filter, Tensor& targets, const ImageGeometry& g,
                  bool horizontal, float scaleTargets, float scaleOutput) {
  Device d = common_device({{"images", &images}, {"filter", &filter}, {"targets", &targets}});
  check_images(images, "images", g);
  check_numel(filter, "filter", filter.numel());
  CCN_CHECK(filter.numel() % 2 == 1, "argument 'filter' must have an odd number of taps, got ", filter.numel());
  // The backends take the tap count and the tap window's bounds (p + taps/2 + 1) as int.
  check_coordinates("blur", "max(imgSizeY, imgSizeX) + filter taps", {std::max(g.imgSizeY, g.imgSizeX), filter.numel()});
  check_same_images(targets, images, g);
  check_disjoint(targets, "targets", filter, "filter");
  CCN_DISPATCH(d, gaussianBlur, images, filter, targets, g, horizontal, scaleTargets, scaleOutput);
}

void bedOfNails(const Tensor& images, Tensor& targets, const ImageGeometry& g, int start, int stride,
                int outputsY, int outputsX, float scaleTargets, float scaleOutput) {
  Device d = common_device({{"images", &images}, {"targets", &targets}});
  check_images(images, "images", g);
  checkBedOfNails(g, start, stride, outputsY, outputsX);
  check_matrix(targets, "targets", int64_t(g.channels) * outputsY * outputsX, images.cols());
  check_disjoint(targets, "targets", images, "images");
  CCN_DISPATCH(d, bedOfNails, images, targets, g, start, stride, outputsY, outputsX, scaleTargets, scaleOutput);
}

void bedOfNailsUndo(const Tensor& outGrads, Tensor& targets, const ImageGeometry& g, int start, int stride,
                    int outputsY, int outputsX, float scaleTargets, float scaleOutput) {
  Device d = common_device({{"outGrads", &outGrads}, {"targets", &targets}});
  check_images(targets, "targets", g);
  checkBedOfNails(g, start, stride, outputsY, outputsX);
  check_matrix(outGrads, "outGrads", int64_t(g.channels) * outputsY * outputsX, targets.cols());
  check_disjoint(targets, "targets", outGrads, "outGrads");
  CCN_DISPATCH(d, bedOfNailsUndo, outGrads, targets, g, start, stride, outputsY, outputsX, scaleTargets,
               scaleOutput);
}

}  // namespace ccn::ops
