// Double-buffered, device-resident data batches (see data_stager.h).
#include "net/data_stager.h"

#include <cstring>
#include <string>

#include "core/error.h"
#ifdef CCN_WITH_CUDA
#include "core/cuda_runtime.h"
#endif

namespace ccn::net {

DataStager::~DataStager() { release(); }

void DataStager::release() {
#ifdef CCN_WITH_CUDA
  for (Entry& e : entries_)
    for (Slot& s : e.slots) {
      if (s.event) {
        cuda::synchronize_event(s.event);
        cuda::destroy_event(s.event);
      }
      if (s.pinned) cuda::host_free_pinned(s.pinned);
    }
#endif
  entries_.clear();
}

void DataStager::configure(std::vector<Need> needs) {
  release();
  for (const Need& need : needs) {
    bool seen = false;
    for (const Entry& e : entries_) seen = seen || (e.need.dataIndex == need.dataIndex && e.need.logical == need.logical);
    if (seen) continue;
    Entry e;
    e.need = need;
#ifdef CCN_WITH_CUDA
    if (need.device.is_cuda()) e.copyStream = cuda::create_stream(need.device.index);
#endif
    entries_.push_back(std::move(e));
  }
  staged_ = false;
  frontCases_ = 0;
}

void DataStager::copyInto(Entry& entry, Slot& slot, const Tensor& src) {
  const Device dev = entry.need.device;
  const Shape shape = src.shape();
  if (!slot.onDevice.defined() || slot.onDevice.shape() != shape) slot.onDevice = Tensor::empty(shape, dev);
  if (!dev.is_cuda()) {
    slot.onDevice.copy_from(src);
    return;
  }
#ifdef CCN_WITH_CUDA
  const size_t bytes = static_cast<size_t>(src.numel()) * sizeof(float);
  if (slot.event) cuda::synchronize_event(slot.event);  // the last copy from this pinned buffer is done
  if (slot.pinnedBytes < bytes) {
    if (slot.pinned) cuda::host_free_pinned(slot.pinned);
    slot.pinned = nullptr;
    slot.pinned = cuda::host_alloc_pinned(bytes);
    slot.pinnedBytes = bytes;
  }
  if (!slot.event) slot.event = cuda::create_event(dev.index);
  Tensor host = src.device().is_cpu() ? src : src.to(Device::cpu());
  std::memcpy(slot.pinned, host.data(), bytes);
  cuda::copy_to_device_async(slot.onDevice.data(), dev.index, slot.pinned, bytes, entry.copyStream);
  cuda::record_event(slot.event, entry.copyStream);
#endif
}

int DataStager::checkBatch(const std::vector<Need>& needs, const std::vector<Tensor>& data) {
  CCN_CHECK(!needs.empty(), "the net has no data layer");
  int numCases = -1, firstIdx = -1;
  for (const Need& need : needs) {
    const int idx = need.dataIndex;
    CCN_CHECK(idx < static_cast<int>(data.size()), "data layer '", need.layer, "' reads data[", idx, "] but ",
              data.size(), " data array(s) were given");
    const Tensor& t = data[idx];
    CCN_CHECK(t.defined() && t.is_contiguous(), "data[", idx, "] must be a contiguous array");
    CCN_CHECK(t.ndim() == 2 && t.rows() == need.rows && t.cols() > 0, "data[", idx, "] must have shape (", need.rows,
              ", numCases) for data layer '", need.layer, "', got ", shape_str(t.shape()));
    CCN_CHECK(t.cols() <= INT32_MAX, "data[", idx, "]: too many cases");
    if (numCases < 0) {
      numCases = static_cast<int>(t.cols());
      firstIdx = idx;
    }
    CCN_CHECK(t.cols() == numCases, "data[", idx, "] has ", t.cols(), " cases (columns) but data[", firstIdx,
              "] has ", numCases);
  }
  return numCases;
}

void DataStager::stage(const std::vector<Tensor>& data) {
  std::vector<Need> needs;
  for (const Entry& e : entries_) needs.push_back(e.need);
  const int numCases = checkBatch(needs, data);
  const int back = 1 - frontSlot_;
  for (Entry& e : entries_) copyInto(e, e.slots[back], data[e.need.dataIndex]);
  staged_ = true;
  stagedCases_ = numCases;
}

int DataStager::swap() {
  CCN_CHECK(staged_, "no data batch is staged (stage_batch first)");
  frontSlot_ = 1 - frontSlot_;
#ifdef CCN_WITH_CUDA
  for (Entry& e : entries_)
    if (e.slots[frontSlot_].event) cuda::synchronize_event(e.slots[frontSlot_].event);
#endif
  staged_ = false;
  frontCases_ = stagedCases_;
  return frontCases_;
}

const Tensor& DataStager::front(int dataIndex, int logical) const {
  for (const Entry& e : entries_)
    if (e.need.dataIndex == dataIndex && e.need.logical == logical) {
      CCN_CHECK(e.slots[frontSlot_].onDevice.defined(), "no data batch is loaded (stage_batch, then begin_batch)");
      return e.slots[frontSlot_].onDevice;
    }
  throw ValueError("no data layer reads data[" + std::to_string(dataIndex) + "] on logical device " +
                   std::to_string(logical));
}

}  // namespace ccn::net
