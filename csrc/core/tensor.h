// Tensor: a float32 array with a shape, element strides and a device. Storage is shared
// (views and reshapes alias it) and comes from the device's caching allocator, or wraps
// memory owned by someone else (a NumPy array) without a copy.
//
// Layouts follow cuda-convnet: activations are (channels, rows, cols, numImages) with the
// image index fastest; a "matrix view" of a tensor is (product of all dims but the last,
// last dim), which is how ops see activations, filters and gradients.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"

namespace ccn {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  // A new, uninitialised, contiguous tensor on `device`.
  static Tensor empty(const Shape& shape, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, Device device = Device::cpu());
  // A tensor over memory owned by `owner` (kept alive as long as the tensor is).
  static Tensor wrap(float* data, const Shape& shape, const Shape& strides, Device device,
                     std::shared_ptr<void> owner);

  bool defined() const { return defined_; }
  float* data() const { return data_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t size(int dim) const;
  int64_t numel() const;
  Device device() const { return device_; }
  bool is_contiguous() const;

  // Matrix view used by ops: rows = product of all dims but the last, cols = last dim.
  int64_t rows() const;
  int64_t cols() const;

  // A view with another shape over the same (contiguous) storage.
  Tensor reshape(const Shape& shape) const;
  // A contiguous copy on `device`.
  Tensor to(Device device) const;
  Tensor clone() const { return to(device_); }
  // Copies src's elements into this tensor (same element count, any devices).
  void copy_from(const Tensor& src);
  void fill(float value);

 private:
  float* data_ = nullptr;
  Shape shape_;
  Shape strides_;
  Device device_;
  std::shared_ptr<void> owner_;
  bool defined_ = false;
};

// Strides (in elements) of a contiguous row-major tensor of this shape.
Shape contiguous_strides(const Shape& shape);
// Raw byte copy between any two devices (blocking with respect to the host).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

}  // namespace ccn
