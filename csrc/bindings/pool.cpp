// Python bindings of the pool family: PoolKind, the two geometry structs (keyword
// constructors, snake_case read-write fields) and the five routines.
#include <string>

#include "bindings/convert.h"
#include "core/error.h"
#include "ops/pool.h"

namespace ccn::bindings {
namespace {

// A pool kind argument is a PoolKind or its layer-file name: "max", "avg" or "maxabs".
PoolKind as_pool_kind(py::handle obj) {
  if (py::isinstance<py::str>(obj)) {
    std::string name = obj.cast<std::string>();
    if (name == "max") return PoolKind::Max;
    if (name == "avg") return PoolKind::Avg;
    if (name == "maxabs") return PoolKind::MaxAbs;
    throw ValueError("unknown pool kind '" + name + "' (expected 'max', 'avg' or 'maxabs')");
  }
  CCN_CHECK_TYPE(py::isinstance<PoolKind>(obj), "argument 'kind' must be a PoolKind or one of 'max', 'avg', 'maxabs'");
  return obj.cast<PoolKind>();
}

std::string repr(const PoolGeometry& g) {
  return detail::format("PoolGeometry(channels=", g.channels, ", img_size_y=", g.imgSizeY, ", img_size_x=", g.imgSizeX,
                        ", size_x=", g.sizeX, ", start=", g.start, ", stride=", g.stride, ", outputs_y=", g.outputsY,
                        ", outputs_x=", g.outputsX, ")");
}

std::string repr(const CrossMapPoolGeometry& g) {
  return detail::format("CrossMapPoolGeometry(channels=", g.channels, ", pixels=", g.pixels, ", size=", g.size,
                        ", start=", g.start, ", stride=", g.stride, ", outputs=", g.outputs, ")");
}

}  // namespace

void bind_pool(py::module_& m) {
  py::enum_<PoolKind>(m, "PoolKind", "What a local pool computes over its window.")
      .value("max", PoolKind::Max)
      .value("avg", PoolKind::Avg)
      .value("maxabs", PoolKind::MaxAbs);

  py::class_<PoolGeometry>(m, "PoolGeometry",
                           "Local pooling geometry. outputs_y / outputs_x of 0 take cuda-convnet's default count.")
      .def(py::init([](int channels, int imgSizeY, int imgSizeX, int sizeX, int start, int stride, int outputsY,
                       int outputsX) {
             PoolGeometry g;
             g.channels = channels;
             g.imgSizeY = imgSizeY;
             g.imgSizeX = imgSizeX;
             g.sizeX = sizeX;
             g.start = start;
             g.stride = stride;
             g.outputsY = outputsY ? outputsY : PoolGeometry::outputSize(imgSizeY, sizeX, start, stride);
             g.outputsX = outputsX ? outputsX : PoolGeometry::outputSize(imgSizeX, sizeX, start, stride);
             return g;
           }),
           py::kw_only(), py::arg("channels"), py::arg("img_size_y"), py::arg("img_size_x"), py::arg("size_x"),
           py::arg("start") = 0, py::arg("stride") = 1, py::arg("outputs_y") = 0, py::arg("outputs_x") = 0)
      .def_readwrite("channels", &PoolGeometry::channels)
      .def_readwrite("img_size_y", &PoolGeometry::imgSizeY)
      .def_readwrite("img_size_x", &PoolGeometry::imgSizeX)
      .def_readwrite("size_x", &PoolGeometry::sizeX)
      .def_readwrite("start", &PoolGeometry::start)
      .def_readwrite("stride", &PoolGeometry::stride)
      .def_readwrite("outputs_y", &PoolGeometry::outputsY)
      .def_readwrite("outputs_x", &PoolGeometry::outputsX)
      .def_static("output_size", &PoolGeometry::outputSize, py::arg("img_size"), py::arg("size_x"), py::arg("start"),
                  py::arg("stride"), "cuda-convnet's output count: ceil((img_size - start - size_x) / stride) + 1")
      .def("__repr__", [](const PoolGeometry& g) { return repr(g); });

  py::class_<CrossMapPoolGeometry>(m, "CrossMapPoolGeometry",
                                   "Cross-map (over channels) max pooling geometry. outputs of 0 takes the default "
                                   "count ceil((channels - start - size) / stride) + 1.")
      .def(py::init([](int channels, int pixels, int size, int start, int stride, int outputs) {
             CrossMapPoolGeometry g;
             g.channels = channels;
             g.pixels = pixels;
             g.size = size;
             g.start = start;
             g.stride = stride;
             g.outputs = outputs ? outputs : PoolGeometry::outputSize(channels, size, start, stride);
             return g;
           }),
           py::kw_only(), py::arg("channels"), py::arg("pixels"), py::arg("size"), py::arg("start") = 0,
           py::arg("stride") = 1, py::arg("outputs") = 0)
      .def_readwrite("channels", &CrossMapPoolGeometry::channels)
      .def_readwrite("pixels", &CrossMapPoolGeometry::pixels)
      .def_readwrite("size", &CrossMapPoolGeometry::size)
      .def_readwrite("start", &CrossMapPoolGeometry::start)
      .def_readwrite("stride", &CrossMapPoolGeometry::stride)
      .def_readwrite("outputs", &CrossMapPoolGeometry::outputs)
      .def("__repr__", [](const CrossMapPoolGeometry& g) { return repr(g); });

  m.def("local_pool", [](py::handle images, py::handle targets, const PoolGeometry& geometry, py::handle kind,
                         float scaleTargets, float scaleOutput) {
    PoolKind k = as_pool_kind(kind);
    Tensor x = as_tensor(images, "images"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::localPool(x, t, geometry, k, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("targets"), py::arg("geometry"), py::arg("kind"), py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f,
     "targets = scale_targets * targets + scale_output * pool(images); kind: PoolKind or 'max'/'avg'/'maxabs'");

  m.def("local_max_undo", [](py::handle images, py::handle maxActs, py::handle outGrads, py::handle targets,
                             const PoolGeometry& geometry, float scaleTargets, float scaleOutput) {
    Tensor x = as_tensor(images, "images"), y = as_tensor(maxActs, "max_acts");
    Tensor g = as_tensor(outGrads, "out_grads"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::localMaxUndo(x, y, g, t, geometry, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("max_acts"), py::arg("out_grads"), py::arg("targets"), py::arg("geometry"),
     py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "Max / maxabs pool gradient: each output's gradient goes to the window elements equal to its value.");

  m.def("local_avg_undo", [](py::handle outGrads, py::handle targets, const PoolGeometry& geometry,
                             float scaleTargets, float scaleOutput) {
    Tensor g = as_tensor(outGrads, "out_grads"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::localAvgUndo(g, t, geometry, scaleTargets, scaleOutput);
  }, py::arg("out_grads"), py::arg("targets"), py::arg("geometry"), py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f,
     "Avg pool gradient: each output's gradient, divided by its window's in-image pixel count.");

  m.def("cross_map_max_pool", [](py::handle images, py::handle targets, const CrossMapPoolGeometry& geometry,
                                 float scaleTargets, float scaleOutput) {
    Tensor x = as_tensor(images, "images"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::crossMapMaxPool(x, t, geometry, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("targets"), py::arg("geometry"), py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f, "Max over windows of channels: (channels, pixels, n) -> (outputs, pixels, n).");

  m.def("cross_map_max_pool_undo", [](py::handle images, py::handle maxActs, py::handle outGrads, py::handle targets,
                                      const CrossMapPoolGeometry& geometry, float scaleTargets, float scaleOutput) {
    Tensor x = as_tensor(images, "images"), y = as_tensor(maxActs, "max_acts");
    Tensor g = as_tensor(outGrads, "out_grads"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::crossMapMaxPoolUndo(x, y, g, t, geometry, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("max_acts"), py::arg("out_grads"), py::arg("targets"), py::arg("geometry"),
     py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "Cross-map max pool gradient: each output's gradient goes to the channels equal to its value.");
}

}  // namespace ccn::bindings
