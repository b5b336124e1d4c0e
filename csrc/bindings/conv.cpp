// Python bindings of the conv family: ConvGeometry and filter_acts / img_acts / weight_acts.
#include <pybind11/stl.h>

#include <optional>
#include <sstream>

#include "bindings/convert.h"
#include "ops/conv.h"

namespace ccn::bindings {

void bind_conv(py::module_& m) {
  py::class_<ConvGeometry>(m, "ConvGeometry",
                           "Shape of a convolution (local=False) or locally-connected (local=True) layer.\n"
                           "img_size_x defaults to img_size_y; modules_y / modules_x default to output_size(...).")
      .def(py::init<>())
      .def(py::init([](int64_t channels, int64_t imgSizeY, std::optional<int64_t> imgSizeX, int64_t filterSize,
                       int64_t numFilters, int64_t padding, int64_t stride, std::optional<int64_t> modulesY,
                       std::optional<int64_t> modulesX, int64_t groups, bool local) {
             ConvGeometry g;
             g.channels = as_int(channels, "channels");
             g.imgSizeY = as_int(imgSizeY, "img_size_y");
             g.imgSizeX = as_int(imgSizeX.value_or(imgSizeY), "img_size_x");
             g.filterSize = as_int(filterSize, "filter_size");
             g.numFilters = as_int(numFilters, "num_filters");
             g.padding = as_int(padding, "padding");
             g.stride = as_int(stride, "stride");
             g.modulesY = modulesY ? as_int(*modulesY, "modules_y")
                                   : ConvGeometry::outputSize(g.imgSizeY, g.filterSize, g.padding, g.stride);
             g.modulesX = modulesX ? as_int(*modulesX, "modules_x")
                                   : ConvGeometry::outputSize(g.imgSizeX, g.filterSize, g.padding, g.stride);
             g.groups = as_int(groups, "groups");
             g.local = local;
             return g;
           }),
           py::kw_only(), py::arg("channels"), py::arg("img_size_y"), py::arg("img_size_x") = py::none(),
           py::arg("filter_size"), py::arg("num_filters"), py::arg("padding") = 0, py::arg("stride") = 1,
           py::arg("modules_y") = py::none(), py::arg("modules_x") = py::none(), py::arg("groups") = 1,
           py::arg("local") = false)
      .def_readwrite("channels", &ConvGeometry::channels)
      .def_readwrite("img_size_y", &ConvGeometry::imgSizeY)
      .def_readwrite("img_size_x", &ConvGeometry::imgSizeX)
      .def_readwrite("filter_size", &ConvGeometry::filterSize)
      .def_readwrite("num_filters", &ConvGeometry::numFilters)
      .def_readwrite("padding", &ConvGeometry::padding)
      .def_readwrite("stride", &ConvGeometry::stride)
      .def_readwrite("modules_y", &ConvGeometry::modulesY)
      .def_readwrite("modules_x", &ConvGeometry::modulesX)
      .def_readwrite("groups", &ConvGeometry::groups)
      .def_readwrite("local", &ConvGeometry::local)
      .def_property_readonly("filter_channels", &ConvGeometry::filterChannels)
      .def_property_readonly("modules", &ConvGeometry::modules)
      .def_property_readonly("image_rows", &ConvGeometry::imageRows)
      .def_property_readonly("filter_rows", &ConvGeometry::filterRows)
      .def_property_readonly("hid_rows", &ConvGeometry::hidRows)
      .def_static("output_size", [](int64_t imgSize, int64_t filterSize, int64_t padding, int64_t stride) {
        return ConvGeometry::outputSize(as_int(imgSize, "img_size"), as_int(filterSize, "filter_size"),
                                        as_int(padding, "padding"), as_int(stride, "stride"));
      }, py::arg("img_size"), py::arg("filter_size"), py::arg("padding") = 0, py::arg("stride") = 1,
         "cuda-convnet's number of modules along one axis: 1 + ceil((2 * padding + img_size - filter_size) / stride)")
      .def("__repr__", [](const ConvGeometry& g) {
        std::ostringstream os;
        os << "ConvGeometry(channels=" << g.channels << ", img_size_y=" << g.imgSizeY << ", img_size_x=" << g.imgSizeX
           << ", filter_size=" << g.filterSize << ", num_filters=" << g.numFilters << ", padding=" << g.padding
           << ", stride=" << g.stride << ", modules_y=" << g.modulesY << ", modules_x=" << g.modulesX
           << ", groups=" << g.groups << ", local=" << (g.local ? "True" : "False") << ")";
        return os.str();
      });

  m.def("filter_acts", [](py::handle images, py::handle filters, py::handle targets, ConvGeometry g,
                          float scaleTargets, float scaleOutput) {
    Tensor x = as_tensor(images, "images"), w = as_tensor(filters, "filters"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::filterActs(x, w, t, g, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("filters"), py::arg("targets"), py::arg("geometry"), py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f,
     "targets (num_filters, modules_y, modules_x, n) = scale_targets * targets + scale_output * filters (*) images");

  m.def("img_acts", [](py::handle hidActs, py::handle filters, py::handle targets, ConvGeometry g,
                       float scaleTargets, float scaleOutput) {
    Tensor h = as_tensor(hidActs, "hid_acts"), w = as_tensor(filters, "filters"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::imgActs(h, w, t, g, scaleTargets, scaleOutput);
  }, py::arg("hid_acts"), py::arg("filters"), py::arg("targets"), py::arg("geometry"), py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f,
     "targets (channels, img_size_y, img_size_x, n) = scale_targets * targets\n"
     "    + scale_output * (gradient of sum(hid_acts * filter_acts(images)) with respect to the images)");

  m.def("weight_acts", [](py::handle images, py::handle hidActs, py::handle targets, ConvGeometry g,
                          float scaleTargets, float scaleOutput) {
    Tensor x = as_tensor(images, "images"), h = as_tensor(hidActs, "hid_acts"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::weightActs(x, h, t, g, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("hid_acts"), py::arg("targets"), py::arg("geometry"), py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f,
     "targets (filters' shape) = scale_targets * targets + scale_output * gradient of the filters, summed over images");
}

}  // namespace ccn::bindings
