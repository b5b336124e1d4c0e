#include "core/tensor.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "core/allocator.h"
#include "core/error.h"
#ifdef CCN_WITH_CUDA
#include "core/cuda_runtime.h"
#endif

namespace ccn {

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) os << ",";
  os << ")";
  return os.str();
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

static int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Tensor Tensor::empty(const Shape& shape, Device device) {
  for (int64_t d : shape) CCN_CHECK(d >= 0, "tensor dimensions must be >= 0, got ", shape_str(shape));
  int64_t n = shape_numel(shape);
  CCN_CHECK(n < (int64_t(1) << 40), "tensor of shape ", shape_str(shape), " is too large");
  size_t bytes = static_cast<size_t>(n) * sizeof(float);
  float* data = n ? static_cast<float*>(device_alloc(device, bytes)) : nullptr;
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.device_ = device;
  t.defined_ = true;
  if (data) t.owner_ = std::shared_ptr<void>(data, [device, bytes](void* p) { device_free(device, p, bytes); });
  return t;
}

Tensor Tensor::zeros(const Shape& shape, Device device) {
  Tensor t = empty(shape, device);
  t.fill(0.0f);
  return t;
}

Tensor Tensor::wrap(float* data, const Shape& shape, const Shape& strides, Device device,
                    std::shared_ptr<void> owner) {
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.strides_ = strides;
  t.device_ = device;
  t.owner_ = std::move(owner);
  t.defined_ = true;
  return t;
}

int64_t Tensor::size(int dim) const {
  if (dim < 0) dim += ndim();
  CCN_CHECK(dim >= 0 && dim < ndim(), "dimension ", dim, " out of range for shape ", shape_str(shape_));
  return shape_[dim];
}

int64_t Tensor::numel() const { return shape_numel(shape_); }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

int64_t Tensor::rows() const {
  int64_t r = 1;
  for (int i = 0; i + 1 < ndim(); ++i) r *= shape_[i];
  return r;
}
int64_t Tensor::cols() const { return ndim() == 0 ? 1 : shape_.back(); }

Tensor Tensor::reshape(const Shape& shape) const {
  CCN_CHECK(is_contiguous(), "reshape needs a contiguous tensor");
  CCN_CHECK(shape_numel(shape) == numel(), "cannot reshape ", shape_str(shape_), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, device);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  CCN_CHECK(src.numel() == numel(), "copy_from: element counts differ: ", shape_str(src.shape()),
            " vs ", shape_str(shape_));
  CCN_CHECK(src.is_contiguous() && is_contiguous(), "copy_from needs contiguous tensors");
  if (numel() == 0 || src.data_ == data_) return;
  copy_bytes(data_, device_, src.data_, src.device_, static_cast<size_t>(numel()) * sizeof(float));
}

void Tensor::fill(float value) {
  CCN_CHECK(is_contiguous(), "fill needs a contiguous tensor");
  if (numel() == 0) return;
  if (device_.is_cpu()) {
    std::fill(data_, data_ + numel(), value);
    return;
  }
#ifdef CCN_WITH_CUDA
  cuda::fill(data_, device_.index, value, static_cast<size_t>(numel()));
#else
  CCN_FAIL("this build has no CUDA backend");
#endif
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef CCN_WITH_CUDA
  cuda::copy(dst, dst_device.is_cpu() ? -1 : dst_device.index, src,
             src_device.is_cpu() ? -1 : src_device.index, bytes);
#else
  CCN_FAIL("this build has no CUDA backend");
#endif
}

}  // namespace ccn
