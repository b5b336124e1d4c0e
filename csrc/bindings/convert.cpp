#include "bindings/convert.h"

#include <limits>
#include <memory>

#include "core/error.h"

namespace ccn::bindings {

static Tensor from_numpy(py::handle obj, const char* name, bool writeable) {
  CCN_CHECK_TYPE(py::isinstance<py::array>(obj), "argument '", name,
                 "' must be a numpy.ndarray of float32 or a ccn Tensor, got ",
                 std::string(py::str(py::type::of(obj).attr("__name__"))));
  py::array array = py::reinterpret_borrow<py::array>(obj);
  CCN_CHECK_TYPE(array.dtype().is(py::dtype::of<float>()), "argument '", name, "' must have dtype float32, got ",
                 std::string(py::str(array.dtype())));
  CCN_CHECK(array.ndim() >= 1 && array.ndim() <= 8, "argument '", name, "' must have 1 to 8 dimensions, got ",
            array.ndim());
  Shape shape(array.ndim()), strides(array.ndim());
  for (int i = 0; i < array.ndim(); ++i) {
    shape[i] = array.shape(i);
    CCN_CHECK(shape[i] <= std::numeric_limits<int32_t>::max(), "argument '", name, "': dimension ", i,
              " is too large (", shape[i], ")");
    CCN_CHECK(array.strides(i) % static_cast<py::ssize_t>(sizeof(float)) == 0, "argument '", name,
              "' has strides that are not a multiple of the element size");
    strides[i] = array.strides(i) / static_cast<py::ssize_t>(sizeof(float));
  }
  CCN_CHECK(array.flags() & py::array::c_style, "argument '", name,
            "' must be C-contiguous (use numpy.ascontiguousarray), got strides ", shape_str(strides));
  CCN_CHECK(!writeable || array.writeable(), "argument '", name, "' is an output and must be writeable");
  // Keep the array alive while the tensor is; the GIL is needed to drop the reference.
  auto* keep = new py::object(py::reinterpret_borrow<py::object>(obj));
  std::shared_ptr<void> owner(keep, [](void* p) {
    py::gil_scoped_acquire gil;
    delete static_cast<py::object*>(p);
  });
  float* data = static_cast<float*>(writeable ? array.mutable_data() : const_cast<void*>(array.data()));
  return Tensor::wrap(data, shape, contiguous_strides(shape), Device::cpu(), owner);
}

Tensor as_tensor(py::handle obj, const char* name) {
  if (py::isinstance<Tensor>(obj)) return obj.cast<Tensor>();
  return from_numpy(obj, name, false);
}

Tensor as_target(py::handle obj, const char* name) {
  if (py::isinstance<Tensor>(obj)) return obj.cast<Tensor>();
  return from_numpy(obj, name, true);
}

py::array_t<float> to_numpy(const Tensor& t) {
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  py::array_t<float> out(shape);
  Tensor view = Tensor::wrap(out.mutable_data(), t.shape(), contiguous_strides(t.shape()), Device::cpu(), nullptr);
  {
    py::gil_scoped_release release;
    view.copy_from(t);
  }
  return out;
}

int as_int(int64_t value, const char* name) {
  CCN_CHECK(value >= 0 && value <= std::numeric_limits<int32_t>::max(), "parameter '", name,
            "' must be between 0 and 2^31 - 1, got ", value);
  return static_cast<int>(value);
}

}  // namespace ccn::bindings
