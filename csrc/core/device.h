// A physical device: the CPU, or one CUDA ordinal. Tensors carry one; ops dispatch on it.
#pragma once
#include <cstdint>
#include <string>

namespace ccn {

enum class DeviceType { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;  // CUDA ordinal; 0 for the CPU

  static Device cpu() { return Device{DeviceType::CPU, 0}; }
  static Device cuda(int ordinal) { return Device{DeviceType::CUDA, ordinal}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
  // Parses "cpu", "cuda", "cuda:N" or "N" (a CUDA ordinal).
  static Device parse(const std::string& text);
};

// True when the engine was compiled with CUDA and at least one GPU is visible.
bool cuda_available();
int cuda_device_count();
// Bytes a device can still give: the kernel's MemAvailable for the CPU, the free memory of
// a GPU; -1 when unknown.
int64_t available_memory(Device device);

}  // namespace ccn
