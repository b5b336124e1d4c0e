// The ccn._core extension module: tensors, every op, and the layer graph.
#include <pybind11/pybind11.h>

#include "bindings/convert.h"
#include "core/error.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "convnet engine: tensors, ops (CPU and CUDA) and the layer graph";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ccn::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const ccn::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  ccn::bindings::bind_tensor(m);
  ccn::bindings::bind_conv(m);
  ccn::bindings::bind_pool(m);
  ccn::bindings::bind_norm(m);
  ccn::bindings::bind_neuron(m);
  ccn::bindings::bind_dense(m);
  ccn::bindings::bind_cost(m);
  ccn::bindings::bind_image(m);
  ccn::bindings::bind_net(m);
  ccn::bindings::bind_nccl(m);
}
