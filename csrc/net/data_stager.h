// DataStager: data batches resident on the devices that read them, double-buffered.
//
// A data batch (one (rows, numCases) array per data index) is copied once to every logical
// device whose data layers read it; the net's minibatches are then column ranges of that
// copy, sliced on the device (ops::copyColumns). stage() fills the back buffer while the
// front one is being trained on: on a CUDA device the array goes through a pinned host
// buffer and an asynchronous copy on the device's copy stream, so it overlaps the compute
// of the current batch; on the CPU it is one host copy. swap() makes the staged batch the
// front one, waiting for its copies to finish.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace ccn::net {

class DataStager {
 public:
  DataStager() = default;
  ~DataStager();
  DataStager(const DataStager&) = delete;
  DataStager& operator=(const DataStager&) = delete;

  // The (data index, rows) of each data layer and the physical device of its logical device.
  struct Need {
    int dataIndex;
    int64_t rows;
    int logical;
    Device device;
    std::string layer;  // a data layer that reads it (for messages)
  };
  // Checks a batch's arrays against the needs (index given, contiguous, (rows, numCases),
  // equal case counts); returns the number of cases.
  static int checkBatch(const std::vector<Need>& needs, const std::vector<Tensor>& data);
  void configure(std::vector<Need> needs);

  // Copies data[i] for every need into the back buffer (checked: shapes, equal case counts).
  void stage(const std::vector<Tensor>& data);
  // The staged batch becomes the front one; returns its number of cases.
  int swap();
  // The front batch's array for a data index on a logical device.
  const Tensor& front(int dataIndex, int logical) const;
  int frontCases() const { return frontCases_; }

 private:
  struct Slot {
    Tensor onDevice;                  // (rows, numCases) on the need's device
    void* pinned = nullptr;           // CUDA: the host side of the asynchronous copy
    size_t pinnedBytes = 0;
    void* event = nullptr;            // CUDA: recorded after the copy
  };
  struct Entry {
    Need need;
    Slot slots[2];
    void* copyStream = nullptr;       // CUDA: the stream of this entry's copies
  };
  void copyInto(Entry& entry, Slot& slot, const Tensor& src);
  void release();

  std::vector<Entry> entries_;
  int frontSlot_ = 0;
  bool staged_ = false;
  int stagedCases_ = 0, frontCases_ = 0;
};

}  // namespace ccn::net
