// NCCL all-reduce of device tensors across processes (data parallelism on GPUs). Built when
// CMake finds NCCL's header (the system's or the nvidia-nccl wheel's); the library itself is
// opened at run time (dlopen), so an engine built with NCCL still loads where it is absent.
// The processes agree on a unique id (rank 0 makes it, MPI broadcasts it) and each builds a
// Communicator for its rank and device.
#pragma once
#include <memory>
#include <string>

#include "core/tensor.h"

namespace ccn::nccl {

// Whether this build has the NCCL path.
bool compiled();
// Opens the NCCL library (a path, or "" for libnccl.so.2 on the loader's search path);
// throws RuntimeError naming what failed. Further calls do nothing.
void load(const std::string& library);
// A new unique id (128 bytes) for one group of processes.
std::string uniqueId();

class Communicator {
 public:
  Communicator(const std::string& id, int rank, int size, int device);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  // t = the element-wise sum of t over the ranks, in place; t on this communicator's device.
  void allReduceSum(Tensor& t);

 private:
  void* comm_ = nullptr;
  void* stream_ = nullptr;
  int rank_ = 0, size_ = 1, device_ = 0;
};

}  // namespace ccn::nccl
