// Micro-batches from host vectors to the training device. Included only by LibTorch translation units.
#pragma once
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/Event.h>

namespace ddpbench::train {

// On a GPU, a micro-batch's tokens and labels go through pinned host buffers, one per micro-step and
// field, allocated at the first step (grown if a later batch is larger) and reused after, and are
// copied with non_blocking on the device's current stream: the stream the forward pass runs on, so
// the copy is ordered before the tensor's first use without the host waiting for it. A buffer is
// written again only once an event recorded after its last copy has completed, so the host never
// overwrites bytes the device has not read yet. On the CPU the values are copied into a new tensor,
// as before.
class MicroBatchStager {
 public:
  MicroBatchStager(const at::Device& device, int micro_steps);
  // values: rows x cols int64, row-major; slot: 0 .. 2 x micro_steps - 1 (micro-step x field).
  at::Tensor to_device(const std::vector<std::int64_t>& values, int rows, int cols, int slot);
  // The pinned buffer behind a slot (undefined on the CPU, or before its first use): for tests.
  at::Tensor pinned_buffer(int slot) const {
    return slots_.empty() ? at::Tensor() : slots_.at(static_cast<std::size_t>(slot)).pinned;
  }

 private:
  struct Slot {
    at::Tensor pinned;  // int64, pinned host memory
    c10::Event copied;  // recorded on the copy's stream after the copy
    explicit Slot(c10::DeviceType type) : copied(type) {}
  };
  at::Device device_;
  std::vector<Slot> slots_;
};

}  // namespace ddpbench::train
