// Micro-batches to the device: the CPU path copies, the GPU path goes through pinned buffers that
// are reused, with copies that arrive intact although the host rewrites the buffers right after.
#include <gtest/gtest.h>

#include <numeric>

#include "device/device.h"
#include "train/staging.h"

namespace ddpbench::train {
namespace {

std::vector<std::int64_t> iota_from(std::int64_t first, std::size_t n) {
  std::vector<std::int64_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

TEST(MicroBatchStager, OnTheCpuCopiesTheValuesIntoATensorOfTheirOwn) {
  MicroBatchStager stager(at::Device(at::kCPU), 2);
  auto values = iota_from(5, 12);
  const auto t = stager.to_device(values, 3, 4, 0);
  values[0] = -1;  // the tensor must not alias the vector
  EXPECT_EQ(t.sizes(), (std::vector<std::int64_t>{3, 4}));
  EXPECT_EQ(t[0][0].item<std::int64_t>(), 5);
  EXPECT_EQ(t[2][3].item<std::int64_t>(), 16);
  EXPECT_FALSE(stager.pinned_buffer(0).defined());
}

TEST(MicroBatchStager, RefusesValuesThatDoNotFitTheShape) {
  MicroBatchStager stager(at::Device(at::kCPU), 1);
  EXPECT_THROW(stager.to_device(iota_from(0, 11), 3, 4, 0), std::exception);
}

// Labelled gpu (tests/CMakeLists.txt: test suites named Gpu*).
TEST(GpuMicroBatchStager, PinnedBuffersAreReusedAndEveryCopyArrives) {
  const auto runtime = device::runtime_info();
  if (!runtime.cuda_available || runtime.cuda_device_count < 1) GTEST_SKIP() << "no GPU visible: the pinned path runs only on a GPU";
  const at::Device gpu(at::kCUDA, 0);
  MicroBatchStager stager(gpu, 2);
  const void* first_buffer = nullptr;
  std::vector<at::Tensor> staged;
  // Many rounds through the same four slots: a buffer rewritten before its copy ended would show
  // as a tensor holding a later round's values.
  for (int round = 0; round < 50; ++round) {
    for (int slot = 0; slot < 4; ++slot) {
      staged.push_back(stager.to_device(iota_from(1000 * round + 100 * slot, 64 * 512), 64, 512, slot));
      EXPECT_TRUE(stager.pinned_buffer(slot).is_pinned());
    }
    if (round == 0) first_buffer = stager.pinned_buffer(0).data_ptr();
    EXPECT_EQ(stager.pinned_buffer(0).data_ptr(), first_buffer) << "round " << round << ": buffer reallocated";
  }
  for (int round = 0; round < 50; ++round)
    for (int slot = 0; slot < 4; ++slot) {
      const auto& t = staged[static_cast<std::size_t>(4 * round + slot)];
      ASSERT_TRUE(t.is_cuda());
      const auto host = t.cpu();
      EXPECT_EQ(host[0][0].item<std::int64_t>(), 1000 * round + 100 * slot);
      EXPECT_EQ(host[63][511].item<std::int64_t>(), 1000 * round + 100 * slot + 64 * 512 - 1);
    }
}

}  // namespace
}  // namespace ddpbench::train
