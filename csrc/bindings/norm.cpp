// Python bindings of the norm family: NormGeometry (keyword constructor, snake_case
// read-write fields) and the forward / undo routines of rnorm, cmrnorm and cnorm.
#include <string>

#include "bindings/convert.h"
#include "core/error.h"
#include "ops/norm.h"

namespace ccn::bindings {

void bind_norm(py::module_& m) {
  py::class_<NormGeometry>(m, "NormGeometry",
                           "Normalization geometry: add_scale is the layer file's scale already divided by "
                           "size^2 (rnorm, cnorm) or size (cmrnorm).")
      .def(py::init([](int channels, int imgSizeY, int imgSizeX, int size, float addScale, float powScale,
                       float minDiv, bool blocked) {
             NormGeometry g;
             g.channels = channels;
             g.imgSizeY = imgSizeY;
             g.imgSizeX = imgSizeX;
             g.size = size;
             g.addScale = addScale;
             g.powScale = powScale;
             g.minDiv = minDiv;
             g.blocked = blocked;
             return g;
           }),
           py::kw_only(), py::arg("channels"), py::arg("img_size_y"), py::arg("img_size_x"), py::arg("size"),
           py::arg("add_scale"), py::arg("pow_scale"), py::arg("min_div") = 1.f, py::arg("blocked") = false)
      .def_readwrite("channels", &NormGeometry::channels)
      .def_readwrite("img_size_y", &NormGeometry::imgSizeY)
      .def_readwrite("img_size_x", &NormGeometry::imgSizeX)
      .def_readwrite("size", &NormGeometry::size)
      .def_readwrite("add_scale", &NormGeometry::addScale)
      .def_readwrite("pow_scale", &NormGeometry::powScale)
      .def_readwrite("min_div", &NormGeometry::minDiv)
      .def_readwrite("blocked", &NormGeometry::blocked)
      .def("__repr__", [](const NormGeometry& g) {
        return detail::format("NormGeometry(channels=", g.channels, ", img_size_y=", g.imgSizeY,
                              ", img_size_x=", g.imgSizeX, ", size=", g.size, ", add_scale=", g.addScale,
                              ", pow_scale=", g.powScale, ", min_div=", g.minDiv,
                              ", blocked=", g.blocked ? "True" : "False", ")");
      });

  // rnorm and cmrnorm share their signatures.
  using Forward = void (*)(const Tensor&, Tensor&, Tensor&, const NormGeometry&, float, float);
  using Undo = void (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&, const NormGeometry&,
                        float, float);
  auto bind_response = [&m](const char* name, const char* undoName, Forward forward, Undo undo, const char* doc) {
    m.def(name, [forward](py::handle images, py::handle denoms, py::handle targets, const NormGeometry& geometry,
                          float scaleTargets, float scaleOutput) {
      Tensor x = as_tensor(images, "images"), d = as_target(denoms, "denoms"), t = as_target(targets, "targets");
      py::gil_scoped_release release;
      forward(x, d, t, geometry, scaleTargets, scaleOutput);
    }, py::arg("images"), py::arg("denoms"), py::arg("targets"), py::arg("geometry"), py::arg("scale_targets") = 0.f,
       py::arg("scale_output") = 1.f, doc);
    m.def(undoName, [undo](py::handle outGrads, py::handle images, py::handle acts, py::handle denoms,
                           py::handle targets, const NormGeometry& geometry, float scaleTargets, float scaleOutput) {
      Tensor g = as_tensor(outGrads, "out_grads"), x = as_tensor(images, "images"), y = as_tensor(acts, "acts");
      Tensor d = as_tensor(denoms, "denoms"), t = as_target(targets, "targets");
      py::gil_scoped_release release;
      undo(g, x, y, d, t, geometry, scaleTargets, scaleOutput);
    }, py::arg("out_grads"), py::arg("images"), py::arg("acts"), py::arg("denoms"), py::arg("targets"),
       py::arg("geometry"), py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
       "Gradient with respect to images, given the forward pass's images, acts (output) and denoms.");
  };
  bind_response("response_norm", "response_norm_undo", &ops::responseNorm, &ops::responseNormUndo,
                "rnorm: denoms = min_div + add_scale * (sum of x^2 over the spatial window); "
                "targets = scale_targets * targets + scale_output * x * denoms^-pow_scale");
  bind_response("response_norm_cross_map", "response_norm_cross_map_undo", &ops::responseNormCrossMap,
                &ops::responseNormCrossMapUndo,
                "cmrnorm: denoms = min_div + add_scale * (sum of x^2 over the channel window, or block); "
                "targets = scale_targets * targets + scale_output * x * denoms^-pow_scale");

  m.def("contrast_norm", [](py::handle images, py::handle meanDiffs, py::handle denoms, py::handle targets,
                            const NormGeometry& geometry, float scaleTargets, float scaleOutput) {
    Tensor x = as_tensor(images, "images"), md = as_target(meanDiffs, "mean_diffs");
    Tensor d = as_target(denoms, "denoms"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::contrastNorm(x, md, d, t, geometry, scaleTargets, scaleOutput);
  }, py::arg("images"), py::arg("mean_diffs"), py::arg("denoms"), py::arg("targets"), py::arg("geometry"),
     py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "cnorm: mean_diffs = x - (spatial window mean of x); denoms = min_div + add_scale * (window sum of "
     "mean_diffs^2); targets = scale_targets * targets + scale_output * x * denoms^-pow_scale");

  m.def("contrast_norm_undo", [](py::handle outGrads, py::handle images, py::handle meanDiffs, py::handle acts,
                                 py::handle denoms, py::handle targets, const NormGeometry& geometry,
                                 float scaleTargets, float scaleOutput) {
    Tensor g = as_tensor(outGrads, "out_grads"), x = as_tensor(images, "images");
    Tensor md = as_tensor(meanDiffs, "mean_diffs"), y = as_tensor(acts, "acts"), d = as_tensor(denoms, "denoms");
    Tensor t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::contrastNormUndo(g, x, md, y, d, t, geometry, scaleTargets, scaleOutput);
  }, py::arg("out_grads"), py::arg("images"), py::arg("mean_diffs"), py::arg("acts"), py::arg("denoms"),
     py::arg("targets"), py::arg("geometry"), py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "Exact cnorm gradient with respect to images (the window mean's term included).");
}

}  // namespace ccn::bindings
