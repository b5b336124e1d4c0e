// NCCL all-reduce (see core/nccl.h). Host code only: NCCL's functions are looked up in the
// library opened by load(), and every call runs on the communicator's own stream and is
// waited for, so a caller sees the summed tensor on return.
#include "core/nccl.h"

#include "core/error.h"

#ifdef CCN_WITH_NCCL
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <cstring>
#include <mutex>

#include "cuda/cuda_check.cuh"

namespace ccn::nccl {
namespace {

struct Api {
  ncclResult_t (*getUniqueId)(ncclUniqueId*) = nullptr;
  ncclResult_t (*commInitRank)(ncclComm_t*, int, ncclUniqueId, int) = nullptr;
  ncclResult_t (*allReduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                            cudaStream_t) = nullptr;
  ncclResult_t (*commDestroy)(ncclComm_t) = nullptr;
  const char* (*errorString)(ncclResult_t) = nullptr;
};

Api& api() {
  static Api instance;
  return instance;
}

std::mutex& loadMutex() {
  static std::mutex m;
  return m;
}

void check(ncclResult_t result, const char* what) {
  if (result != ncclSuccess)
    throw std::runtime_error(std::string("NCCL ") + what + ": " + (api().errorString ? api().errorString(result) : "error"));
}

const Api& loaded() {
  CCN_CHECK(api().allReduce, "NCCL is not loaded (ccn.distributed loads it for GPU runs under MPI)");
  return api();
}

}  // namespace

bool compiled() { return true; }

void load(const std::string& library) {
  std::lock_guard<std::mutex> lock(loadMutex());
  if (api().allReduce) return;
  const std::string name = library.empty() ? "libnccl.so.2" : library;
  void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!handle) throw std::runtime_error("cannot open NCCL (" + name + "): " + dlerror());
  Api a;
  auto find = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, symbol));
    if (!fn) throw std::runtime_error(std::string("NCCL library ") + name + " lacks " + symbol);
  };
  find(a.getUniqueId, "ncclGetUniqueId");
  find(a.commInitRank, "ncclCommInitRank");
  find(a.allReduce, "ncclAllReduce");
  find(a.commDestroy, "ncclCommDestroy");
  find(a.errorString, "ncclGetErrorString");
  api() = a;
}

std::string uniqueId() {
  ncclUniqueId id;
  check(loaded().getUniqueId(&id), "getUniqueId");
  return std::string(id.internal, sizeof(id.internal));
}

Communicator::Communicator(const std::string& id, int rank, int size, int device)
    : rank_(rank), size_(size), device_(device) {
  CCN_CHECK(id.size() == sizeof(ncclUniqueId), "NCCL: a unique id has ", sizeof(ncclUniqueId), " bytes, got ",
            id.size());
  CCN_CHECK(size >= 1 && rank >= 0 && rank < size, "NCCL: rank ", rank, " of ", size, " does not exist");
  ncclUniqueId uid;
  std::memcpy(uid.internal, id.data(), sizeof(uid.internal));
  CCN_CUDA_CHECK(cudaSetDevice(device));
  cudaStream_t s;
  CCN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream_ = s;
  ncclComm_t comm;
  check(loaded().commInitRank(&comm, size, uid, rank), "commInitRank");
  comm_ = comm;
}

Communicator::~Communicator() {
  if (comm_) api().commDestroy(static_cast<ncclComm_t>(comm_));
  if (stream_) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

void Communicator::allReduceSum(Tensor& t) {
  CCN_CHECK(t.device().is_cuda() && t.device().index == device_, "NCCL all-reduce: the tensor is on ",
            t.device().str(), ", the communicator on cuda:", device_);
  CCN_CHECK(t.is_contiguous(), "NCCL all-reduce: the tensor must be contiguous");
  CCN_CUDA_CHECK(cudaSetDevice(device_));
  auto s = static_cast<cudaStream_t>(stream_);
  check(loaded().allReduce(t.data(), t.data(), static_cast<size_t>(t.numel()), ncclFloat32, ncclSum,
                           static_cast<ncclComm_t>(comm_), s),
        "allReduce");
  CCN_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace ccn::nccl
#endif  // CCN_WITH_NCCL
