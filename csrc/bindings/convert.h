// Conversions between Python objects and engine tensors, with argument checks that name
// the argument. A NumPy array becomes a CPU tensor over the array's own memory (no copy);
// a ccn._core.Tensor passes through (any device).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "core/tensor.h"

namespace ccn::bindings {

namespace py = pybind11;

// An input: float32, C-contiguous, at most 8 dimensions, no dimension over 2^31 - 1.
Tensor as_tensor(py::handle obj, const char* name);
// An output: as as_tensor, and writeable.
Tensor as_target(py::handle obj, const char* name);
// A NumPy copy of a tensor (from any device).
py::array_t<float> to_numpy(const Tensor& t);
// Reads a non-negative int that fits an int32 kernel parameter.
int as_int(int64_t value, const char* name);

void bind_tensor(py::module_& m);
void bind_conv(py::module_& m);
void bind_pool(py::module_& m);
void bind_norm(py::module_& m);
void bind_neuron(py::module_& m);
void bind_dense(py::module_& m);
void bind_cost(py::module_& m);
void bind_image(py::module_& m);
void bind_net(py::module_& m);
void bind_nccl(py::module_& m);

}  // namespace ccn::bindings
