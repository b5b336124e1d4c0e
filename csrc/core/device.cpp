#include "core/device.h"

#include <cstdlib>
#include <fstream>

#include "core/error.h"
#ifdef CCN_WITH_CUDA
#include "core/cuda_runtime.h"
#endif

namespace ccn {

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  std::string ordinal = text;
  if (text == "cuda") ordinal = "0";
  else if (text.rfind("cuda:", 0) == 0) ordinal = text.substr(5);
  CCN_CHECK(!ordinal.empty() && ordinal.find_first_not_of("0123456789") == std::string::npos,
            "bad device '", text, "': expected cpu, cuda, cuda:N or N");
  return cuda(std::atoi(ordinal.c_str()));
}

int cuda_device_count() {
#ifdef CCN_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

bool cuda_available() { return cuda_device_count() > 0; }

int64_t available_memory(Device device) {
  if (device.is_cuda()) {
#ifdef CCN_WITH_CUDA
    return cuda::free_bytes(device.index);
#else
    return -1;
#endif
  }
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return -1;
}

}  // namespace ccn
