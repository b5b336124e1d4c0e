// Python bindings of Tensor, devices, the allocator and the thread pool.
#include <pybind11/stl.h>

#include "bindings/convert.h"
#include <limits>

#include "core/allocator.h"
#include "core/error.h"
#include "core/thread_pool.h"
#ifdef CCN_WITH_CUDA
#include "core/cuda_runtime.h"
#endif

namespace ccn::bindings {

static Shape checked_shape(const std::vector<int64_t>& shape) {
  CCN_CHECK(!shape.empty() && shape.size() <= 8, "shape must have 1 to 8 dimensions");
  for (int64_t d : shape) CCN_CHECK(d >= 0 && d <= std::numeric_limits<int32_t>::max(), "bad dimension ", d);
  return Shape(shape.begin(), shape.end());
}

void bind_tensor(py::module_& m) {
  py::class_<Tensor>(m, "Tensor", "A float32 array on a device (cpu or cuda:N), cuda-convnet layout.")
      .def(py::init([](py::handle array, const std::string& device) {
             return as_tensor(array, "array").to(Device::parse(device));
           }),
           py::arg("array"), py::arg("device") = "cpu", "A copy of a float32 NumPy array on `device`.")
      .def("numpy", &to_numpy, "A NumPy copy.")
      .def("to", [](const Tensor& t, const std::string& device) { return t.to(Device::parse(device)); })
      .def_property_readonly("shape", [](const Tensor& t) { return py::tuple(py::cast(t.shape())); })
      .def_property_readonly("device", [](const Tensor& t) { return t.device().str(); })
      .def("reshape", [](const Tensor& t, const std::vector<int64_t>& shape) { return t.reshape(checked_shape(shape)); })
      .def("fill", &Tensor::fill, py::call_guard<py::gil_scoped_release>())
      .def("copy_from", [](Tensor& t, py::handle src) { t.copy_from(as_tensor(src, "src")); })
      .def("__repr__", [](const Tensor& t) { return "ccn.Tensor(shape=" + shape_str(t.shape()) + ", device=" + t.device().str() + ")"; });

  m.def("empty", [](const std::vector<int64_t>& shape, const std::string& device) {
    return Tensor::empty(checked_shape(shape), Device::parse(device));
  }, py::arg("shape"), py::arg("device") = "cpu");
  m.def("cuda_device_count", &cuda_device_count, "Number of visible CUDA devices (0 without the CUDA backend).");
#ifdef CCN_WITH_CUDA
  m.attr("has_cuda_backend") = true;
#else
  m.attr("has_cuda_backend") = false;
#endif
  // The CUDA backend built on tools/cuda_emu (kernels run on the CPU, slowly, for checking).
#ifdef CCN_CUDA_EMULATED
  m.attr("cuda_emulated") = true;
#else
  m.attr("cuda_emulated") = false;
#endif
  m.def("synchronize", [](const std::string& device) {
    Device d = Device::parse(device);
#ifdef CCN_WITH_CUDA
    if (d.is_cuda()) cuda::synchronize_device(d.index);
#endif
    (void)d;
  }, py::arg("device") = "cpu", py::call_guard<py::gil_scoped_release>(),
     "Waits until all work queued on `device` is done (a no-op on the CPU).");
  m.def("num_threads", &num_threads);
  // without the GIL: it waits for a parallel region another Python thread may be running
  m.def("set_num_threads", &set_num_threads, py::arg("n"), py::call_guard<py::gil_scoped_release>());
  m.def("allocator_stats", [](const std::string& device) {
    AllocatorStats s = allocator_stats(Device::parse(device));
    py::dict d;
    d["bytes_in_use"] = s.bytes_in_use;
    d["peak_bytes_in_use"] = s.peak_bytes_in_use;
    d["bytes_cached"] = s.bytes_cached;
    return d;
  }, py::arg("device") = "cpu");
  m.def("reset_peak_stats", [](const std::string& device) { reset_peak_stats(Device::parse(device)); },
        py::arg("device") = "cpu");
  m.def("release_cached_memory", &release_cached_memory);
}

}  // namespace ccn::bindings
