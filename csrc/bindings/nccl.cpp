// Python bindings of the NCCL all-reduce (core/nccl.h): ccn.distributed uses them to sum the
// gradients of nets on GPUs across MPI ranks.
#include <pybind11/stl.h>

#include "bindings/convert.h"
#include "core/nccl.h"

namespace ccn::bindings {

void bind_nccl(py::module_& m) {
  m.attr("has_nccl") = nccl::compiled();
  m.def("nccl_load", &nccl::load, py::arg("library") = "",
        "Opens the NCCL library (a path, or '' for libnccl.so.2 on the loader's path).");
  m.def("nccl_unique_id", []() { return py::bytes(nccl::uniqueId()); }, "A new NCCL unique id (bytes).");
  py::class_<nccl::Communicator>(m, "NcclCommunicator", "One rank of an NCCL group, on one CUDA device.")
      .def(py::init([](py::bytes id, int rank, int size, int device) {
             return std::make_unique<nccl::Communicator>(std::string(id), rank, size, device);
           }),
           py::arg("unique_id"), py::arg("rank"), py::arg("size"), py::arg("device"))
      .def("all_reduce", [](nccl::Communicator& c, Tensor& t) { c.allReduceSum(t); }, py::arg("tensor"),
           py::call_guard<py::gil_scoped_release>(), "tensor = its sum over the ranks, in place (waits for it).")
      .def_property_readonly("rank", &nccl::Communicator::rank)
      .def_property_readonly("size", &nccl::Communicator::size);
}

}  // namespace ccn::bindings
