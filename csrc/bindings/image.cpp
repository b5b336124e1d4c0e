// Python bindings of the image family: ImageGeometry and the augmentation / preprocessing
// routines on (channels, img_size_y, img_size_x, num_images) arrays.
#include <string>

#include "bindings/convert.h"
#include "ops/image.h"

namespace ccn::bindings {

void bind_image(py::module_& m) {
  py::class_<ImageGeometry>(m, "ImageGeometry", "Size of the images: channels, img_size_y, img_size_x.")
      .def(py::init([](int channels, int imgSizeY, int imgSizeX) {
             ImageGeometry g;
             g.channels = channels;
             g.imgSizeY = imgSizeY;
             g.imgSizeX = imgSizeX;
             return g;
           }),
           py::kw_only(), py::arg("channels"), py::arg("img_size_y"), py::arg("img_size_x"))
      .def_readwrite("channels", &ImageGeometry::channels)
      .def_readwrite("img_size_y", &ImageGeometry::imgSizeY)
      .def_readwrite("img_size_x", &ImageGeometry::imgSizeX)
      .def("__repr__", [](const ImageGeometry& g) {
        return "ccn.ImageGeometry(channels=" + std::to_string(g.channels) + ", img_size_y=" +
               std::to_string(g.imgSizeY) + ", img_size_x=" + std::to_string(g.imgSizeX) + ")";
      });

  m.def("reflect_horizontal", [](py::handle images, py::handle targets, ImageGeometry g, float scaleTargets,
                                 float scaleOutput) {
    Tensor x = as_tensor(images, "images"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::reflectHorizontal(x, t, g, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("targets"), py::arg("geometry"), py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f, "targets[c, y, x, n] = images[c, y, img_size_x - 1 - x, n]");

  m.def("crop", [](py::handle images, py::handle targets, ImageGeometry g, int64_t startY, int64_t startX,
                   int64_t cropY, int64_t cropX, float scaleTargets, float scaleOutput) {
    int y0 = as_int(startY, "start_y"), x0 = as_int(startX, "start_x");
    int h = as_int(cropY, "crop_y"), w = as_int(cropX, "crop_x");
    Tensor x = as_tensor(images, "images"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::crop(x, t, g, y0, x0, h, w, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("targets"), py::arg("geometry"), py::arg("start_y"), py::arg("start_x"),
     py::arg("crop_y"), py::arg("crop_x"), py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "targets = images[:, start_y:start_y + crop_y, start_x:start_x + crop_x, :]");

  m.def("resize_bilinear", [](py::handle images, py::handle targets, ImageGeometry g, int64_t tgtSizeY,
                              int64_t tgtSizeX, float scaleTargets, float scaleOutput) {
    int h = as_int(tgtSizeY, "tgt_size_y"), w = as_int(tgtSizeX, "tgt_size_x");
    Tensor x = as_tensor(images, "images"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::resizeBilinear(x, t, g, h, w, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("targets"), py::arg("geometry"), py::arg("tgt_size_y"), py::arg("tgt_size_x"),
     py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "bilinear resize with half-pixel centres and clamped edges");

  m.def("rgb_to_yuv", [](py::handle images, py::handle targets, ImageGeometry g, float scaleTargets,
                         float scaleOutput) {
    Tensor x = as_tensor(images, "images"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::rgbToYuv(x, t, g, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("targets"), py::arg("geometry"), py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f, "RGB -> YUV (BT.601); geometry.channels must be 3");

  m.def("gaussian_blur", [](py::handle images, py::handle filter, py::handle targets, ImageGeometry g,
                            bool horizontal, float scaleTargets, float scaleOutput) {
    Tensor x = as_tensor(images, "images"), f = as_tensor(filter, "filter"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::gaussianBlur(x, f, t, g, horizontal, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("filter"), py::arg("targets"), py::arg("geometry"), py::arg("horizontal"),
     py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "1-D blur with an odd-length filter along x (horizontal) or y; zeros outside the image");

  m.def("bed_of_nails", [](py::handle images, py::handle targets, ImageGeometry g, int64_t start,
                           int64_t stride, int64_t outputsY, int64_t outputsX, float scaleTargets, float scaleOutput) {
    int s = as_int(start, "start"), st = as_int(stride, "stride");
    int oy = as_int(outputsY, "outputs_y"), ox = as_int(outputsX, "outputs_x");
    Tensor x = as_tensor(images, "images"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::bedOfNails(x, t, g, s, st, oy, ox, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("targets"), py::arg("geometry"), py::arg("start"), py::arg("stride"),
     py::arg("outputs_y"), py::arg("outputs_x"), py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "targets[c, oy, ox, n] = images[c, start + oy * stride, start + ox * stride, n]");

  m.def("bed_of_nails_undo", [](py::handle outGrads, py::handle targets, ImageGeometry g, int64_t start,
                                int64_t stride, int64_t outputsY, int64_t outputsX, float scaleTargets,
                                float scaleOutput) {
    int s = as_int(start, "start"), st = as_int(stride, "stride");
    int oy = as_int(outputsY, "outputs_y"), ox = as_int(outputsX, "outputs_x");
    Tensor grads = as_tensor(outGrads, "out_grads"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::bedOfNailsUndo(grads, t, g, s, st, oy, ox, scaleTargets, scaleOutput);
  }, py::arg("out_grads"), py::arg("targets"), py::arg("geometry"), py::arg("start"), py::arg("stride"),
     py::arg("outputs_y"), py::arg("outputs_x"), py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "gradient of bed_of_nails: out_grads scattered to the sampled pixels, zero elsewhere");
}

}  // namespace ccn::bindings
