// The NCCL entry points of a build without NCCL (see core/nccl.h): each says so.
#include "core/nccl.h"

#include "core/error.h"

#ifndef CCN_WITH_NCCL
namespace ccn::nccl {
namespace {
[[noreturn]] void absent() {
  throw std::runtime_error("this build of ccn has no NCCL path (it needs CUDA and NCCL's header at build time)");
}
}  // namespace

bool compiled() { return false; }
void load(const std::string&) { absent(); }
std::string uniqueId() { absent(); }
Communicator::Communicator(const std::string&, int, int, int) { absent(); }
Communicator::~Communicator() = default;
void Communicator::allReduceSum(Tensor&) { absent(); }
}  // namespace ccn::nccl
#endif
