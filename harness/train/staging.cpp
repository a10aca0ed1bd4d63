#include "train/staging.h"

#include <cstring>

#include <c10/core/impl/VirtualGuardImpl.h>

#include "common/error.h"

namespace ddpbench::train {

MicroBatchStager::MicroBatchStager(const at::Device& device, int micro_steps) : device_(device) {
  if (device_.is_cpu()) return;
  slots_.reserve(static_cast<std::size_t>(2 * micro_steps));
  for (int i = 0; i < 2 * micro_steps; ++i) slots_.emplace_back(device_.type());
}

at::Tensor MicroBatchStager::to_device(const std::vector<std::int64_t>& values, int rows, int cols, int slot) {
  const std::int64_t n = static_cast<std::int64_t>(rows) * cols;
  if (static_cast<std::int64_t>(values.size()) != n)
    throw RunError("micro-batch of " + std::to_string(values.size()) + " values is not " + std::to_string(rows) + " x " +
                   std::to_string(cols));
  if (device_.is_cpu())
    return at::from_blob(const_cast<std::int64_t*>(values.data()), {rows, cols}, at::kLong).clone();
  auto& s = slots_.at(static_cast<std::size_t>(slot));
  // The previous copy out of this buffer must be done before the host writes it again.
  if (s.copied.was_marked_for_recording()) s.copied.synchronize();
  if (!s.pinned.defined() || s.pinned.numel() < n)
    s.pinned = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  std::memcpy(s.pinned.data_ptr<std::int64_t>(), values.data(), static_cast<std::size_t>(n) * sizeof(std::int64_t));
  auto on_device = s.pinned.narrow(0, 0, n).view({rows, cols}).to(device_, /*non_blocking=*/true);
  const c10::impl::VirtualGuardImpl guard(device_.type());
  s.copied.record(guard.getStream(device_));
  return on_device;
}

}  // namespace ddpbench::train
