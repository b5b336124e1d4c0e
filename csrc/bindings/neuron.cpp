// Python bindings of the neuron family.
#include "bindings/convert.h"
#include "core/error.h"
#include "ops/neuron.h"

namespace ccn::bindings {

void bind_neuron(py::module_& m) {
  py::class_<Neuron>(m, "Neuron", "An activation function by cuda-convnet's name, e.g. 'relu', 'tanh[1.7,0.66]'.")
      .def(py::init(&Neuron::parse), py::arg("name"))
      .def_readonly("a", &Neuron::a)
      .def_readonly("b", &Neuron::b);

  // A neuron argument is a Neuron or its name; a bad name is a ValueError naming it.
  auto as_neuron = [](py::handle obj) {
    if (py::isinstance<py::str>(obj)) return Neuron::parse(obj.cast<std::string>());
    CCN_CHECK_TYPE(py::isinstance<Neuron>(obj), "argument 'neuron' must be a Neuron or a neuron name");
    return obj.cast<Neuron>();
  };

  m.def("neuron_act", [as_neuron](py::handle inputs, py::handle targets, py::handle neuron, float scaleTargets,
                         float scaleOutput) {
    Neuron n = as_neuron(neuron);
    Tensor x = as_tensor(inputs, "inputs"), t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::neuronAct(x, t, n, scaleTargets, scaleOutput);
  }, py::arg("inputs"), py::arg("targets"), py::arg("neuron"), py::arg("scale_targets") = 0.f,
     py::arg("scale_output") = 1.f, "targets = scale_targets * targets + scale_output * f(inputs)");

  m.def("neuron_grad", [as_neuron](py::handle outGrads, py::handle inputs, py::handle acts, py::handle targets,
                          py::handle neuron, float scaleTargets, float scaleOutput) {
    Neuron n = as_neuron(neuron);
    Tensor g = as_tensor(outGrads, "out_grads"), x = as_tensor(inputs, "inputs"), y = as_tensor(acts, "acts");
    Tensor t = as_target(targets, "targets");
    py::gil_scoped_release release;
    ops::neuronGrad(g, x, y, t, n, scaleTargets, scaleOutput);
  }, py::arg("out_grads"), py::arg("inputs"), py::arg("acts"), py::arg("targets"), py::arg("neuron"),
     py::arg("scale_targets") = 0.f, py::arg("scale_output") = 1.f,
     "targets = scale_targets * targets + scale_output * out_grads * f'(inputs)");
}

}  // namespace ccn::bindings
