// Checked entry points of the conv family (convolution and locally-connected layers) and
// ConvGeometry::outputSize. Layouts are described in ops/conv.h; every precondition a
// backend relies on (geometry sanity, tensor shapes, one device) is checked here.
#include "ops/conv.h"

#include <cstdint>
#include <tuple>
#include <utility>

#include "ops/check.h"

namespace ccn {

int ConvGeometry::outputSize(int imgSize, int filterSize, int padding, int stride) {
  ops::check_positive(imgSize, "imgSize");
  ops::check_positive(filterSize, "filterSize");
  ops::check_positive(stride, "stride");
  CCN_CHECK(padding >= 0, "parameter 'padding' must be non-negative, got ", padding);
  int64_t span = 2 * int64_t(padding) + imgSize - filterSize;
  CCN_CHECK(span >= 0, "filterSize ", filterSize, " is larger than the padded image (", imgSize, " + 2 * ",
            padding, ")");
  int64_t count = 1 + (span + stride - 1) / stride;
  CCN_CHECK(count <= ops::kMaxIndex, "conv: the module count ", count, " (imgSize ", imgSize, ", filterSize ",
            filterSize, ", padding ", padding, ", stride ", stride, ") is too large (more than 2^31 - 1)");
  return static_cast<int>(count);
}

namespace ops {

void checkGeometry(const ConvGeometry& g) {
  check_positive(g.channels, "channels");
  check_positive(g.imgSizeY, "imgSizeY");
  check_positive(g.imgSizeX, "imgSizeX");
  check_positive(g.filterSize, "filterSize");
  check_positive(g.numFilters, "numFilters");
  check_positive(g.stride, "stride");
  check_positive(g.modulesY, "modulesY");
  check_positive(g.modulesX, "modulesX");
  check_positive(g.groups, "groups");
  CCN_CHECK(g.padding >= 0, "parameter 'padding' must be non-negative, got ", g.padding);
  // The first module must see some of the image (this also keeps module offsets far from int overflow).
  CCN_CHECK(g.padding < g.filterSize, "parameter 'padding' (", g.padding, ") must be smaller than filterSize (",
            g.filterSize, "): the first module would see only padding");
  // The last module must start inside the padded image.
  for (auto [modules, imgSize, axis] : {std::tuple{g.modulesY, g.imgSizeY, "modulesY"}, std::tuple{g.modulesX, g.imgSizeX, "modulesX"}}) {
    int64_t lastStart = int64_t{modules - 1} * g.stride - g.padding;
    CCN_CHECK(lastStart < int64_t{imgSize} + g.padding, "parameter '", axis, "' (", modules,
              ") is too large for stride ", g.stride, ": the last module starts at ", lastStart,
              ", outside the padded image");
  }
  // Checked products: channels * imgSizeY * imgSizeX (three ints) can wrap even int64.
  checked_size("conv", "filterSize^2", {g.filterSize, g.filterSize});
  checked_size("conv", "modulesY * modulesX", {g.modulesY, g.modulesX});
  checked_size("conv", "channels * imgSizeY * imgSizeX", {g.channels, g.imgSizeY, g.imgSizeX});
  checked_size("conv", "numFilters * modulesY * modulesX", {g.numFilters, g.modulesY, g.modulesX});
  checked_size("conv", "the filter matrix's rows", {g.local ? g.modules() : 1, g.filterChannels(), g.filterPixels()});
  CCN_CHECK(g.channels % g.groups == 0, "parameter 'groups' (", g.groups, ") must divide channels (", g.channels,
            ")");
  CCN_CHECK(g.numFilters % g.groups == 0, "parameter 'groups' (", g.groups, ") must divide numFilters (",
            g.numFilters, ")");
}

namespace {

void check_geometry(const ConvGeometry& g) { checkGeometry(g); }

// The batch size, read from the argument whose last dimension is the image index.
int64_t num_images(const Tensor& t, const char* name) {
  CCN_CHECK(t.ndim() >= 1 && t.cols() > 0, "argument '", name,
            "' must hold at least one image (its last dimension), got shape ", shape_str(t.shape()));
  return t.cols();
}

}  // namespace

void filterActs(const Tensor& images, const Tensor& filters, Tensor& targets, const ConvGeometry& g,
                float scaleTargets, float scaleOutput) {
  Device d = common_device({{"images", &images}, {"filters", &filters}, {"targets", &targets}});
  check_geometry(g);
  int64_t n = num_images(images, "images");
  check_matrix(images, "images", g.imageRows(), n);
  check_matrix(filters, "filters", g.filterRows(), g.numFilters);
  check_matrix(targets, "targets", g.hidRows(), n);
  CCN_DISPATCH(d, filterActs, images, filters, targets, g, scaleTargets, scaleOutput);
}

void imgActs(const Tensor& hidActs, const Tensor& filters, Tensor& targets, const ConvGeometry& g,
             float scaleTargets, float scaleOutput) {
  Device d = common_device({{"hidActs", &hidActs}, {"filters", &filters}, {"targets", &targets}});
  check_geometry(g);
  int64_t n = num_images(hidActs, "hidActs");
  check_matrix(hidActs, "hidActs", g.hidRows(), n);
  check_matrix(filters, "filters", g.filterRows(), g.numFilters);
  check_matrix(targets, "targets", g.imageRows(), n);
  CCN_DISPATCH(d, imgActs, hidActs, filters, targets, g, scaleTargets, scaleOutput);
}

void weightActs(const Tensor& images, const Tensor& hidActs, Tensor& targets, const ConvGeometry& g,
                float scaleTargets, float scaleOutput) {
  Device d = common_device({{"images", &images}, {"hidActs", &hidActs}, {"targets", &targets}});
  check_geometry(g);
  int64_t n = num_images(images, "images");
  check_matrix(images, "images", g.imageRows(), n);
  check_matrix(hidActs, "hidActs", g.hidRows(), n);
  check_matrix(targets, "targets", g.filterRows(), g.numFilters);
  CCN_DISPATCH(d, weightActs, images, hidActs, targets, g, scaleTargets, scaleOutput);
}

}  // namespace ops
}  // namespace ccn
